package masterjob_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// A lock handed back at once to the instance that just handed it off: the
// holdoff that keeps that instance from taking the lock back does not
// keep it from taking a lock reserved for it. Before the fix the
// reservation lapsed unused and a third instance took the lock.
func TestHandoffBackToRecentMaster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		rec := newRecorder(t)
		var stops []func() error
		defer func() {
			for _, s := range stops {
				_ = s()
			}
		}()
		execs := map[string]*masterjob.Executor{}
		for _, id := range []string{"a", "b", "c"} {
			e := newExec(t, st, id, masterjob.WithBalance(masterjob.BalanceConfig{Off: true}))
			_ = e.StartMaster("JOB", rec.job())
			execs[id] = e
			stops = append(stops, startRun(e))
			synctest.Wait()
		}
		if m := masterOf(t, st, "JOB"); m != "a" {
			t.Fatalf("precondition: master %q", m)
		}
		if _, err := execs["c"].Handoff(context.Background(), "JOB", "b"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if m := masterOf(t, st, "JOB"); m != "b" {
			t.Fatalf("after the hand-off to b: master %q", m)
		}
		// Back to a, well within a's holdoff (a check interval).
		time.Sleep(10 * time.Millisecond)
		asked := time.Now()
		if _, err := execs["c"].Handoff(context.Background(), "JOB", "a"); err != nil {
			t.Fatal(err)
		}
		for synctest.Wait(); masterOf(t, st, "JOB") != "a"; synctest.Wait() {
			if time.Since(asked) > 2*heartbeat {
				t.Fatalf("%v after the hand-off back to a: master %q", time.Since(asked), masterOf(t, st, "JOB"))
			}
			time.Sleep(time.Millisecond)
		}
		if took := time.Since(asked); took > 100*time.Millisecond {
			t.Errorf("a took the lock handed back to it after %v, want at once", took)
		}
	})
}
