package masterjob_test

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// unpushed is a memstore without its Notifier (a store that cannot push,
// or whose subscription is down), Membership kept so that balancing is on.
// Its Store is a locksAsked, which records what instance b asks for.
type unpushed struct {
	store.Store
	store.Membership
}

// TestChecksReadEveryLockWithoutPushes: with balancing on, a check between
// sweeps leaves out the locks others hold until a known time, since the
// store would push their release, and sweeps come once per check
// interval. Without a subscription nothing is pushed, so sweeps must come
// once per heartbeat: otherwise a lock its holder released (a job that
// returned) waits for the next sweep, up to a check interval, while the
// holder keeps the others renewed.
func TestChecksReadEveryLockWithoutPushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		asked := &locksAsked{Store: mem, id: "b"}
		st := &unpushed{Store: asked, Membership: mem}
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

		asked.take()
		time.Sleep(2 * checkIntv)
		synctest.Wait()
		calls := asked.take()
		var full []time.Time // b's checks that asked for every lock of a
		for _, c := range calls {
			if !slices.ContainsFunc(ofA, func(l string) bool { return !slices.Contains(c.locks, l) }) {
				full = append(full, c.at)
			}
		}
		if len(full) < 2 {
			t.Fatalf("b read every lock of a %d times in two check intervals (%d checks in all)", len(full), len(calls))
		}
		var gap time.Duration
		for i := 1; i < len(full); i++ {
			gap = max(gap, full[i].Sub(full[i-1]))
		}
		if gap > 2*heartbeat {
			t.Errorf("b read every lock of a %d times in two check intervals, up to %v apart: a release would wait that long, want at most 2 heartbeats (%v)", len(full), gap, 2*heartbeat)
		}
		t.Logf("%d checks by b, %d of them reading every lock of a, at most %v apart", len(calls), len(full), gap)
	})
}
