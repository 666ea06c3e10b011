package masterjob_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// A host suspend stops the monotonic clock (CLOCK_MONOTONIC) but not the
// store's: after resume the lease has expired in the store although the
// master's trust window, measured on the monotonic clock, is still open.
// The executor's clock counts suspend time (CLOCK_BOOTTIME on Linux), so
// the master notices at its first wake after resume, not when a renewal
// comes back refused or its stale window closes (issue 7, item 4).
//
// The test simulates a suspend of 10 s: the executor's clock and the
// store's jump ahead of the bubble's time.Now, while Go timers, which run
// on the monotonic clock, do not; after resume the store is out of reach
// for a while, as a network coming back would be.
func TestHostSuspendClosesTheTrustWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var suspended atomic.Int64
		clock := func() time.Time { return time.Now().Add(time.Duration(suspended.Load())) }
		st := memstore.New(memstore.WithClock(clock))
		view := &switchable{Store: st}
		var (
			mu      sync.Mutex
			stopped time.Time
			cause   error
		)
		a := newExec(t, view, "a", masterjob.WithClock(clock))
		_ = a.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			<-ctx.Done()
			mu.Lock()
			stopped, cause = time.Now(), context.Cause(ctx)
			mu.Unlock()
			return nil
		}))
		stop := startRun(a)
		synctest.Wait()
		if len(a.Masters()) != 1 {
			t.Fatal("precondition: a is not master")
		}
		time.Sleep(heartbeat / 2)
		// Suspend for 10 s, then resume with the store out of reach.
		suspended.Store(int64(10 * time.Second))
		view.cut(true)
		resumed := time.Now()
		time.Sleep(tolerance)
		synctest.Wait()
		mu.Lock()
		at, why := stopped, cause
		mu.Unlock()
		if at.IsZero() {
			t.Fatalf("job still running %v after resume, its lease expired in the store before", time.Since(resumed))
		}
		if took := at.Sub(resumed); took > heartbeat {
			t.Fatalf("job stopped %v after resume, want at the first wake (within a heartbeat, %v): the suspend was not counted", took, heartbeat)
		}
		if !errors.Is(why, masterjob.ErrLeaseExpired) {
			t.Fatalf("cause %v, want ErrLeaseExpired", why)
		}
		view.cut(false)
		_ = stop()
	})
}
