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

// TestDueChecksStandForSweeps: a follower whose check read every lock it
// follows (one lock here, read when the master's lease falls due) has
// swept them; a separate sweep a moment later would read the same lock
// again, a round trip per check interval for nothing on an idle cluster.
// So b's checks come only when a's lease falls due: never closer than the
// lease less a heartbeat (a's renewals move the due time by at most that).
func TestDueChecksStandForSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		asked := &locksAsked{Store: mem, id: "b"}
		var stops []func() error
		for _, id := range []string{"a", "b"} {
			e := newExec(t, asked, id)
			_ = e.StartMaster("L", idle())
			stops = append(stops, startRun(e))
			synctest.Wait()
		}
		defer func() {
			for _, s := range stops {
				_ = s()
			}
		}()
		time.Sleep(checkIntv)
		synctest.Wait()
		if m := masterOf(t, asked, "L"); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		asked.take()
		time.Sleep(6 * checkIntv)
		synctest.Wait()
		calls := asked.take()
		if len(calls) < 6 {
			t.Fatalf("b checked %d times in 6 check intervals: it must check at least at every lease's due time", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].at.Sub(calls[i-1].at); gap < tolerance-heartbeat {
				t.Errorf("b checked %v after its previous check (%d checks in 6 check intervals): a sweep right after a check that read every lock", gap, len(calls))
			}
		}
	})
}
