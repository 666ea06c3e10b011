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

func TestReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &switchable{Store: st}
		e := newExec(t, view, "a")
		if err := e.Ready(); !errors.Is(err, masterjob.ErrNotRunning) {
			t.Fatalf("before Run: %v", err)
		}
		stuck := make(chan struct{})
		_ = e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			<-stuck // ignores its context
			return nil
		}))
		stop := startRun(e)
		synctest.Wait()
		if err := e.Ready(); err != nil {
			t.Fatalf("running master: %v", err)
		}
		view.cut(true)
		time.Sleep(heartbeat + time.Millisecond)
		synctest.Wait()
		if err := e.Ready(); !errors.Is(err, masterjob.ErrStoreUnreachable) {
			t.Fatalf("store cut: %v", err)
		}
		time.Sleep(tolerance) // demoted, but the job does not stop
		synctest.Wait()
		if err := e.Ready(); !errors.Is(err, masterjob.ErrPastTrustWindow) {
			t.Fatalf("job past its window: %v", err)
		}
		view.cut(false)
		time.Sleep(checkIntv)
		synctest.Wait()
		if err := e.Ready(); !errors.Is(err, masterjob.ErrPastTrustWindow) {
			t.Fatalf("store back, job still past its window: %v", err)
		}
		close(stuck)
		synctest.Wait()
		time.Sleep(checkIntv)
		synctest.Wait()
		if err := e.Ready(); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
		_ = stop()
		if err := e.Ready(); !errors.Is(err, masterjob.ErrNotRunning) {
			t.Fatalf("after Run: %v", err)
		}
	})
}

type countingObserver struct {
	masterjob.NopObserver
	mu sync.Mutex
	n  map[masterjob.TransitionKind]int
}

func (c *countingObserver) Transition(t masterjob.Transition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[masterjob.TransitionKind]int{}
	}
	c.n[t.Kind]++
}

func TestObserversFanOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := &countingObserver{}, &countingObserver{}
		e := newExec(t, memstore.New(), "a", masterjob.WithObserver(masterjob.Observers(a, b)))
		_ = e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			return nil
		}))
		stop := startRun(e)
		synctest.Wait()
		_ = stop()
		for _, o := range []*countingObserver{a, b} {
			if o.n[masterjob.Acquired] != 1 || o.n[masterjob.Released] != 1 {
				t.Fatalf("observer saw %v, want one acquired and one released", o.n)
			}
		}
	})
}
