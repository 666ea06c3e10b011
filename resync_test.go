package masterjob_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// lossyPushes is a memstore whose subscription drops every change while
// drop is set, and sends a store.ChangeResync when one is put on resync:
// a backend that lost changes and then says so.
type lossyPushes struct {
	*memstore.Store
	drop   atomic.Bool
	resync chan struct{}
}

func (s *lossyPushes) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	in, err := s.Store.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan store.Change)
	go func() {
		defer close(out)
		for {
			var c store.Change
			select {
			case got, ok := <-in:
				if !ok {
					return
				}
				if s.drop.Load() {
					continue
				}
				c = got
			case <-s.resync:
				c = store.Change{Kind: store.ChangeResync}
			}
			select {
			case out <- c:
			case <-ctx.Done():
				for range in { // until the store closes it
				}
				return
			}
		}
	}()
	return out, nil
}

// TestResyncReadsEveryLockAgain: when the store announces that it lost
// changes (store.ChangeResync), a follower reads its locks again at once,
// so that a release it was not told of is taken then, not at its next
// check, up to a check interval later.
func TestResyncReadsEveryLockAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &lossyPushes{Store: memstore.New(), resync: make(chan struct{})}
		const lock = "L"
		held, err := st.Acquire(context.Background(), store.Holder{ID: "gone"}, []string{lock}, time.Hour)
		if err != nil || !held[0].Acquired {
			t.Fatal(held, err)
		}
		_, stopC := runIdle(t, st, "c", lock)
		defer func() { _ = stopC() }()
		// Past a sweep, the next a whole interval away. The first check
		// comes before the subscription is up, so the next sweep is a
		// heartbeat later, and then one every check interval.
		time.Sleep(heartbeat + 2*checkIntv + checkIntv/10)
		synctest.Wait()

		st.drop.Store(true)
		if err := st.Release(context.Background(), "gone", []store.LeaseRef{{Lock: lock, Token: held[0].Token}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(checkIntv / 10)
		synctest.Wait()
		if got := masterOf(t, st, lock); got != "" {
			t.Fatalf("master %q: the release's push was to be lost, and the next check is %v away", got, checkIntv)
		}
		st.drop.Store(false)
		t0 := time.Now()
		st.resync <- struct{}{}
		for masterOf(t, st, lock) != "c" {
			if time.Since(t0) > checkIntv/4 {
				t.Fatalf("no master %v after the store announced lost changes", time.Since(t0))
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestResyncRenewsAtOnce: a master whose store lost the push of a disable
// of its lock, and then announced the loss, renews at once and stops the
// job then, not at its next heartbeat.
func TestResyncRenewsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &lossyPushes{Store: memstore.New(), resync: make(chan struct{})}
		const lock = "L"
		c := newExec(t, st, "c")
		stopped := make(chan struct{})
		if err := c.StartMaster(lock, masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			close(stopped)
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		stopC := startRun(c)
		defer func() { _ = stopC() }()
		time.Sleep(heartbeat / 10)
		synctest.Wait()
		if got := masterOf(t, st, lock); got != "c" {
			t.Fatalf("master %q, want c", got)
		}
		time.Sleep(heartbeat / 10) // just after a renewal: the next is a heartbeat away
		synctest.Wait()

		st.drop.Store(true)
		if _, err := st.Disable(context.Background(), lock, "test", "ops"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		select {
		case <-stopped:
			t.Fatal("the job stopped: the disable's push was to be lost")
		default:
		}
		st.drop.Store(false)
		t0 := time.Now()
		st.resync <- struct{}{}
		select {
		case <-stopped:
		case <-time.After(heartbeat / 4):
			t.Fatalf("the job still runs %v after the store announced lost changes", time.Since(t0))
		}
	})
}
