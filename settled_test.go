package masterjob_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// lateFirst is a memstore whose first acquisition answers after the trust
// window (the loop lets that lease go). With held, it answers as if the
// lease had been handed to the instance (held by it, not acquired by the
// call): a read that found a lease given to it, answered late. With stale,
// the next check answers with the lock as it stood before the loop's
// release: a check that ran at the store before the release committed
// and answered after it. Any later acquisition is the memstore's.
type lateFirst struct {
	*memstore.Store
	held, stale bool
	mu          sync.Mutex
	calls       int
	late        store.LockState // the lease acquired too late
}

func (s *lateFirst) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	s.mu.Lock()
	s.calls++
	n, late := s.calls, s.late
	s.mu.Unlock()
	switch {
	case n == 1:
		states, err := s.Store.Acquire(ctx, h, locks, ttl)
		time.Sleep(ttl) // after the trust window (tolerance - margin)
		for i, st := range states {
			if st.Acquired {
				s.mu.Lock()
				s.late = st
				s.mu.Unlock()
				states[i].Acquired = !s.held
			}
		}
		return states, err
	case n == 2 && s.stale && late.Lock != "":
		late.Acquired = false // the same lease, seen held by this instance
		return []store.LockState{late}, nil
	}
	return s.Store.Acquire(ctx, h, locks, ttl)
}

func (s *lateFirst) lateToken() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.late.Token
}

// TestLeaseLetGoIsNeverAdopted: a lease this instance released without
// running it (acquired after its trust window) is never adopted, even by a
// read that began before the release committed and still shows it held by
// this instance. Adopting it trusted a lease the store no longer held: a
// chaos run on PostgreSQL (seed 13164769139882999134) saw an instance start
// a job on such a lease, then acquire the freed lock again and start a
// second job of it beside the first.
func TestLeaseLetGoIsNeverAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = "L"
		st := &lateFirst{Store: memstore.New(), stale: true}
		rec := newRecorder(t)
		a := newExec(t, st, "a")
		if err := a.StartMaster(lock, rec.job()); err != nil {
			t.Fatal(err)
		}
		stop := startRun(a)
		defer func() { _ = stop() }()
		time.Sleep(tolerance + 2*checkIntv)
		synctest.Wait()

		late := st.lateToken()
		if late == 0 {
			t.Fatal("the first acquisition took nothing")
		}
		for _, ev := range rec.snapshot() {
			if ev.start && ev.token == late {
				t.Fatalf("a started a job with token %d, the lease it had let go as acquired too late (events %+v)", late, rec.snapshot())
			}
		}
		if got := rec.runningNow()["a"]; got <= late {
			t.Fatalf("a runs token %d; want a lease acquired after token %d was let go", got, late)
		}
	})
}

// newerLease is a memstore that, once armed, ends the named instance's
// lease of lock and gives it a new one in its next check's answer: the
// store holds a newer lease of the instance's for a lock whose job runs.
type newerLease struct {
	*memstore.Store
	mu      sync.Mutex
	lock    string
	armed   bool
	current int64 // the lease the instance runs
	newer   int64
}

func (s *newerLease) arm(lock string, token int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lock, s.current, s.armed = lock, token, true
}

func (s *newerLease) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	states, err := s.Store.Acquire(ctx, h, locks, ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || !s.armed {
		return states, err
	}
	s.armed = false
	if err := s.Store.Release(ctx, h.ID, []store.LeaseRef{{Lock: s.lock, Token: s.current}}); err != nil {
		return nil, err
	}
	again, err := s.Store.Acquire(ctx, h, []string{s.lock}, ttl)
	if err != nil {
		return nil, err
	}
	s.newer = again[0].Token
	return append(states, again...), nil
}

// TestNewerLeaseStopsTheRunningJob: a check whose answer gives this
// instance a newer lease of a lock whose job it runs never starts a second
// job beside the first (the recorder fails on a start while running). The
// store no longer holds the running job's lease: that job stops as lost,
// and the newer lease is adopted only once it has.
func TestNewerLeaseStopsTheRunningJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock, other = "L", "M"
		ms := memstore.New()
		st := &newerLease{Store: ms}
		// b holds other, so that a keeps checking it.
		b := newExec(t, ms, "b")
		if err := b.StartMaster(other, idle()); err != nil {
			t.Fatal(err)
		}
		stopB := startRun(b)
		defer func() { _ = stopB() }()
		synctest.Wait()

		rec := newRecorder(t)
		a := newExec(t, st, "a")
		if err := a.StartMaster(lock, rec.job()); err != nil {
			t.Fatal(err)
		}
		if err := a.StartMaster(other, idle()); err != nil {
			t.Fatal(err)
		}
		stopA := startRun(a)
		defer func() { _ = stopA() }()
		synctest.Wait()
		first := rec.runningNow()["a"]
		if first == 0 || masterOf(t, ms, other) != "b" {
			t.Fatalf("a runs %v of %s, %s's master is %q; want a master of %s, b of %s", rec.runningNow(), lock, other, masterOf(t, ms, other), lock, other)
		}

		st.arm(lock, first)
		time.Sleep(2 * checkIntv)
		synctest.Wait()
		st.mu.Lock()
		newer := st.newer
		st.mu.Unlock()
		if newer == 0 {
			t.Fatal("no check of a's came to give it the newer lease")
		}
		if got := rec.runningNow()["a"]; got != newer {
			t.Fatalf("a runs token %d of %s; want the job of token %d stopped and the newer lease %d adopted (events %+v)",
				got, lock, first, newer, rec.snapshot())
		}
	})
}

// TestLateAdoptionLogged: a lease of this instance's it finds too late to
// trust (read after the trust window it would have had) is let go, not
// run, and says so in the log, as a late acquisition does; the chaos run
// that found the let-go lease adopted had no line of it.
func TestLateAdoptionLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = "L"
		st := &lateFirst{Store: memstore.New(), held: true}
		var logs syncbuf.Buffer
		rec := newRecorder(t)
		a := newExec(t, st, "a", masterjob.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err := a.StartMaster(lock, rec.job()); err != nil {
			t.Fatal(err)
		}
		stop := startRun(a)
		defer func() { _ = stop() }()
		time.Sleep(tolerance + 100*time.Millisecond) // the first check's answer
		synctest.Wait()
		if st.lateToken() == 0 {
			t.Fatal("the first acquisition took nothing")
		}
		for _, ev := range rec.snapshot() {
			if ev.start && ev.token == st.lateToken() {
				t.Fatalf("a started token %d, a lease read after its trust window (events %+v)", ev.token, rec.snapshot())
			}
		}
		lines := linesWith(logs.String(), "too late to trust")
		if len(lines) != 1 || !strings.Contains(lines[0], "leases=1") {
			t.Fatalf("%d lines about the late lease, want 1 naming it:\n%s", len(lines), logs.String())
		}
	})
}
