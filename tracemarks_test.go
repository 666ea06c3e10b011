package masterjob_test

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store/memstore"
)

// checkCounter counts the check round trips an Observer is told of.
type checkCounter struct {
	masterjob.NopObserver
	n *atomic.Int64
}

func (c checkCounter) Check(time.Duration, int, error) { c.n.Add(1) }

// TestEveryCheckIsMarked: each check round trip, whatever its result, is
// marked "check.done" in the trace, which the chaos harness's runner mode
// (no observer there) reads as the end of the runner's last check.
func TestEveryCheckIsMarked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var marks, checks atomic.Int64
		trace.SetSink(func(_ int64, event, _ string) {
			if event == "check.done" {
				marks.Add(1)
			}
		})
		defer trace.SetSink(nil)
		st := memstore.New()
		var stops []func() error
		for _, id := range []string{"a", "b"} {
			e := newExec(t, st, id, masterjob.WithObserver(checkCounter{n: &checks}))
			if err := e.StartMaster("L", idle()); err != nil {
				t.Fatal(err)
			}
			stops = append(stops, startRun(e))
		}
		time.Sleep(4 * checkIntv)
		synctest.Wait()
		for _, stop := range stops {
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if checks.Load() < 4 {
			t.Fatalf("only %d checks in 4 check intervals of a follower", checks.Load())
		}
		if marks.Load() != checks.Load() {
			t.Errorf("%d check.done marks for %d checks", marks.Load(), checks.Load())
		}
	})
}
