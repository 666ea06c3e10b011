package masterjob_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// The store's clock decides: an instance whose wall clock is far off the
// store's (here the store runs an hour ahead of or behind every instance)
// elects, renews and fails over exactly as if the clocks agreed. The
// executor reads only remaining TTLs from the store and measures elapsed
// time on its own monotonic clock; code that compared store timestamps with
// the local wall clock would take over at once or an hour late here.
func TestInstanceWallClockSkewChangesNothing(t *testing.T) {
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := memstore.New(memstore.WithClock(func() time.Time { return time.Now().Add(skew) }))
				rec := newRecorder(t)
				aView := &switchable{Store: st}
				a := newExec(t, aView, "a")
				_ = a.StartMaster("JOB", rec.job())
				stopA := startRun(a)
				synctest.Wait()
				b := newExec(t, hidden{st}, "b", masterjob.WithCheckMasterInterval(time.Hour))
				_ = b.StartMaster("JOB", rec.job())
				stopB := startRun(b)
				time.Sleep(5 * heartbeat)
				synctest.Wait()
				if run := rec.runningNow(); len(run) != 1 || run["a"] == 0 {
					t.Fatalf("with the store %v off: running %v, want a alone", skew, run)
				}
				aView.cut(true) // a is cut off: it must demote itself, b takes over at expiry
				lastRenewal := time.Now()
				aStop, bStart := rec.waitTakeover("a", "b", time.Minute)
				took := bStart.Sub(lastRenewal)
				if aStop.IsZero() || !aStop.Before(bStart) {
					t.Fatalf("a stopped at %v, b started at %v", aStop, bStart)
				}
				// a's last renewal was at most one heartbeat before the cut.
				if took > tolerance || took < tolerance-heartbeat {
					t.Fatalf("b took over %v after the cut, want within (%v, %v]", took, tolerance-heartbeat, tolerance)
				}
				aView.cut(false)
				_ = stopA()
				_ = stopB()
			})
		})
	}
}
