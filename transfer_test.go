package masterjob_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// gatedReads is a memstore whose Locks calls wait until the test opens
// the gate, so that a test can hold a successor between the push of a
// lease transferred to it and the read that confirms it.
type gatedReads struct {
	*memstore.Store
	mu     sync.Mutex
	closed bool
	open   chan struct{}
}

func newGatedReads(ms *memstore.Store) *gatedReads {
	return &gatedReads{Store: ms, open: make(chan struct{})}
}

// shut makes later reads wait; let opens the gate for every read.
func (g *gatedReads) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed, g.open = true, make(chan struct{})
}

func (g *gatedReads) let() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.closed = false
		close(g.open)
	}
}

func (g *gatedReads) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	g.mu.Lock()
	closed, open := g.closed, g.open
	g.mu.Unlock()
	if closed {
		select {
		case <-open:
		case <-ctx.Done():
			return nil, store.ErrUnavailable
		}
	}
	return g.Store.Locks(ctx, names...)
}

// masterAndGatedFollower starts a, master of lock, and b, following it
// through a gatedReads view of the same memstore (a reads freely), both
// running rec's job, and waits until b is in a's member list. It returns
// b's view, the recorder, and the function that stops a; b stops when the
// test ends.
func masterAndGatedFollower(t *testing.T, lock string) (*gatedReads, *recorder, func() error) {
	t.Helper()
	ms := memstore.New()
	st := newGatedReads(ms)
	rec, stopA := masterAndFollower(t, lock, ms, st)
	return st, rec, stopA
}

// masterAndFollower starts a on aView, master of lock, and b on bView
// (views of one store), both running one recorder's job, and waits until b
// is in a's member list. It returns the recorder and the function that
// stops a; b stops when the test ends.
func masterAndFollower(t *testing.T, lock string, aView, bView store.Store) (*recorder, func() error) {
	t.Helper()
	rec := newRecorder(t)
	a := newExec(t, aView, "a")
	if err := a.StartMaster(lock, rec.job()); err != nil {
		t.Fatal(err)
	}
	stopA := startRun(a)
	synctest.Wait()
	b := newExec(t, bView, "b")
	if err := b.StartMaster(lock, rec.job()); err != nil {
		t.Fatal(err)
	}
	stopB := startRun(b)
	t.Cleanup(func() { _ = stopB() })
	time.Sleep(2*checkIntv + heartbeat/2)
	synctest.Wait()
	return rec, stopA
}

// TestTransferredLeaseStartsOnlyAfterARead: a lease a peer gave this
// instance in its release (store.Transfers) starts its job only once a
// read of the store that began after the transfer shows it, never on the
// push alone: the push says nothing of when the lease began, the read
// bounds it. The job then runs with the transferred token, and no other
// instance runs it meanwhile (the recorder fails on an overlap).
func TestTransferredLeaseStartsOnlyAfterARead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = "L"
		st, rec, stopA := masterAndGatedFollower(t, lock)

		st.shut()
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		held, err := st.Store.Locks(context.Background(), lock)
		if err != nil || held[0].Holder != "b" {
			t.Fatalf("after a's shutdown the store shows %+v (%v); want the lease transferred to b", held, err)
		}
		if running := rec.runningNow(); len(running) != 0 {
			t.Fatalf("jobs running %v before b read its transferred lease; want none", running)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if running := rec.runningNow(); len(running) != 0 {
			t.Fatalf("jobs running %v while b's read waits; want none", running)
		}
		st.let()
		synctest.Wait()
		if got := rec.runningNow()["b"]; got != held[0].Token {
			t.Fatalf("after the read b runs token %d; want the transferred token %d", got, held[0].Token)
		}
	})
}

// TestTransferredLeaseWithDisabledLockNotStarted: a lease that the read
// shows revoked (the lock was disabled between the transfer and the read)
// is released, not started.
func TestTransferredLeaseWithDisabledLockNotStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = "L"
		st, rec, stopA := masterAndGatedFollower(t, lock)

		st.shut()
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, err := st.Disable(context.Background(), lock, "maintenance", "ops"); err != nil {
			t.Fatal(err)
		}
		st.let()
		time.Sleep(heartbeat)
		synctest.Wait()
		for _, ev := range rec.snapshot() {
			if ev.instance == "b" && ev.start {
				t.Fatalf("b started the job of a disabled lock (token %d)", ev.token)
			}
		}
		if got := masterOf(t, st, lock); got != "" {
			t.Fatalf("lock held by %q after b saw it revoked; want released", got)
		}
	})
}

// TestTransferToDeadSuccessorReservesInstead: a successor that is not
// alive in the leaving master's member list is not given the lock (it
// would hold it, without a master, for a whole lease); the release
// reserves it instead, as on a store without transfers.
func TestTransferToDeadSuccessorReservesInstead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		a, stopA := runIdle(t, st, "a", lock)
		defer func() { _ = stopA() }()
		synctest.Wait()
		if _, err := a.Handoff(context.Background(), lock, "nobody"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(heartbeat)
		synctest.Wait()
		s, err := st.Locks(context.Background(), lock)
		if err != nil {
			t.Fatal(err)
		}
		if s[0].Holder == "nobody" || s[0].ReservedFor != "nobody" {
			t.Fatalf("after a hand-off to an unknown instance: %+v; want the lock free and reserved for it", s[0])
		}
	})
}

// leaveAfter is a memstore whose Leave first runs before: a transfer that
// commits after the leaving instance's loops ended, before its Leave.
type leaveAfter struct {
	*memstore.Store
	before func()
}

func (s *leaveAfter) Leave(ctx context.Context, id string) error {
	if s.before != nil {
		s.before()
	}
	return s.Store.Leave(ctx, id)
}

// TestLeaseGivenAsItLeavesIsReleased: a lease a peer gives an instance
// after its loops stopped, before its Leave, is released at the end of
// its Run, not left to expire with the lock without a master.
func TestLeaseGivenAsItLeavesIsReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		const lock = "L"
		held, err := ms.Acquire(context.Background(), store.Holder{ID: "a"}, []string{lock}, time.Hour)
		if err != nil || !held[0].Acquired {
			t.Fatal(held, err)
		}
		st := &leaveAfter{Store: ms}
		_, stopB := runIdle(t, st, "b", lock)
		time.Sleep(2 * checkIntv)
		synctest.Wait()
		st.before = func() {
			ref := store.LeaseRef{Lock: lock, Token: held[0].Token, Successor: "b"}
			if err := ms.Transfer(context.Background(), "a", []store.LeaseRef{ref}, time.Hour); err != nil {
				t.Error(err)
			}
		}
		if err := stopB(); err != nil {
			t.Fatal(err)
		}
		got, err := ms.Locks(context.Background(), lock)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Token == held[0].Token {
			t.Fatalf("the transfer did not happen: %+v", got[0])
		}
		if got[0].Held() {
			t.Fatalf("after b's Run: %+v, want the lease given to b as it left released", got[0])
		}
	})
}

// shortReads is a memstore whose reads report half of each lease's time
// left: a store may report less than the lease has (etcd reports another
// instance's lease in whole seconds, cut down), never more.
type shortReads struct{ *memstore.Store }

func (s shortReads) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	states, err := s.Store.Locks(ctx, names...)
	for i := range states {
		states[i].TTL /= 2
	}
	return states, err
}

// TestTransferredLeaseReadShortKeepsRunning: a successor whose read of
// the given lease reports a TTL whose trust window closes before a
// heartbeat renews it in time and runs on. It once scheduled that
// renewal a heartbeat after the read, after the window closed, so the job
// stopped at once and the lock moved again (seen on etcd).
func TestTransferredLeaseReadShortKeepsRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		rec, stopA := masterAndFollower(t, "L", ms, shortReads{ms})

		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		token := rec.runningNow()["b"]
		if token == 0 {
			t.Fatalf("b runs nothing after a's shutdown (running %v); want the transferred lease", rec.runningNow())
		}
		time.Sleep(3 * tolerance)
		synctest.Wait()
		if got := rec.runningNow()["b"]; got != token {
			t.Fatalf("b runs token %d %v after it adopted token %d; want it still running", got, 3*tolerance, token)
		}
		for _, ev := range rec.snapshot() {
			if ev.instance == "b" && !ev.start {
				t.Fatalf("b's job stopped after the transfer: %+v", ev)
			}
		}
	})
}

// slowReleases is a memstore whose releases and transfers take delay
// before they commit (or fail when their context ends first): a starved
// host or store.
type slowReleases struct {
	*memstore.Store
	delay time.Duration
}

func (s slowReleases) wait(ctx context.Context) error {
	select {
	case <-time.After(s.delay):
		return nil
	case <-ctx.Done():
		return store.ErrUnavailable
	}
}

func (s slowReleases) Release(ctx context.Context, holder string, refs []store.LeaseRef) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.Release(ctx, holder, refs)
}

func (s slowReleases) Transfer(ctx context.Context, holder string, refs []store.LeaseRef, ttl time.Duration) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Store.Transfer(ctx, holder, refs, ttl)
}

// TestSlowReleaseStillHandsOver: a release that takes longer than a
// heartbeat (and the safety margin) but ends before the lease would
// expire is waited for, so that the successor takes over at once rather
// than after the lease's expiry. A release bounded by a heartbeat gave
// up, and on a starved host 1 or 2 graceful hand-offs in 20 waited for the
// lease (TestProcessHandoffPostgres).
func TestSlowReleaseStillHandsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = "L"
		ms := memstore.New()
		rec, stopA := masterAndFollower(t, lock, slowReleases{Store: ms, delay: heartbeat + margin}, ms)
		if running := rec.runningNow(); running["a"] == 0 {
			t.Fatalf("running %v; want a master", running)
		}

		stopped := time.Now()
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if running := rec.runningNow(); running["b"] == 0 {
			t.Fatalf("%v after a's stop began (a's release took %v): running %v, want b master at once, not after a's lease expired",
				time.Since(stopped), heartbeat+margin, running)
		}
	})
}

// TestHungReleaseKeepsTheShutdownBound: a release is waited for until the
// lease would expire, but never past the shutdown timeout: Run returns
// within it even when the store never answers the release (design promise
// 6, shutdown bounded).
func TestHungReleaseKeepsTheShutdownBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lock = "L"
		const bound = 1500 * time.Millisecond // under the lease's 3 s
		ms := memstore.New()
		a := newExec(t, slowReleases{Store: ms, delay: time.Hour}, "a", masterjob.WithShutdownTimeout(bound))
		if err := a.StartMaster(lock, idle()); err != nil {
			t.Fatal(err)
		}
		stopA := startRun(a)
		time.Sleep(heartbeat / 2)
		synctest.Wait()
		began := time.Now()
		_ = stopA()
		if took := time.Since(began); took > bound {
			t.Fatalf("Run returned %v after the stop, over the %v shutdown timeout, waiting for a release that never answers", took, bound)
		}
	})
}
