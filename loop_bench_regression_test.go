package masterjob_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// Found by the SIGSTOP benchmark (bench, SigStop, trial 2): a master that
// demoted itself (here: it lost the store; in the benchmark: SIGSTOP longer
// than the lease) becomes a follower that does not check again until a full
// CheckMasterInterval has passed, so it never learns when the new master's
// lease expires. When the new master then dies, the ex-master takes over a
// check interval late instead of at the lease's expiry (promise 4).
func TestDemotedMasterFollowsNewLeaseExpiry_BenchRegression(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const check = 30 * time.Second
		st := memstore.New()
		aView, bView := &switchable{Store: st}, &switchable{Store: st}
		rec := newRecorder(t)
		a := newExec(t, aView, "a", masterjob.WithCheckMasterInterval(check))
		b := newExec(t, bView, "b", masterjob.WithCheckMasterInterval(check))
		_ = a.StartMaster("JOB", rec.job())
		stopA := startRun(a)
		var stopB func() error
		t.Cleanup(func() {
			aView.cut(false)
			bView.cut(false)
			_ = stopA()
			if stopB != nil {
				_ = stopB()
			}
		})
		synctest.Wait()
		if rec.runningNow()["a"] == 0 {
			t.Fatal("precondition: a is not master")
		}
		_ = b.StartMaster("JOB", rec.job())
		stopB = startRun(b)
		time.Sleep(heartbeat)
		synctest.Wait()

		// a loses the store: it demotes itself and b takes over when a's
		// lease expires. Then a is healthy again, a follower of b.
		aView.cut(true)
		for i := 0; rec.runningNow()["b"] == 0; i++ {
			if i > 100 {
				t.Fatalf("precondition: b did not take over: %+v", rec.snapshot())
			}
			time.Sleep(100 * time.Millisecond)
		}
		aView.cut(false)
		time.Sleep(2 * heartbeat)
		synctest.Wait()

		// b dies (it can no longer reach the store, as after a crash). a is
		// the only healthy instance: it must be master again within the
		// lease after b's last renewal, not a check interval later.
		bView.cut(true)
		synctest.Wait()
		expires := lockState(t, st, "JOB").ExpiresAt
		time.Sleep(tolerance + time.Second)
		synctest.Wait()
		var aStart time.Time
		for _, ev := range rec.snapshot() {
			if ev.instance == "a" && ev.start && ev.at.After(expires.Add(-tolerance)) {
				aStart = ev.at
			}
		}
		if aStart.IsZero() {
			t.Fatalf("a did not take over within %v of b's lease expiry (at %v): %+v",
				time.Second, expires, rec.snapshot())
		}
		if d := aStart.Sub(expires); d > 100*time.Millisecond {
			t.Fatalf("a took over %v after b's lease expired, want within 100ms", d)
		}
	})
}
