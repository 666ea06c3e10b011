package masterjob_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// unpushed is a memstore without its Notifier (a store that cannot push,
// or whose subscription is down), Membership kept so that balancing is on.
// It records the locks each instance's Acquire calls ask for.
type unpushed struct {
	store.Store
	store.Membership
	mu   sync.Mutex
	asks map[string][][]string
}

func (s *unpushed) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	s.mu.Lock()
	s.asks[h.ID] = append(s.asks[h.ID], slices.Clone(locks))
	s.mu.Unlock()
	return s.Store.Acquire(ctx, h, locks, ttl)
}

// TestChecksReadEveryLockWithoutPushes: with balancing on, a check between
// sweeps leaves out the locks others hold until a known time, since the
// store would push their release. Without a subscription nothing is
// pushed, so every check must read every lock: otherwise a lock its holder
// released (a job that returned) waits for the next sweep, up to a check
// interval, instead of the next check (within a lease).
func TestChecksReadEveryLockWithoutPushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		st := &unpushed{Store: mem, Membership: mem, asks: map[string][][]string{}}
		if _, ok := store.Store(st).(store.Notifier); ok {
			t.Fatal("the wrapper must hide the Notifier")
		}
		locks := lockNames(4)
		var stops []func() error
		for _, id := range []string{"a", "b"} {
			e := newExec(t, st, id)
			for _, l := range locks {
				_ = e.StartMaster(l, idle())
			}
			stops = append(stops, startRun(e))
			synctest.Wait()
		}
		defer func() {
			for _, s := range stops {
				_ = s()
			}
		}()
		time.Sleep(6 * checkIntv)
		synctest.Wait()
		got := heldBy(t, st, locks)
		if got["a"] != 2 || got["b"] != 2 {
			t.Fatalf("not balanced after 6 check intervals: %v", got)
		}
		var ofA []string
		for _, l := range locks {
			if masterOf(t, st, l) == "a" {
				ofA = append(ofA, l)
			}
		}

		st.mu.Lock()
		clear(st.asks)
		st.mu.Unlock()
		time.Sleep(2 * checkIntv)
		synctest.Wait()
		st.mu.Lock()
		defer st.mu.Unlock()
		calls := st.asks["b"]
		if len(calls) < 4 {
			t.Fatalf("b made %d checks in two check intervals; the test needs checks between sweeps", len(calls))
		}
		short := 0
		for _, asked := range calls {
			for _, l := range ofA {
				if !slices.Contains(asked, l) {
					short++
					t.Errorf("b's check asked for %v, leaving out %s, which a holds: its release would not be seen until the next sweep", asked, l)
					break
				}
			}
		}
		t.Logf("b made %d checks in two check intervals, %d without every lock of a", len(calls), short)
	})
}
