package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

var isolations = []string{"REPEATABLE-READ", "READ-COMMITTED"}

// holdRowLocks opens a transaction on its own connection that locks the
// rows selected by query (FOR UPDATE) until the test ends or release is
// called.
func holdRowLocks(t *testing.T, query string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := adminDB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "START TRANSACTION"); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.QueryContext(ctx, query+" FOR UPDATE")
	if err != nil {
		t.Fatalf("%s FOR UPDATE: %v", query, err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	if n == 0 {
		t.Fatalf("%s locked no row", query)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_, _ = conn.ExecContext(ctx, "ROLLBACK")
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// TestCallsDoNotWaitForOtherRows checks which row locks each call needs:
// a follower's check of locks held by others, a renewal and a check that
// finds nothing to take must not wait for the rows of other locks nor for
// the sequence, so that they never queue behind an acquirer or an
// operator's transaction. Without the join order forced in the statements
// (STRAIGHT_JOIN, FORCE INDEX), MariaDB scans a small locks table and
// locks every row it reads.
func TestCallsDoNotWaitForOtherRows(t *testing.T) {
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			prefix := newPrefix(t)
			s := openStoreDSN(t, isolationDSN(t, iso), WithTablePrefix(prefix), WithCallTimeout(3*time.Second))
			ctx := t.Context()
			held, err := s.Acquire(ctx, holderA, []string{"HELD", "OTHER"}, time.Minute)
			if err != nil || !held[0].Acquired || !held[1].Acquired {
				t.Fatalf("Acquire: %v %+v", err, held)
			}
			byName := map[string]store.LockState{held[0].Lock: held[0], held[1].Lock: held[1]}
			locks := quoteIdent(prefix + "locks")

			// An operator's (or another call's) transaction holds the row
			// of OTHER and the sequence.
			release := holdRowLocks(t, "SELECT lock_name FROM "+locks+" WHERE lock_name = 'OTHER'")
			releaseSeq := holdRowLocks(t, "SELECT id FROM "+quoteIdent(prefix+"seq"))

			start := time.Now()
			got, err := s.Renew(ctx, holderA.ID, []store.LeaseRef{{Lock: "HELD", Token: byName["HELD"].Token}}, time.Minute)
			if err != nil || !got[0].Renewed {
				t.Errorf("Renew of HELD while OTHER's row and the sequence are locked: %v %+v (after %v)", err, got, time.Since(start))
			}
			start = time.Now()
			st, err := s.Acquire(ctx, holderB, []string{"HELD"}, time.Minute)
			if err != nil || st[0].Acquired || st[0].Holder != holderA.ID {
				t.Errorf("a follower's check of HELD: %v %+v (after %v)", err, st, time.Since(start))
			}
			// Even a check of the locked row itself: it reads, never locks.
			start = time.Now()
			st, err = s.Acquire(ctx, holderB, []string{"OTHER"}, time.Minute)
			if err != nil || st[0].Acquired || st[0].Holder != holderA.ID {
				t.Errorf("a follower's check of OTHER while its row is locked: %v %+v (after %v)", err, st, time.Since(start))
			}
			if _, err := s.Locks(ctx, "OTHER", "HELD"); err != nil {
				t.Errorf("Locks while rows are locked: %v", err)
			}
			releaseSeq()
			release()
		})
	}
}

// TestConcurrentAcquirers runs many holders acquiring, renewing and
// releasing overlapping lock sets in random orders, on several handles, at
// both isolation levels. Deadlocks and lock waits between them must be
// retried inside the calls: every call succeeds, a holder never finds a
// lease it holds (long TTL, not released) refused at renewal, no two
// holders ever hold the same lock, and tokens grow per lock.
func TestConcurrentAcquirers(t *testing.T) {
	if testing.Short() {
		t.Skip("long-running contention test")
	}
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			prefix := newPrefix(t)
			dsn := isolationDSN(t, iso)
			const (
				handles = 4
				holders = 32
				rounds  = 20
				nLocks  = 10
			)
			var retried, attempts atomic.Int64
			stores := make([]*Store, handles)
			for i := range stores {
				stores[i] = openStoreDSN(t, dsn, WithTablePrefix(prefix), WithCallTimeout(20*time.Second))
				stores[i].afterAttempt = func(err error) {
					attempts.Add(1)
					if isConflict(err) {
						retried.Add(1)
					}
				}
			}
			lockNames := make([]string, nLocks)
			for i := range lockNames {
				lockNames[i] = fmt.Sprintf("C-%02d", i)
			}
			var (
				mu        sync.Mutex
				holderOf  = map[string]string{}
				lastToken = map[string]int64{}
				failures  []string
			)
			fail := func(format string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				failures = append(failures, fmt.Sprintf(format, args...))
			}
			var wg sync.WaitGroup
			for h := range holders {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(h), 7))
					s := stores[h%handles]
					holder := store.Holder{ID: fmt.Sprintf("holder-%02d", h)}
					if h%3 == 0 {
						s.Announce(store.Member{ID: holder.ID, Locks: lockNames[:h%nLocks+1], LockSetID: fmt.Sprint(h)}, time.Minute)
					}
					mine := map[string]int64{}
					for range rounds {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						want := make([]string, 0, 8)
						for _, i := range rng.Perm(nLocks)[:1+rng.IntN(8)] {
							want = append(want, lockNames[i])
						}
						got, err := s.Acquire(ctx, holder, want, time.Minute)
						if err != nil {
							fail("%s: Acquire: %v", holder.ID, err)
							cancel()
							return
						}
						for _, st := range got {
							if !st.Acquired {
								continue
							}
							mu.Lock()
							if other := holderOf[st.Lock]; other != "" {
								failures = append(failures, fmt.Sprintf("%s acquired %s held by %s", holder.ID, st.Lock, other))
							}
							if st.Token <= lastToken[st.Lock] {
								failures = append(failures, fmt.Sprintf("%s: token %d for %s after %d", holder.ID, st.Token, st.Lock, lastToken[st.Lock]))
							}
							holderOf[st.Lock], lastToken[st.Lock] = holder.ID, st.Token
							mu.Unlock()
							mine[st.Lock] = st.Token
						}
						var refs []store.LeaseRef
						for l, tok := range mine {
							refs = append(refs, store.LeaseRef{Lock: l, Token: tok})
						}
						rng.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
						res, err := s.Renew(ctx, holder.ID, refs, time.Minute)
						if err != nil {
							fail("%s: Renew: %v", holder.ID, err)
							cancel()
							return
						}
						for _, r := range res {
							if !r.Renewed {
								fail("%s lost %s (token %d) at renewal", holder.ID, r.Lock, r.Token)
							}
						}
						var rel []store.LeaseRef
						for _, r := range refs {
							if rng.IntN(2) == 0 {
								rel = append(rel, r)
								delete(mine, r.Lock)
							}
						}
						mu.Lock()
						for _, r := range rel {
							delete(holderOf, r.Lock)
						}
						mu.Unlock()
						if err := s.Release(ctx, holder.ID, rel); err != nil {
							fail("%s: Release: %v", holder.ID, err)
						}
						cancel()
					}
				})
			}
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
			t.Logf("%s: %d calls, %d attempts lost a deadlock or lock wait and were retried inside the call", iso, attempts.Load()-retried.Load(), retried.Load())
		})
	}
}

// TestRetriesAreCounted makes a deadlock between two transactions that lock
// the same two rows in opposite orders, and checks that isConflict names
// the error the server returns: the retry in run depends on it.
func TestRetriesAreCounted(t *testing.T) {
	prefix := newPrefix(t)
	s := openStore(t, WithTablePrefix(prefix))
	if _, err := s.Acquire(t.Context(), holderA, []string{"D1", "D2"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	locks := quoteIdent(prefix + "locks")
	ctx := t.Context()
	c1, err := adminDB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := adminDB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	lock := func(c *sql.Conn, name string) error {
		_, err := c.ExecContext(ctx, "SELECT lock_name FROM "+locks+" WHERE lock_name = '"+name+"' FOR UPDATE")
		return err
	}
	for _, c := range []*sql.Conn{c1, c2} {
		if _, err := c.ExecContext(ctx, "START TRANSACTION"); err != nil {
			t.Fatal(err)
		}
	}
	if err := lock(c1, "D1"); err != nil {
		t.Fatal(err)
	}
	if err := lock(c2, "D2"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- lock(c1, "D2") }()
	time.Sleep(100 * time.Millisecond) // c1 waits for D2
	errs <- lock(c2, "D1")
	e1, e2 := <-errs, <-errs
	_, _ = c1.ExecContext(ctx, "ROLLBACK")
	_, _ = c2.ExecContext(ctx, "ROLLBACK")
	var deadlock error
	for _, e := range []error{e1, e2} {
		if e != nil {
			deadlock = e
		}
	}
	var me *mysqlError
	if !errors.As(deadlock, &me) || me.Number != erLockDeadlock || !isConflict(deadlock) {
		t.Fatalf("opposite-order locking returned %v and %v; want one deadlock (1213) that isConflict accepts", e1, e2)
	}
	if !isUnavailable(deadlock) {
		t.Errorf("a deadlock that outlived the retries must count as unavailable: %v", deadlock)
	}
}

// TestDeadlockRetriedInsideCall makes the server choose a renewal as the
// victim of a deadlock, and checks that the renewal retries and succeeds:
// a deadlock is never reported as a lost lease. An operator's transaction
// that has written more rows (so that InnoDB rolls the renewal back
// instead) locks B, waits until the renewal of A and B holds A and waits
// for B, then asks for A.
func TestDeadlockRetriedInsideCall(t *testing.T) {
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			prefix := newPrefix(t)
			s := openStoreDSN(t, isolationDSN(t, iso), WithTablePrefix(prefix), WithCallTimeout(20*time.Second))
			var conflicts atomic.Int64
			s.afterAttempt = func(err error) {
				if isConflict(err) {
					conflicts.Add(1)
				}
			}
			ctx := t.Context()
			got, err := s.Acquire(ctx, holderA, []string{"A", "B"}, time.Minute)
			if err != nil || !got[0].Acquired || !got[1].Acquired {
				t.Fatalf("Acquire: %v %+v", err, got)
			}
			refs := []store.LeaseRef{{Lock: got[0].Lock, Token: got[0].Token}, {Lock: got[1].Lock, Token: got[1].Token}}

			locks, notify := quoteIdent(prefix+"locks"), quoteIdent(prefix+"notify")
			op, err := adminDB(t).Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer op.Close()
			exec := func(q string) {
				t.Helper()
				if _, err := op.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			exec("START TRANSACTION")
			var rows []string
			for i := range 50 {
				rows = append(rows, fmt.Sprintf("(%d, 'lease', 'X', UTC_TIMESTAMP(6))", 1<<40+i))
			}
			exec("INSERT INTO " + notify + " (ver, kind, lock_name, at) VALUES " + strings.Join(rows, ", "))
			exec("SELECT lock_name FROM " + locks + " WHERE lock_name = 'B' FOR UPDATE")

			done := make(chan error, 1)
			var res []store.RenewResult
			go func() {
				var err error
				res, err = s.Renew(ctx, holderA.ID, refs, time.Minute)
				done <- err
			}()
			deadline := time.Now().Add(10 * time.Second)
			for {
				var waiting int
				// This test's tables only: the server is shared with other
				// tests, whose lock waits would end this wait too early.
				if err := adminDB(t).QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE CONCAT('%', ?, '%')",
					strings.Trim(locks, "`")).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				if waiting > 0 {
					break
				}
				if time.Now().After(deadline) {
					var states []string
					r, _ := adminDB(t).QueryContext(ctx, "SELECT COALESCE(state, ''), LEFT(COALESCE(info, ''), 300) FROM information_schema.processlist WHERE command <> 'Sleep'")
					for r != nil && r.Next() {
						var a, b string
						_ = r.Scan(&a, &b)
						states = append(states, a+": "+b)
					}
					select {
					case err := <-done:
						t.Fatalf("the renewal never waited for B; it returned %v %+v", err, res)
					default:
					}
					t.Fatalf("the renewal never waited for B; transactions: %q", states)
				}
				// information_schema.innodb_trx is a cache that the server
				// refreshes only when it was not read for 100ms.
				time.Sleep(150 * time.Millisecond)
			}
			// The cycle: the operator now wants A, which the renewal holds.
			exec("SELECT lock_name FROM " + locks + " WHERE lock_name = 'A' FOR UPDATE")
			exec("ROLLBACK")
			if err := <-done; err != nil {
				t.Fatalf("Renew: %v", err)
			}
			for _, r := range res {
				if !r.Renewed {
					t.Errorf("%s not renewed after the deadlock: %+v", r.Lock, r)
				}
			}
			if conflicts.Load() == 0 {
				t.Error("the renewal lost no deadlock: the test did not make the cycle it meant to")
			}
			t.Logf("%s: the renewal lost %d deadlock(s) and succeeded", iso, conflicts.Load())
		})
	}
}

// TestQueuedAcquirerHoldsNoRow: an acquirer that waits for the sequence
// (another writer holds it) holds no row of a lock meanwhile, so that the
// holders of those locks are not kept waiting behind the queue. Here the
// sequence is held by an operator's transaction, B's Acquire of an expired
// lock waits for it, and A's renewal of that lock must answer at once
// (refused: it expired).
func TestQueuedAcquirerHoldsNoRow(t *testing.T) {
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			prefix := newPrefix(t)
			dsn := isolationDSN(t, iso)
			a := openStoreDSN(t, dsn, WithTablePrefix(prefix), WithCallTimeout(3*time.Second))
			b := openStoreDSN(t, dsn, WithTablePrefix(prefix), WithCallTimeout(20*time.Second))
			ctx := t.Context()
			st, err := a.Acquire(ctx, holderA, []string{"Q"}, 200*time.Millisecond)
			if err != nil || !st[0].Acquired {
				t.Fatalf("Acquire: %v %+v", err, st)
			}
			time.Sleep(300 * time.Millisecond) // the lease expires (store clock: checked below)
			if got, err := a.Locks(ctx, "Q"); err != nil || got[0].Held() {
				t.Fatalf("the lease has not expired: %v %+v", err, got)
			}
			release := holdRowLocks(t, "SELECT id FROM "+quoteIdent(prefix+"seq")+" WHERE id = 1")
			done := make(chan error, 1)
			go func() {
				got, err := b.Acquire(ctx, holderB, []string{"Q"}, time.Minute)
				if err == nil && !got[0].Acquired {
					err = fmt.Errorf("not acquired: %+v", got[0])
				}
				done <- err
			}()
			deadline := time.Now().Add(10 * time.Second)
			for {
				var waiting int
				// This test's tables only: the server is shared with other
				// tests, whose lock waits would end this wait too early.
				if err := adminDB(t).QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE CONCAT('%', ?, '%')",
					prefix).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				if waiting > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("B's Acquire never waited for the sequence")
				}
				time.Sleep(150 * time.Millisecond) // innodb_trx refreshes when unread for 100ms
			}
			start := time.Now()
			res, err := a.Renew(ctx, holderA.ID, []store.LeaseRef{{Lock: "Q", Token: st[0].Token}}, time.Minute)
			if err != nil || res[0].Renewed {
				t.Errorf("A's renewal while B queues: %v %+v (after %v), want a prompt refusal", err, res, time.Since(start))
			} else if d := time.Since(start); d > time.Second {
				t.Errorf("A's renewal took %v while B queued for the sequence", d)
			}
			release()
			if err := <-done; err != nil {
				t.Errorf("B's Acquire after the sequence was free: %v", err)
			}
		})
	}
}
