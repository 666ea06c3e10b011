package masterjob_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// TestShutdownHandsToALivePeer: a member that left is pushed by the store
// (store.ChangeMember), and the balancer reads the member list again at
// once, so that a graceful shutdown right after it hands its lock to a
// peer that is still there. Before, the list was read once per check
// interval: the shutdown reserved the lock for the peer that had left, and
// the others waited for the reservation to lapse (a heartbeat here; on
// etcd, whose leases last at least 2 s, 2 to 2.5 s: seen in the handoff
// benchmark).
func TestShutdownHandsToALivePeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		stops := map[string]func() error{}
		start := func(id string) { _, stops[id] = runIdle(t, st, id, lock) }
		start("a")
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		start("b")
		start("c")
		// Every balancer has read the list with a, b and c (they read it
		// 100 ms after their start, then every check interval); the next
		// reads are due in about 4 s.
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		// b leaves; a shuts down soon after, well within a check interval.
		if err := stops["b"](); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		t0 := time.Now()
		if err := stops["a"](); err != nil {
			t.Fatal(err)
		}
		for masterOf(t, st, lock) != "c" {
			if time.Since(t0) > 3*heartbeat {
				t.Fatalf("no new master %v after a's shutdown (master %q)", time.Since(t0), masterOf(t, st, lock))
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The reservation, if it named b, lasts a heartbeat (1s).
		if took := time.Since(t0); took >= heartbeat/2 {
			t.Errorf("c became master %v after a's shutdown: the lock waited for a reservation for b, who had left", took)
		}
		_ = stops["c"]()
	})
}

// frozen is a store handle whose calls hang while frozen (switchable's
// hang), as those of a process that stopped (SIGSTOP, a dead VM), and that
// keeps the member list of the memstore it wraps: its member record is not
// written again but lives on until its TTL.
type frozen struct {
	*memstore.Store
	sw *switchable
}

func newFrozen(st *memstore.Store) *frozen { return &frozen{st, &switchable{Store: st}} }

func (f *frozen) freeze(v bool) { f.sw.hang(v) }

func (f *frozen) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	return f.sw.Acquire(ctx, h, locks, ttl)
}

func (f *frozen) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	return f.sw.Renew(ctx, id, refs, ttl)
}

// TestShutdownSkipsAPeerThatStoppedWriting: a peer whose member record has
// not been written for longer than a check interval and a heartbeat (it
// froze or died without leaving) is not named the successor of a graceful
// shutdown. Before, the shutdown reserved the lock for it (the lowest id
// among peers holding nothing) and the live peer waited for the
// reservation to lapse (the tolerance, 3 s here; found by the chaos
// runner test, where a SIGKILLed runner was named).
func TestShutdownSkipsAPeerThatStoppedWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		_, stopA := runIdle(t, st, "a", lock)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		fb := newFrozen(st)
		b := newExec(t, fb, "b")
		c := newExec(t, st, "c")
		for _, e := range []*masterjob.Executor{b, c} {
			if err := e.StartMaster(lock, idle()); err != nil {
				t.Fatal(err)
			}
		}
		stopB, stopC := startRun(b), startRun(c)
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		// b stops writing; a's balancer reads the list (every check
		// interval) while b's record is still there.
		fb.freeze(true)
		time.Sleep(checkIntv + 2*heartbeat)
		synctest.Wait()
		t0 := time.Now()
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		for masterOf(t, st, lock) != "c" {
			if time.Since(t0) > 2*tolerance {
				t.Fatalf("no new master %v after a's shutdown (master %q)", time.Since(t0), masterOf(t, st, lock))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if took := time.Since(t0); took >= heartbeat/2 {
			t.Errorf("c became master %v after a's shutdown: the lock waited for a reservation for b, which had stopped writing", took)
		}
		fb.freeze(false)
		_ = stopC()
		_ = stopB()
	})
}

// A graceful shutdown names its successor when it begins, and releases
// once its job has stopped. If the named peer shut down in between (its
// member record deleted), the release reserves nothing: another live peer
// takes the lock at once instead of waiting for a reservation held by an
// instance that is gone. Found by the CLI's handoff test, where a runner
// SIGTERMed 26ms after its predecessor exited named that predecessor, and
// 6 of 20 handoffs took a whole lease.
func TestShutdownSkipsASuccessorThatLeftMeanwhile(t *testing.T) {
	testSuccessorLeft(t, 500*time.Millisecond, false)
}

// The same when the named peer left just before the shutdown and the job
// stops at once: the balancer reads pushed member changes at most every
// 100ms, so the list the shutdown named from is still the old one when
// the release is checked, unless the shutdown has it read again at once.
func TestShutdownSkipsASuccessorThatLeftJustBefore(t *testing.T) {
	testSuccessorLeft(t, 20*time.Millisecond, true)
}

// testSuccessorLeft: a is master, its job taking stopTakes to stop; b and
// c follow, and b (which sorts first, so a's shutdown names it) shuts
// down 1ms before a (before) or while a's job stops. c must be master
// within stopTakes and half a heartbeat of the later of the two.
func testSuccessorLeft(t *testing.T, stopTakes time.Duration, before bool) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		a := newExec(t, st, "a")
		job := masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			time.Sleep(stopTakes)
			return nil
		})
		if err := a.StartMaster(lock, job); err != nil {
			t.Fatal(err)
		}
		stopA := startRun(a)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		b := newExec(t, st, "b")
		c := newExec(t, st, "c")
		for _, e := range []*masterjob.Executor{b, c} {
			if err := e.StartMaster(lock, idle()); err != nil {
				t.Fatal(err)
			}
		}
		stopB, stopC := startRun(b), startRun(c)
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		doneA := make(chan error, 1)
		if before {
			if err := stopB(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
			go func() { doneA <- stopA() }()
		} else {
			go func() { doneA <- stopA() }()
			synctest.Wait() // a named its successor and is stopping its job
			if err := stopB(); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Now()
		for masterOf(t, st, lock) != "c" {
			if time.Since(t0) > 2*tolerance {
				t.Fatalf("no new master %v after b left and a shut down (master %q)", time.Since(t0), masterOf(t, st, lock))
			}
			time.Sleep(5 * time.Millisecond)
		}
		if took := time.Since(t0); took >= stopTakes+heartbeat/2 {
			t.Errorf("c became master %v after b left and a shut down, a's job taking %v to stop: the lock waited for a reservation for b", took, stopTakes)
		}
		if err := <-doneA; err != nil {
			t.Fatal(err)
		}
		_ = stopC()
	})
}

// takesCounted is a memstore that counts, per lock, the acquisitions that
// took it and the transfers that gave it (a move either way).
type takesCounted struct {
	*memstore.Store
	mu        sync.Mutex
	takes     map[string]int
	transfers int // Transfer calls
}

func (s *takesCounted) Transfer(ctx context.Context, id string, leases []store.LeaseRef, ttl time.Duration) error {
	s.mu.Lock()
	s.transfers++
	s.mu.Unlock()
	err := s.Store.Transfer(ctx, id, leases, ttl)
	if err != nil {
		return err
	}
	for _, r := range leases {
		if st, err := s.Store.Locks(ctx, r.Lock); err == nil && r.Successor != "" && st[0].Holder == r.Successor {
			s.mu.Lock()
			s.takes[r.Lock]++
			s.mu.Unlock()
		}
	}
	return nil
}

func (s *takesCounted) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	res, err := s.Store.Acquire(ctx, h, locks, ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range res {
		if st.Acquired && st.Holder == h.ID {
			s.takes[st.Lock]++
		}
	}
	return res, err
}

// TestBalanceMovesEachLockOnceWhenInstancesStartTogether: instances that
// start within moments of each other (two at once, then two more 300 ms
// apart) join the member list one by one, as their first calls commit,
// and the store pushes each join. Balancing
// waits for the list to hold still for a check interval before it moves
// anything, so each lock moves at most once from the instance that took
// them all. Before, two rounds 100 ms apart with the same two members
// counted as settled: the first instance gave half its locks to the
// second, which passed most of them on a round later.
func TestBalanceMovesEachLockOnceWhenInstancesStartTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &takesCounted{Store: memstore.New(), takes: map[string]int{}}
		locks := lockNames(40)
		var stops []func() error
		for i, id := range []string{"a", "b", "c", "d"} {
			if i > 1 { // a and b together, then c and d
				time.Sleep(300 * time.Millisecond)
			}
			e := newExec(t, st, id)
			for _, l := range locks {
				_ = e.StartMaster(l, idle())
			}
			stops = append(stops, startRun(e))
			synctest.Wait()
		}
		time.Sleep(6 * checkIntv)
		synctest.Wait()
		got := heldBy(t, st, locks)
		for _, id := range []string{"a", "b", "c", "d"} {
			if got[id] > 11 { // share ceil(40/4) = 10, slack 1
				t.Errorf("%s holds %d, want at most 11: %v", id, got[id], got)
			}
		}
		st.mu.Lock()
		for _, l := range locks {
			if n := st.takes[l]; n > 2 {
				t.Errorf("%s was taken %d times: it moved more than once", l, n)
			}
		}
		// Balancing moves release reserved for the receiver, never give
		// (loop.onJobExit): given locks overshot the receivers' shares.
		if st.transfers != 0 {
			t.Errorf("balancing made %d Transfer calls; want 0 (moves are reserved releases)", st.transfers)
		}
		st.mu.Unlock()
		for _, s := range stops {
			_ = s()
		}
	})
}

// membersCounted is a memstore handle that counts its Members calls.
type membersCounted struct {
	*memstore.Store
	n atomic.Int64
}

func (s *membersCounted) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	s.n.Add(1)
	return s.Store.Members(ctx, f)
}

// A shutdown that names its successors reads the member list again only
// when a push says it may have changed since the balancer's last read: on
// a quiet cluster the hand-off costs no extra read (a store round trip,
// and the host's CPU, while the successor starts). When a peer left just
// before, the list is read again (TestShutdownSkipsASuccessorThatLeftJustBefore).
func TestShutdownReadsTheMembersOnlyAfterAChange(t *testing.T) {
	testShutdownMemberReads(t, true)
}

// Without a subscription nothing says the list is current: the shutdown
// reads it again.
func TestShutdownReadsTheMembersWhenNotPushed(t *testing.T) {
	testShutdownMemberReads(t, false)
}

// unsubscribed is a membersCounted whose subscriptions fail.
type unsubscribed struct{ *membersCounted }

func (unsubscribed) Subscribe(context.Context) (<-chan store.Change, error) {
	return nil, errors.New("no notifications here")
}

// testShutdownMemberReads: a is master, b follows; nothing changes; a shuts
// down. a's shutdown must read the member list again exactly when its
// store does not push (pushed false).
func testShutdownMemberReads(t *testing.T, pushed bool) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		aSt := &membersCounted{Store: st}
		var aView store.Store = aSt
		if !pushed {
			aView = unsubscribed{aSt}
		}
		a := newExec(t, aView, "a")
		if err := a.StartMaster(lock, idle()); err != nil {
			t.Fatal(err)
		}
		stopA := startRun(a)
		synctest.Wait()
		b := newExec(t, st, "b")
		if err := b.StartMaster(lock, idle()); err != nil {
			t.Fatal(err)
		}
		stopB := startRun(b)
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		before := aSt.n.Load()
		if before == 0 {
			t.Fatal("a's balancer never read the member list")
		}
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		got := aSt.n.Load() - before
		switch {
		case pushed && got != 0:
			t.Errorf("a's shutdown read the member list %d times; nothing had changed since its last read", got)
		case !pushed && got == 0:
			t.Errorf("a's shutdown did not read the member list again, with no push to say it was current")
		}
		if m := masterOf(t, st, lock); m != "b" {
			t.Errorf("master %q right after a's shutdown, want b (handed over)", m)
		}
		_ = stopB()
	})
}

// TestShutdownSkipsASuccessorThatLeftDuringARead: b leaves while a's
// balancer is reading the member list, after the store answered that read
// (its list still shows b). The push of b's leave, which a receives
// during the read, makes the list not current: a's shutdown right after
// has it read again at once, and the release gives the lock to c, not to b
// who is gone. A list counted as current from the end of its read instead
// of its start would be trusted here: the lock would wait for a
// reservation held for b.
func TestShutdownSkipsASuccessorThatLeftDuringARead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		const stopTakes = 20 * time.Millisecond
		aSt := &membersGated{Store: st}
		a := newExec(t, aSt, "a")
		job := masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			time.Sleep(stopTakes)
			return nil
		})
		if err := a.StartMaster(lock, job); err != nil {
			t.Fatal(err)
		}
		stopA := startRun(a)
		synctest.Wait()
		b := newExec(t, st, "b")
		c := newExec(t, st, "c")
		for _, e := range []*masterjob.Executor{b, c} {
			if err := e.StartMaster(lock, idle()); err != nil {
				t.Fatal(err)
			}
		}
		stopB, stopC := startRun(b), startRun(c)
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}

		release := aSt.holdNext()
		t0 := time.Now()
		for !aSt.holding() {
			if time.Since(t0) > 2*checkIntv {
				t.Fatal("a's balancer did not read the member list again")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := stopB(); err != nil { // pushed to a while its read is held
			t.Fatal(err)
		}
		synctest.Wait()
		release()
		synctest.Wait() // the list read before b left is a's view now

		doneA := make(chan error, 1)
		go func() { doneA <- stopA() }()
		t0 = time.Now()
		for masterOf(t, st, lock) != "c" {
			if time.Since(t0) > 2*tolerance {
				t.Fatalf("no new master %v after a's shutdown (master %q)", time.Since(t0), masterOf(t, st, lock))
			}
			time.Sleep(5 * time.Millisecond)
		}
		if took := time.Since(t0); took >= stopTakes+heartbeat/2 {
			t.Errorf("c became master %v after a's shutdown, a's job taking %v to stop: the lock waited for a reservation for b, who left during a's read of the member list", took, stopTakes)
		}
		if err := <-doneA; err != nil {
			t.Fatal(err)
		}
		_ = stopC()
	})
}

// membersGated is a memstore handle whose next Members call, once
// holdNext is called, takes the store's answer and then waits, as a read
// whose reply is on the wire.
type membersGated struct {
	*memstore.Store
	mu   sync.Mutex
	gate chan struct{} // the next read waits on it (nil: none)
	held bool          // a read is waiting
}

// holdNext holds the next Members call; release lets it return.
func (s *membersGated) holdNext() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := make(chan struct{})
	s.gate = g
	return func() { close(g) }
}

func (s *membersGated) holding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

func (s *membersGated) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	ms, err := s.Store.Members(ctx, f)
	s.mu.Lock()
	g := s.gate
	s.gate, s.held = nil, g != nil
	s.mu.Unlock()
	if g != nil {
		<-g
		s.mu.Lock()
		s.held = false
		s.mu.Unlock()
	}
	return ms, err
}

// transfersSeen is a memstore that records the successors named in
// Transfer calls and signals each read of the member list.
type transfersSeen struct {
	*memstore.Store
	reads chan struct{}
	mu    sync.Mutex
	given []string
}

func (s *transfersSeen) Transfer(ctx context.Context, id string, leases []store.LeaseRef, ttl time.Duration) error {
	s.mu.Lock()
	for _, r := range leases {
		s.given = append(s.given, r.Successor)
	}
	s.mu.Unlock()
	return s.Store.Transfer(ctx, id, leases, ttl)
}

func (s *transfersSeen) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	m, err := s.Store.Members(ctx, f)
	select {
	case s.reads <- struct{}{}:
	default:
	}
	return m, err
}

// TestShutdownNamesAFollowerReadLongAgo: a live follower writes its member
// record once per period (its checks) and the master's balancer reads the
// list once per check interval, so between two reads the record as last
// read can be older than a check interval and a heartbeat although it was
// on time when read. The shutdown still names that follower, reads the
// list again, and gives it the lease in the releasing commit. Before, such
// a follower counted as dead: the shutdown named nobody and released the
// lock to whoever asked first, and members disagreed on who was first in
// line (TestFirstInLineAgreesBetweenReads).
func TestShutdownNamesAFollowerReadLongAgo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &transfersSeen{Store: memstore.New(), reads: make(chan struct{}, 1)}
		const lock = "L"
		a := newExec(t, st, "a")
		job := masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond)
			return nil
		})
		if err := a.StartMaster(lock, job); err != nil {
			t.Fatal(err)
		}
		stopA := startRun(a)
		// b, a follower played by the test, writes its record 50 ms
		// after each of a's reads of the list: each read finds it written
		// a check interval less 50 ms before, on time.
		ctx := context.Background()
		locks := []string{lock}
		writeB := func() {
			st.Announce(store.Member{ID: "b", Locks: locks, LockCount: 1, LockSetID: masterjob.LockSetID(locks)}, 2*(checkIntv+tolerance))
			if _, err := st.Acquire(ctx, store.Holder{ID: "b"}, nil, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		writeB()
		for range 3 {
			<-st.reads
			time.Sleep(50 * time.Millisecond)
			writeB()
		}
		// 1.5 s after a's last read, b's record as read is 6.45 s old:
		// more than a check interval and a heartbeat, although b wrote
		// it again since.
		time.Sleep(1450 * time.Millisecond)
		synctest.Wait()
		if m := masterOf(t, st, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if !slices.Equal(st.given, []string{"b"}) {
			t.Errorf("a's shutdown gave the lease to %q; want b, a live follower", st.given)
		}
	})
}
