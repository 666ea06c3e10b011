package masterjob_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// A loss while the job is already stopping for a planned reason must reach
// the job: the store said the lease is gone (here an operator deleted the
// record, as a replica failover or a store-side clock step would), another
// instance takes the lock, and the stopping job must stop at once instead of
// at its old expiry (issue 7, item 1).
func TestLossWhileStoppingReachesTheJob(t *testing.T) {
	for _, planned := range []string{"shutdown", "disable"} {
		t.Run(planned, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testLossWhileStopping(t, planned) })
		})
	}
}

func testLossWhileStopping(t *testing.T, planned string) {
	st := memstore.New()
	var (
		mu         sync.Mutex
		stopEnded  time.Time
		stopReason error
		jobCtx     context.Context
	)
	a := newExec(t, st, "a")
	_ = a.StartMaster("JOB", masterjob.StartStop(
		func(ctx context.Context, l masterjob.Lease) error {
			mu.Lock()
			jobCtx = ctx
			mu.Unlock()
			return nil
		},
		func(ctx context.Context, l masterjob.Lease) error {
			<-ctx.Done() // slow to stop: uses all the grace it gets
			mu.Lock()
			stopEnded, stopReason = time.Now(), masterjob.StopReason(ctx)
			mu.Unlock()
			return nil
		}))
	ctxA, cancelA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- a.Run(ctxA) }()
	synctest.Wait()
	if len(a.Masters()) != 1 {
		t.Fatal("precondition: a is not master")
	}
	time.Sleep(heartbeat / 2)
	switch planned {
	case "shutdown":
		cancelA()
	case "disable":
		if _, err := st.Disable(context.Background(), "JOB", "test", "op"); err != nil {
			t.Fatal(err)
		}
	}
	synctest.Wait()
	mu.Lock()
	ctx := jobCtx
	mu.Unlock()
	if ctx.Err() == nil {
		t.Fatal("precondition: the job's context was not cancelled by the planned stop")
	}
	if planned == "disable" {
		// Enable again, so that another instance may take the lock once
		// the record is gone.
		if _, err := st.Enable(context.Background(), "JOB", "op"); err != nil {
			t.Fatal(err)
		}
	}
	oldDeadline, _ := masterjob.StopDeadline(ctx)
	time.Sleep(heartbeat) // a keeps renewing while its job stops
	synctest.Wait()
	if d, _ := masterjob.StopDeadline(ctx); !d.After(oldDeadline) {
		t.Fatalf("precondition: renewals did not extend the stop deadline while stopping (%v, was %v)", d, oldDeadline)
	}
	// The store loses the lease, and another instance takes the lock.
	lostAt := time.Now()
	st.DeleteRecords("JOB")
	b := newExec(t, hidden{st}, "b")
	_ = b.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
		<-ctx.Done()
		return nil
	}))
	stopB := startRun(b)
	synctest.Wait()
	if len(b.Masters()) != 1 {
		t.Fatal("precondition: b did not take the lock after the record was deleted")
	}
	// a learns at its next renewal, within a heartbeat.
	time.Sleep(heartbeat + time.Millisecond)
	synctest.Wait()
	mu.Lock()
	ended, reason := stopEnded, stopReason
	mu.Unlock()
	if ended.IsZero() {
		d, _ := masterjob.StopDeadline(ctx)
		t.Fatalf("a's stop still runs %v after the loss (StopReason %v, StopDeadline in %v): it would run beside b until its old expiry",
			time.Since(lostAt), masterjob.StopReason(ctx), time.Until(d))
	}
	if took := ended.Sub(lostAt); took > heartbeat+time.Millisecond {
		t.Fatalf("a's stop ended %v after the loss, want within a heartbeat (%v)", took, heartbeat)
	}
	if !errors.Is(reason, masterjob.ErrLeaseLost) {
		t.Fatalf("StopReason in stop = %v, want ErrLeaseLost", reason)
	}
	if got := masterjob.StopReason(ctx); !errors.Is(got, masterjob.ErrLeaseLost) {
		t.Fatalf("StopReason(job ctx) = %v, want ErrLeaseLost", got)
	}
	if d, _ := masterjob.StopDeadline(ctx); d.After(time.Now()) {
		t.Fatalf("StopDeadline still %v ahead after the loss", time.Until(d))
	}
	cancelA()
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	_ = stopB()
}
