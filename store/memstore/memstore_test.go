package memstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// historyLimit is the retention of the stores under test: above
// store.MaxEventsLimit, so that the suite checks the cap on Limit too.
const historyLimit = 1200

// TestConformance runs the shared conformance suite. Every subtest gets its
// own store; each Open is a new handle on it (Reopen), so closing one handle
// leaves the data to the others, as reopening a database would.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		ms := memstore.New(memstore.WithHistoryLimit(historyLimit))
		t.Cleanup(func() { _ = ms.Close() })
		return storetest.Harness{
			Open: func(t *testing.T) store.Store { return ms.Reopen() },
			DeleteRecords: func(t *testing.T, locks ...string) {
				ms.DeleteRecords(locks...)
			},
			HistoryLimit: historyLimit,
			Hints:        true,
			ControlHints: true,
		}
	})
}
