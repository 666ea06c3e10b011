package masterjob_test

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// TestShutdownSettlesAfterHandOff: a shutdown that handed its lock to a
// peer leaves the member list, and returns, only HandOffSettle after the
// hand-off, so that its last calls do not compete with the successor's
// start; the successor is master long before that. A shutdown with nobody
// to hand to does not wait.
func TestShutdownSettlesAfterHandOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		_, stopA := runIdle(t, st, "a", lock)
		synctest.Wait()
		_, stopB := runIdle(t, st, "b", lock)
		// Both have read the member list (as TestShutdownHandsToALivePeer).
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		t0 := time.Now()
		done := stopInBackground(t, stopA)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "b" {
			t.Fatalf("master %q right after a's shutdown began, want b", m)
		}
		if !slices.Contains(memberIDs(t, st), "a") {
			t.Error("a left the member list before the settling time")
		}
		<-done
		if returned := time.Since(t0); returned < masterjob.HandOffSettle {
			t.Errorf("a's Run returned %v after its shutdown began, want at least %v after the hand-off", returned, masterjob.HandOffSettle)
		}
		if slices.Contains(memberIDs(t, st), "a") {
			t.Error("a is still a member after Run returned")
		}
		// b, alone once its balancer has read the list again (at least
		// once per check interval), has nobody to hand to: no wait.
		time.Sleep(checkIntv + time.Second)
		synctest.Wait()
		t1 := time.Now()
		if err := stopB(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t1); took >= masterjob.HandOffSettle {
			t.Errorf("b's shutdown, with no successor, took %v", took)
		}
	})
}

// stopInBackground calls stop (a Run's) in a goroutine: a shutdown that
// handed over returns HandOffSettle later, and a test looks at the
// hand-off meanwhile. The channel is closed when stop returned.
func stopInBackground(t *testing.T, stop func() error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	return done
}
