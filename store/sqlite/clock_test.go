package sqlite_test

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// fakeClocks is a wall clock and a CLOCK_BOOTTIME that tests move by hand.
type fakeClocks struct {
	mu   sync.Mutex
	wall time.Time
	boot time.Duration
}

func newFakeClocks() *fakeClocks {
	return &fakeClocks{wall: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), boot: 3 * time.Hour}
}

func (c *fakeClocks) Wall() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *fakeClocks) Boottime() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.boot), true
}

// advance lets d pass on both clocks.
func (c *fakeClocks) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall, c.boot = c.wall.Add(d), c.boot+d
}

// step sets the wall clock by d (an NTP step, date -s), leaving BOOTTIME.
func (c *fakeClocks) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = c.wall.Add(d)
}

func (c *fakeClocks) option(bootID string) sqlite.Option {
	return sqlite.WithClocks(c.Wall, c.Boottime, bootID)
}

func lockState(t *testing.T, s *sqlite.Store, lock string) store.LockState {
	t.Helper()
	st, err := s.Locks(t.Context(), lock)
	if err != nil || len(st) != 1 {
		t.Fatalf("Locks(%s): %+v, %v", lock, st, err)
	}
	return st[0]
}

func acquire(t *testing.T, s *sqlite.Store, holder, lock string, ttl time.Duration) store.LockState {
	t.Helper()
	st, err := s.Acquire(t.Context(), store.Holder{ID: holder}, []string{lock}, ttl)
	if err != nil || len(st) != 1 {
		t.Fatalf("Acquire(%s, %s): %+v, %v", holder, lock, st, err)
	}
	return st[0]
}

// TestWallClockStepChangesNoExpiry: a step of the host's wall clock, an
// hour forward or back, changes no TTL, expires no lease early and delays
// no failover. Lease arithmetic is on CLOCK_BOOTTIME; the wall clock is
// only displayed.
func TestWallClockStepChangesNoExpiry(t *testing.T) {
	t.Parallel()
	clk := newFakeClocks()
	s := openStore(t, filepath.Join(t.TempDir(), "step.db"), clk.option("boot-1"))
	const ttl = 10 * time.Second

	a := acquire(t, s, "a", "JOB", ttl)
	if !a.Acquired {
		t.Fatalf("first Acquire: %+v", a)
	}
	clk.advance(2 * time.Second)

	// Forward: the lease has 8s left, whatever the wall clock says.
	clk.step(time.Hour)
	if st := lockState(t, s, "JOB"); st.Holder != "a" || st.TTL != 8*time.Second {
		t.Fatalf("after a +1h wall step: holder %q TTL %v; want a, 8s", st.Holder, st.TTL)
	}
	if st := acquire(t, s, "b", "JOB", ttl); st.Acquired {
		t.Fatalf("after a +1h wall step b acquired a held lease (token %d over %d): two masters", st.Token, a.Token)
	}
	if st := lockState(t, s, "JOB"); st.ExpiresAt.Sub(clk.Wall()) != 8*time.Second {
		t.Errorf("ExpiresAt %v is not the stepped wall clock %v + TTL", st.ExpiresAt, clk.Wall())
	}
	res, err := s.Renew(t.Context(), "a", []store.LeaseRef{{Lock: "JOB", Token: a.Token}}, ttl)
	if err != nil || !res[0].Renewed || res[0].TTL != ttl {
		t.Fatalf("Renew after a +1h wall step: %+v, %v", res, err)
	}

	// Back two hours: the renewed lease still expires 10s from now, and
	// not a moment later.
	clk.step(-2 * time.Hour)
	if st := lockState(t, s, "JOB"); st.Holder != "a" || st.TTL != ttl {
		t.Fatalf("after a -2h wall step: holder %q TTL %v; want a, %v", st.Holder, st.TTL, ttl)
	}
	clk.advance(ttl - time.Millisecond)
	if st := acquire(t, s, "b", "JOB", ttl); st.Acquired {
		t.Fatalf("b acquired 1ms before the lease expired")
	}
	clk.advance(time.Millisecond)
	b := acquire(t, s, "b", "JOB", ttl)
	if !b.Acquired || b.Token <= a.Token {
		t.Fatalf("after a -2h wall step b could not take the expired lease at its expiry: %+v", b)
	}
	res, err = s.Renew(t.Context(), "a", []store.LeaseRef{{Lock: "JOB", Token: a.Token}}, ttl)
	if err != nil || res[0].Renewed {
		t.Errorf("a renewed after losing the lease: %+v, %v", res, err)
	}
}

// TestOtherBootCountsAsExpired: CLOCK_BOOTTIME restarts at each boot, so a
// lease written in an earlier boot has expired, whatever its number says;
// it is taken with a greater token (the counter is not on that clock).
func TestOtherBootCountsAsExpired(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "boot.db")
	before := newFakeClocks()
	before.boot = 90 * 24 * time.Hour // a long uptime
	s1 := openStore(t, path, before.option("boot-1"))
	old := acquire(t, s1, "a", "JOB", time.Hour)
	if !old.Acquired {
		t.Fatalf("Acquire: %+v", old)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	// The host reboots within a minute; BOOTTIME starts again near zero.
	after := &fakeClocks{wall: before.Wall().Add(time.Minute), boot: 20 * time.Second}
	s2 := openStore(t, path, after.option("boot-2"))
	if st := lockState(t, s2, "JOB"); st.Held() {
		t.Fatalf("a lease from the previous boot is held: %+v", st)
	}
	b := acquire(t, s2, "b", "JOB", time.Hour)
	if !b.Acquired || b.Token <= old.Token {
		t.Fatalf("after a reboot: %+v; want JOB acquired with a token above %d", b, old.Token)
	}
	// The same boot id with a smaller BOOTTIME is the same boot: b holds.
	if st := acquire(t, openStore(t, path, after.option("boot-2")), "c", "JOB", time.Hour); st.Acquired || st.TTL != time.Hour {
		t.Fatalf("c took b's lease in the same boot: %+v", st)
	}
}

// TestOpensVersion3File: a database written by the previous version
// (testdata/v3.db: schema 3, a held 1h lease, a released and a disabled
// lock, one history entry) opens, keeps its data, and works. Its held lease
// was stamped on the wall clock only: it is honoured by the wall clock until
// it ends, and leases taken from then on are on CLOCK_BOOTTIME.
func TestOpensVersion3File(t *testing.T) {
	t.Parallel()
	path := copyFile(t, filepath.Join("testdata", "v3.db"), filepath.Join(t.TempDir(), "v3.db"))
	var acquiredAt, expiresAt int64
	if err := rawDB(t, path).QueryRow(`SELECT acquired_at, expires_at FROM masterjob_locks WHERE lock_name = 'LEGACY-HELD'`).
		Scan(&acquiredAt, &expiresAt); err != nil {
		t.Fatal(err)
	}
	clk := newFakeClocks()
	clk.wall = time.UnixMilli(acquiredAt).Add(time.Minute)
	s := openStore(t, path, clk.option("boot-1"))

	var version int
	if err := rawDB(t, path).QueryRow(`SELECT value FROM masterjob_meta WHERE name = 'schema_version'`).Scan(&version); err != nil || version != 5 {
		t.Errorf("schema_version = %d, %v; want 5", version, err)
	}
	held := lockState(t, s, "LEGACY-HELD")
	if held.Holder != "old-holder" || held.Token != 2 || held.TTL != 59*time.Minute {
		t.Errorf("the old version's lease: holder %q token %d TTL %v; want old-holder, 2, 59m", held.Holder, held.Token, held.TTL)
	}
	if st := lockState(t, s, "LEGACY-DISABLED"); !st.Disabled || st.Reason != "kept" || st.ChangedBy != "ops" {
		t.Errorf("the disabled lock: %+v", st)
	}
	if ev, err := s.Events(t.Context(), store.EventFilter{}); err != nil || len(ev) != 1 || ev[0].Lock != "LEGACY-HELD" {
		t.Errorf("history: %+v, %v; want the one entry", ev, err)
	}
	if st := acquire(t, s, "new", "LEGACY-HELD", time.Hour); st.Acquired {
		t.Fatalf("took the old version's unexpired lease: %+v", st)
	}
	if st := acquire(t, s, "new", "LEGACY-RELEASED", time.Hour); !st.Acquired || st.Token != 3 {
		t.Errorf("released lock: %+v; want acquired with token 3", st)
	}

	// Past the old lease's wall-clock expiry it is free, and the new lease
	// is on CLOCK_BOOTTIME: a wall step back does not revive the old one
	// nor stretch the new one.
	clk.advance(time.Hour)
	st := acquire(t, s, "new", "LEGACY-HELD", 10*time.Second)
	if !st.Acquired || st.Token != 4 {
		t.Fatalf("after the old lease expired: %+v; want acquired with token 4", st)
	}
	clk.step(-3 * time.Hour)
	clk.advance(10 * time.Second)
	if got := acquire(t, s, "other", "LEGACY-HELD", time.Hour); !got.Acquired || got.Token != 5 {
		t.Errorf("the new lease after its 10s, with the wall clock 3h back: %+v; want taken with token 5", got)
	}
}

// TestLeaseOfOlderVersionHonoured: while processes of the previous version
// still share the file (a rolling upgrade), a lease one of them takes
// (stamped on the wall clock only) is honoured by its wall-clock expiry,
// even where this version left a CLOCK_BOOTTIME expiry of an earlier lease
// of the same lock.
func TestLeaseOfOlderVersionHonoured(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "mixed.db")
	clk := newFakeClocks()
	s := openStore(t, path, clk.option("boot-1"))
	first := acquire(t, s, "new", "JOB", time.Second)
	clk.advance(2 * time.Second)

	// The previous version's Acquire, verbatim, with its own clock.
	db := rawDB(t, path)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Wall().UnixMilli()
	if _, err := tx.Exec(`INSERT INTO masterjob_locks (lock_name, holder, holder_info, token, acquired_at, renewed_at, expires_at, revoked)
			VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 0)
			ON CONFLICT (lock_name) DO UPDATE SET holder = ?2, holder_info = ?3, token = ?4,
				acquired_at = ?5, renewed_at = ?5, expires_at = ?6, revoked = 0`,
		"JOB", "old", "", first.Token+1, now, now+time.Minute.Milliseconds()); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE masterjob_meta SET value = ? WHERE name = 'token'`, first.Token+1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	if st := acquire(t, s, "new", "JOB", time.Second); st.Acquired || st.Holder != "old" || st.TTL != time.Minute {
		t.Fatalf("the old version's lease: %+v; want held by old for 1m", st)
	}
	clk.advance(time.Minute)
	if st := acquire(t, s, "new", "JOB", time.Second); !st.Acquired || st.Token != first.Token+2 {
		t.Fatalf("after the old version's lease expired: %+v; want acquired with token %d", st, first.Token+2)
	}
}

func copyFile(t *testing.T, from, to string) string {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return to
}

// TestDeletedRecordTakesItsClock: deleting a lock's record by hand (as an
// operator would) deletes its lease's CLOCK_BOOTTIME expiry too.
func TestDeletedRecordTakesItsClock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "delete.db")
	s := openStore(t, path)
	acquire(t, s, "a", "JOB", time.Minute)
	db := rawDB(t, path)
	count := func() (n int) {
		t.Helper()
		if err := db.QueryRow(`SELECT count(*) FROM masterjob_lease_clock WHERE lock_name = 'JOB'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("lease_clock rows for JOB after Acquire: %d, want 1", n)
	}
	if _, err := db.Exec(`DELETE FROM masterjob_locks WHERE lock_name = 'JOB'`); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("lease_clock rows for JOB after its record was deleted: %d, want 0", n)
	}
}

// TestEndLeaseByHand: the way schema.sql documents to end a lease from
// outside (its holder set to the empty string): the holder's renewal is
// refused and another takes the lock with a greater token.
func TestEndLeaseByHand(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "byhand.db")
	s := openStore(t, path)
	a := acquire(t, s, "a", "JOB", time.Minute)
	if _, err := rawDB(t, path).Exec(`UPDATE masterjob_locks SET holder = '' WHERE lock_name = 'JOB'`); err != nil {
		t.Fatal(err)
	}
	res, err := s.Renew(t.Context(), "a", []store.LeaseRef{{Lock: "JOB", Token: a.Token}}, time.Minute)
	if err != nil || res[0].Renewed {
		t.Fatalf("Renew after the lease was ended by hand: %+v, %v", res, err)
	}
	if b := acquire(t, s, "b", "JOB", time.Minute); !b.Acquired || b.Token <= a.Token {
		t.Fatalf("Acquire after the lease was ended by hand: %+v", b)
	}
}

// TestWithoutBoottime: where CLOCK_BOOTTIME cannot be read (other systems)
// the wall clock decides, with its caveat, and a lease stamped on
// CLOCK_BOOTTIME by another process is read on the wall clock too rather
// than counted as expired.
func TestWithoutBoottime(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "noboot.db")
	clk := newFakeClocks()
	linux := openStore(t, path, clk.option("boot-1"))
	other := openStore(t, path, sqlite.WithClocks(clk.Wall, func() (int64, bool) { return 0, false }, ""))
	a := acquire(t, linux, "a", "JOB", time.Minute)
	if st := acquire(t, other, "b", "JOB", time.Minute); st.Acquired || st.TTL != time.Minute {
		t.Fatalf("without CLOCK_BOOTTIME, a lease stamped on it: %+v; want held for 1m", st)
	}
	clk.advance(30 * time.Second)
	if err := linux.Release(t.Context(), "a", []store.LeaseRef{{Lock: "JOB", Token: a.Token}}); err != nil {
		t.Fatal(err)
	}
	b := acquire(t, other, "b", "JOB", time.Minute)
	if !b.Acquired {
		t.Fatalf("Acquire after the release: %+v", b)
	}
	clk.step(time.Minute) // the documented caveat: a step forward expires it
	if st := lockState(t, other, "JOB"); st.Held() {
		t.Errorf("without CLOCK_BOOTTIME a +1m wall step left %+v; the wall clock should decide", st)
	}
}
