package masterjob_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// callsByInstance counts each instance's Acquire and Renew calls, and
// every instance's Locks reads, on a memstore, keeping its Notifier,
// Membership, Handoffs and Transfers.
type callsByInstance struct {
	*memstore.Store
	mu       sync.Mutex
	acquires map[string]int
	renews   map[string]int
	reads    int
}

func (c *callsByInstance) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Store.Locks(ctx, names...)
}

func newCallsByInstance(ms *memstore.Store) *callsByInstance {
	return &callsByInstance{Store: ms, acquires: map[string]int{}, renews: map[string]int{}}
}

// Acquire counts the calls that ask for locks (a check that only reads
// what was pushed asks for none, and costs no round trip on PostgreSQL).
func (c *callsByInstance) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	c.mu.Lock()
	if len(locks) > 0 {
		c.acquires[h.ID]++
	}
	c.mu.Unlock()
	return c.Store.Acquire(ctx, h, locks, ttl)
}

func (c *callsByInstance) Renew(ctx context.Context, id string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	c.mu.Lock()
	c.renews[id]++
	c.mu.Unlock()
	return c.Store.Renew(ctx, id, leases, ttl)
}

// acquisitions returns id's count of Acquire calls.
func (c *callsByInstance) acquisitions(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acquires[id]
}

// readCount returns the count of Locks reads.
func (c *callsByInstance) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// reset zeroes the counts and returns the ones before.
func (c *callsByInstance) reset() (acquires, renews map[string]int, reads int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acquires, renews, reads = c.acquires, c.renews, c.reads
	c.acquires, c.renews, c.reads = map[string]int{}, map[string]int{}, 0
	return acquires, renews, reads
}

// TestHandoffCallsWithHints: in a graceful hand-off on a store that says
// what its lease pushes are (store.Change's hints) and transfers leases
// (store.Transfers), the leaving master gives the lock to the successor in
// its release, and the successor makes one call, a read of the lease
// pushed to it, before its job starts: no acquisition, no renewal. The
// other follower checks once, on the push of the transfer (an
// acquisition by another), but only after the hand-off's busiest moment
// (takenCheckDelay). A store
// without hints still hands over as quickly, with the calls the hints
// spare.
func TestHandoffCallsWithHints(t *testing.T) {
	for _, hints := range []bool{true, false} {
		name := "hints"
		if !hints {
			name = "no hints"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var opts []memstore.Option
				if !hints {
					opts = append(opts, memstore.WithoutHints())
				}
				st := newCallsByInstance(memstore.New(opts...))
				const lock = "L"
				_, stopA := runIdle(t, st, "a", lock)
				synctest.Wait()
				_, stopB := runIdle(t, st, "b", lock)
				_, stopC := runIdle(t, st, "c", lock)
				defer func() { _, _ = stopB(), stopC() }()
				// Past the members' first reads, then to just after a's
				// heartbeat, so that no scheduled call falls in the
				// hand-off below.
				time.Sleep(2*checkIntv + heartbeat + 10*time.Millisecond)
				synctest.Wait()
				_, _, _ = st.reset()
				t0 := time.Now()
				aDone := stopInBackground(t, stopA) // it returns HandOffSettle later
				synctest.Wait()
				next := masterOf(t, st, lock)
				if took := time.Since(t0); next == "a" || took > 0 {
					t.Fatalf("master %q %v after a's shutdown; want b or c at once", next, took)
				}
				other := map[string]string{"b": "c", "c": "b"}[next]
				time.Sleep(masterjob.TakenCheckDelay - time.Millisecond)
				synctest.Wait()
				if n, reads := st.acquisitions(other), st.readCount(); hints && (n != 0 || reads != 2) {
					t.Errorf("within %v of the hand-off, follower %s made %d acquisitions and %d reads were made; want 0 and 2 (the successor's, this test's; the leaver's comes after its settling time): the follower's check waits",
						masterjob.TakenCheckDelay, other, n, reads)
				}
				<-aDone
				// Up to just before the new master's first heartbeat.
				time.Sleep(heartbeat - masterjob.TakenCheckDelay - 9*time.Millisecond)
				synctest.Wait()
				acquires, renews, reads := st.reset()
				t.Logf("successor %s: %d acquisitions, %d renewals; %s: %d acquisitions; reads: %d", next, acquires[next], renews[next], other, acquires[other], reads)
				if hints {
					// Four reads: the successor's of its lease, the
					// other follower's of the pushed lock, which its check
					// does not ask for (held by another), the leaver's of
					// its locks once it left (releaseGiven), and this
					// test's masterOf. The follower asks for nothing: the
					// push said the lock is the successor's.
					if acquires[next] != 0 || renews[next] != 0 || reads != 4 {
						t.Errorf("successor %s made %d acquisitions and %d renewals in the hand-off, and %d reads were made; want 0, 0 and 4", next, acquires[next], renews[next], reads)
					}
					if acquires[other] != 0 {
						t.Errorf("follower %s made %d acquisitions in the hand-off; want 0 (a read of the lock the push said was taken)", other, acquires[other])
					}
				}
			})
		})
	}
}

// TestReservedForAnotherCheckedAtLapse: a follower that skips a release
// reserved for another instance checks the lock when the reservation
// lapses, so that a successor that never takes it (it died) delays the
// next master by the reservation only.
func TestReservedForAnotherCheckedAtLapse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		held, err := st.Acquire(context.Background(), store.Holder{ID: "gone"}, []string{lock}, time.Hour)
		if err != nil || !held[0].Acquired {
			t.Fatal(held, err)
		}
		_, stopC := runIdle(t, st, "c", lock)
		defer func() { _ = stopC() }()
		time.Sleep(2 * checkIntv)
		synctest.Wait()
		const reserve = tolerance // handoffReserve with the tests' timings
		t0 := time.Now()
		if err := st.Release(context.Background(), "gone", []store.LeaseRef{{Lock: lock, Token: held[0].Token, Successor: "ghost", Reserve: reserve}}); err != nil {
			t.Fatal(err)
		}
		for masterOf(t, st, lock) != "c" {
			if time.Since(t0) > reserve+heartbeat {
				t.Fatalf("no master %v after a release reserved for an instance that never took it (reservation %v)", time.Since(t0), reserve)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if took := time.Since(t0); took < reserve {
			t.Fatalf("c took the lock %v after the release, inside the reservation of %v", took, reserve)
		}
	})
}

// TestInstanceIDValidated: an instance id with a control character (which
// could not travel in a store's push) or over 200 bytes is refused at New.
func TestInstanceIDValidated(t *testing.T) {
	for _, id := range []string{"a\x1eb", "tab\tid", strings.Repeat("x", 201)} {
		_, err := masterjob.New(memstore.New(), masterjob.WithLookupEnv(noEnv), masterjob.WithInstanceID(id))
		if !errors.Is(err, masterjob.ErrInvalidConfig) || !strings.Contains(err.Error(), "WithInstanceID") {
			t.Errorf("New with instance id %q: err = %v, want ErrInvalidConfig naming WithInstanceID", id, err)
		}
	}
	if _, err := masterjob.New(memstore.New(), masterjob.WithLookupEnv(noEnv), masterjob.WithInstanceID("host-1.example-42")); err != nil {
		t.Errorf("New with a plain instance id: %v", err)
	}
}

// TestRevokedHintStopsWithoutARenewal: a Disable's push that says which
// lease it revoked (store.Change.Revoked) stops that lease's job at once,
// with no renewal in between: the job is stopped by the time the push is
// handled, and the master made no Renew call after the Disable. Without
// the hint (WithoutHints) the master renews first, as before.
func TestRevokedHintStopsWithoutARenewal(t *testing.T) {
	for _, hints := range []bool{true, false} {
		name := "hinted"
		if !hints {
			name = "bare"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var opts []memstore.Option
				if !hints {
					opts = append(opts, memstore.WithoutHints())
				}
				ms := memstore.New(opts...)
				st := newCallsByInstance(ms)
				rec := newRecorder(t)
				a := newExec(t, st, "a")
				if err := a.StartMaster("L", rec.job()); err != nil {
					t.Fatal(err)
				}
				stop := startRun(a)
				defer func() { _ = stop() }()
				synctest.Wait()
				if rec.runningNow()["a"] == 0 {
					t.Fatal("a is not master")
				}
				st.reset()
				if _, err := ms.Disable(context.Background(), "L", "maintenance", "ops"); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				_, renews, _ := st.reset()
				if hints {
					if running := rec.runningNow(); len(running) != 0 || renews["a"] != 0 {
						t.Fatalf("after a hinted Disable push: running %v, %d renewals; want stopped with none", running, renews["a"])
					}
					return
				}
				if renews["a"] == 0 {
					t.Fatal("after a bare Disable push the master made no renewal; want one, which tells it of the revocation")
				}
				if running := rec.runningNow(); len(running) != 0 {
					t.Fatalf("after a bare Disable push and the renewal: running %v; want stopped", running)
				}
			})
		})
	}
}

// TestFollowerTakesOverAfterPushedAcquisition: a follower told by a push
// that another instance took the lock (here: the transfer of a graceful
// hand-off) reads it later instead of checking at once; it must still
// check again when that lease falls due, and take over when the new master
// dies without a word (its store cut: no release, no push).
func TestFollowerTakesOverAfterPushedAcquisition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const lock = "L"
		_, stopA := runIdle(t, st, "a", lock)
		synctest.Wait()
		views := map[string]*switchable{"b": {Store: st}, "c": {Store: st}}
		_, stopB := runIdle(t, &membershipOf{views["b"], st}, "b", lock)
		_, stopC := runIdle(t, &membershipOf{views["c"], st}, "c", lock)
		defer func() { _, _ = stopB(), stopC() }()
		time.Sleep(2*checkIntv + heartbeat + 10*time.Millisecond)
		synctest.Wait()
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		next := masterOf(t, st, lock)
		other := map[string]string{"b": "c", "c": "b"}[next]
		if other == "" {
			t.Fatalf("master %q after a's shutdown; want b or c", next)
		}
		time.Sleep(2 * masterjob.TakenCheckDelay)
		synctest.Wait()
		views[next].cut(true) // dies without a word
		t0 := time.Now()
		for masterOf(t, st, lock) != other {
			if time.Since(t0) > tolerance+2*heartbeat {
				t.Fatalf("%s is not master %v after %s was cut off (lease %v); master %q", other, time.Since(t0), next, tolerance, masterOf(t, st, lock))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestDisableCostsTheFollowersNoCheck: the push of a Disable that revoked
// the master's lease says that there is nothing to take. The followers do
// not check the lock on it (a store call each while the master stops its
// job); they check once on the master's release, as on any release.
func TestDisableCostsTheFollowersNoCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := newCallsByInstance(memstore.New())
		const lock = "L"
		var stops []func() error
		var execs []*masterjob.Executor
		for _, id := range []string{"a", "b", "c"} {
			e := newExec(t, calls, id)
			if err := e.StartMaster(lock, idle()); err != nil {
				t.Fatal(err)
			}
			execs = append(execs, e)
			stops = append(stops, startRun(e))
			synctest.Wait()
		}
		time.Sleep(2*checkIntv + time.Second)
		synctest.Wait()
		if m := masterOf(t, calls.Store, lock); m != "a" {
			t.Fatalf("master %q, want a", m)
		}
		calls.reset()
		if _, err := execs[1].Disable(context.Background(), lock, "maintenance"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		if m := masterOf(t, calls.Store, lock); m != "" {
			t.Fatalf("master %q after the Disable, want none", m)
		}
		for _, id := range []string{"b", "c"} {
			if n := calls.acquisitions(id); n > 1 {
				t.Errorf("follower %s asked for the disabled lock %d times in the 500ms after the Disable; want at most once (on the release's push)", id, n)
			}
		}
		for _, stop := range stops {
			_ = stop()
		}
	})
}
