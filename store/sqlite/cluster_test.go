package sqlite_test

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// SQLite-specific tests of the cluster view (hand-offs, members, kinds of
// notifications): the lease clock, the schema migration, and what a
// member write costs. The conformance suite covers the contract.

// v4Wall and v4Boot are the clocks testdata/v4.db was written at: schema
// version 4, boot id "boot-1". LEGACY-HELD is held by old-holder for 1h
// (token 1), LEGACY-RELEASED was released (token 2), LEGACY-DISABLED is
// disabled ("kept", by ops); the history has one entry and the notify
// table two rows without a kind (the release and the disable).
var (
	v4Wall = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	v4Boot = 3 * time.Hour
)

// v4Clocks returns clocks d after testdata/v4.db was written, in its boot.
func v4Clocks(d time.Duration) *fakeClocks {
	return &fakeClocks{wall: v4Wall.Add(d), boot: v4Boot + d}
}

func columnCount(t *testing.T, db *sql.DB, table, column string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// receive returns the next change on ch, failing after 5s.
func receive(t *testing.T, ch <-chan store.Change, after string) store.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatalf("subscription closed, waiting for a change after %s", after)
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("no change within 5s after %s", after)
	}
	return store.Change{}
}

// TestOpensVersion4File: a database of the previous version (schema 4)
// migrates to version 5 in place: the notify table gets its kind column
// (ALTER TABLE, which schema.sql cannot hold), the new tables appear, the
// data and the held lease stay; rows an older process writes without a
// kind are delivered as lease changes.
func TestOpensVersion4File(t *testing.T) {
	t.Parallel()
	path := copyFile(t, filepath.Join("testdata", "v4.db"), filepath.Join(t.TempDir(), "v4.db"))
	db := rawDB(t, path)
	if n := columnCount(t, db, "masterjob_notify", "kind"); n != 0 {
		t.Fatalf("testdata/v4.db already has a kind column")
	}
	if _, err := sqlite.Open(path, sqlite.WithoutMigrate()); err == nil || !strings.Contains(err.Error(), "schema version 4") {
		t.Errorf("WithoutMigrate on a version 4 file: %v; want an error naming version 4", err)
	}
	clk := v4Clocks(time.Minute)
	s := openStore(t, path, clk.option("boot-1"), sqlite.WithNotifyPoll(10*time.Millisecond))

	var version int
	if err := db.QueryRow(`SELECT value FROM masterjob_meta WHERE name = 'schema_version'`).Scan(&version); err != nil || version != 5 {
		t.Errorf("schema_version = %d, %v; want 5", version, err)
	}
	if n := columnCount(t, db, "masterjob_notify", "kind"); n != 1 {
		t.Errorf("notify.kind columns after migration: %d, want 1", n)
	}
	var kinds []string
	rows, err := db.Query(`SELECT kind FROM masterjob_notify ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, k)
	}
	rows.Close()
	if !slices.Equal(kinds, []string{"lease", "lease"}) {
		t.Errorf("kinds of the old notify rows: %v, want [lease lease]", kinds)
	}
	held := lockState(t, s, "LEGACY-HELD")
	if held.Holder != "old-holder" || held.Token != 1 || held.TTL != 59*time.Minute || held.HandoffRequested {
		t.Errorf("the old version's lease: %+v; want held by old-holder, token 1, 59m", held)
	}
	if st := lockState(t, s, "LEGACY-DISABLED"); !st.Disabled || st.Reason != "kept" {
		t.Errorf("the disabled lock: %+v", st)
	}

	// A second Open finds the current version and writes nothing.
	again := openStore(t, path, clk.option("boot-1"))
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}

	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A process of the previous version notifies without a kind.
	if _, err := db.Exec(`INSERT INTO masterjob_notify (lock_name) VALUES ('FROM-V4')`); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch, "an old version's notification"); got != (store.Change{Kind: store.ChangeLease, Lock: "FROM-V4"}) {
		t.Errorf("an old version's notification: %+v, want a lease change of FROM-V4", got)
	}
	if _, err := s.Handoff(t.Context(), "LEGACY-HELD", "new", "ops"); err != nil {
		t.Fatalf("Handoff of the old version's lease: %v", err)
	}
	if got := receive(t, ch, "Handoff"); got != (store.Change{Kind: store.ChangeControl, Lock: "LEGACY-HELD"}) {
		t.Errorf("hand-off notification: %+v", got)
	}
	s.Announce(store.Member{ID: "new", Locks: []string{"LEGACY-HELD"}, LockSetID: "x"}, time.Minute)
	if st := acquire(t, s, "new", "LEGACY-RELEASED", time.Minute); !st.Acquired || st.Token != 3 {
		t.Errorf("Acquire after migration: %+v; want token 3", st)
	}
	if ms, err := s.Members(t.Context(), store.MemberFilter{Lock: "LEGACY-HELD"}); err != nil || len(ms) != 1 {
		t.Errorf("Members after migration: %+v, %v", ms, err)
	}
}

// TestReadOnlyVersion4: a read-only Store reads a version 4 database as it
// is: no member, no hand-off, every notification a lease change, and the
// file unchanged.
func TestReadOnlyVersion4(t *testing.T) {
	t.Parallel()
	path := copyFile(t, filepath.Join("testdata", "v4.db"), filepath.Join(t.TempDir(), "v4.db"))
	// A raw connection, as a running process would have, creates the -wal
	// and -shm files, which a read-only Open may not.
	if err := rawDB(t, path).Ping(); err != nil {
		t.Fatal(err)
	}
	before := snap(t, path)
	clk := v4Clocks(time.Minute)
	s, err := sqlite.Open(path, sqlite.ReadOnly(), clk.option("boot-1"), sqlite.WithNotifyPoll(10*time.Millisecond))
	if err != nil {
		t.Fatalf("read-only Open of a version 4 file: %v", err)
	}
	defer s.Close()
	if st := lockState(t, s, "LEGACY-HELD"); st.Holder != "old-holder" || st.TTL != 59*time.Minute {
		t.Errorf("read-only, the old version's lease: %+v", st)
	}
	if ms, err := s.Members(t.Context(), store.MemberFilter{WithLocks: true}); err != nil || len(ms) != 0 {
		t.Errorf("read-only Members of a version 4 file: %+v, %v; want none", ms, err)
	}
	if _, err := s.Handoff(t.Context(), "LEGACY-HELD", "", "ops"); !errors.Is(err, sqlite.ErrReadOnly) {
		t.Errorf("read-only Handoff: %v, want ErrReadOnly", err)
	}
	if err := s.Leave(t.Context(), "x"); !errors.Is(err, sqlite.ErrReadOnly) {
		t.Errorf("read-only Leave: %v, want ErrReadOnly", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !before.same(snap(t, path)) {
		t.Error("a read-only Store changed a version 4 file")
	}

	s, err = sqlite.Open(path, sqlite.ReadOnly(), clk.option("boot-1"), sqlite.WithNotifyPoll(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("read-only Subscribe of a version 4 file: %v", err)
	}
	if _, err := rawDB(t, path).Exec(`INSERT INTO masterjob_notify (lock_name) VALUES ('FROM-V4')`); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch, "an old version's notification"); got != (store.Change{Kind: store.ChangeLease, Lock: "FROM-V4"}) {
		t.Errorf("read-only, an old version's notification: %+v", got)
	}
}

// TestReservationOnLeaseClock: a reservation is measured on
// CLOCK_BOOTTIME, as leases are: a wall-clock step neither ends nor
// stretches it; a reboot ends it.
func TestReservationOnLeaseClock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "reserve.db")
	clk := newFakeClocks()
	s := openStore(t, path, clk.option("boot-1"))
	a := acquire(t, s, "a", "JOB", time.Minute)
	if err := s.Release(t.Context(), "a", []store.LeaseRef{{Lock: "JOB", Token: a.Token, Successor: "b", Reserve: 10 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Second)
	clk.step(time.Hour)
	if st := acquire(t, s, "c", "JOB", time.Minute); st.Acquired || st.ReservedFor != "b" || st.ReservedTTL != 8*time.Second {
		t.Fatalf("after a +1h wall step: %+v; want refused, reserved for b for 8s", st)
	}
	clk.step(-2 * time.Hour)
	clk.advance(8*time.Second - time.Millisecond)
	if st := acquire(t, s, "c", "JOB", time.Minute); st.Acquired || st.ReservedTTL != time.Millisecond {
		t.Fatalf("1ms before the reservation lapses, after a -2h wall step: %+v", st)
	}
	clk.advance(time.Millisecond)
	if st := acquire(t, s, "c", "JOB", time.Minute); !st.Acquired || st.ReservedFor != "" {
		t.Fatalf("when the reservation lapsed: %+v; want acquired", st)
	}

	// Reserved in one boot, read in the next: lapsed.
	c := lockState(t, s, "JOB")
	if err := s.Release(t.Context(), "c", []store.LeaseRef{{Lock: "JOB", Token: c.Token, Successor: "b", Reserve: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	after := &fakeClocks{wall: clk.Wall().Add(time.Minute), boot: 10 * time.Second}
	if st := acquire(t, openStore(t, path, after.option("boot-2")), "d", "JOB", time.Minute); !st.Acquired {
		t.Fatalf("a reservation from the previous boot: %+v; want lapsed", st)
	}
}

// TestMemberExpiryOnLeaseClock: a member record's TTL is on
// CLOCK_BOOTTIME: a wall-clock step does not expire it; the next member
// write after it expired prunes it.
func TestMemberExpiryOnLeaseClock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "member.db")
	clk := newFakeClocks()
	s := openStore(t, path, clk.option("boot-1"))
	ctx := t.Context()
	s.Announce(store.Member{ID: "a", Locks: []string{"JOB"}, LockSetID: "set-a"}, 10*time.Second)
	s.Announce(store.Member{ID: "b", Locks: []string{"JOB", "OTHER"}, LockSetID: "set-b"}, time.Hour)
	acquire(t, s, "a", "JOB", time.Minute)
	acquire(t, s, "b", "OTHER", time.Minute)
	clk.advance(2 * time.Second)
	clk.step(time.Hour)
	ms, err := s.Members(ctx, store.MemberFilter{})
	if err != nil || len(ms) != 2 || ms[0].ID != "a" || ms[0].TTL != 8*time.Second {
		t.Fatalf("after a +1h wall step: %+v, %v; want a with 8s left, and b", ms, err)
	}
	clk.advance(8 * time.Second)
	if ms, err := s.Members(ctx, store.MemberFilter{}); err != nil || len(ms) != 1 || ms[0].ID != "b" {
		t.Fatalf("after a's TTL: %+v, %v; want only b", ms, err)
	}
	db := rawDB(t, path)
	count := func(q string) (n int) {
		t.Helper()
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM masterjob_members`); n != 2 {
		t.Fatalf("members rows before a member write: %d, want 2 (expired records are pruned by writes)", n)
	}
	if _, err := s.Renew(ctx, "b", nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM masterjob_members`); n != 1 {
		t.Errorf("members rows after b's write: %d, want 1 (a pruned)", n)
	}
	if n := count(`SELECT count(*) FROM masterjob_member_locks WHERE set_key LIKE '%set-a'`); n != 0 {
		t.Errorf("a's lock set outlived its last member: %d rows", n)
	}
}

// countWrites installs triggers that count the rows inserted into and
// deleted from the member_locks table, and returns a function reading the
// count.
func countWrites(t *testing.T, db *sql.DB) func() int {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE test_writes (n INTEGER NOT NULL)`,
		`INSERT INTO test_writes VALUES (0)`,
		`CREATE TRIGGER test_ins AFTER INSERT ON masterjob_member_locks BEGIN UPDATE test_writes SET n = n + 1; END`,
		`CREATE TRIGGER test_del AFTER DELETE ON masterjob_member_locks BEGIN UPDATE test_writes SET n = n + 1; END`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return func() (n int) {
		t.Helper()
		if err := db.QueryRow(`SELECT n FROM test_writes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// TestMemberLockSetWrittenOnce: an instance taking part in 10,000 locks
// writes its lock list when it first appears, not with each Renew; a
// second instance with the same lock set writes none; a changed set is
// written once; the set goes with the last member that has it.
func TestMemberLockSetWrittenOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sets.db")
	s := openStore(t, path)
	writes := countWrites(t, rawDB(t, path))
	ctx := t.Context()
	const n = 10000
	locks := make([]string, n)
	for i := range locks {
		locks[i] = fmt.Sprintf("tenant-%05d", i)
	}
	a := store.Member{ID: "a", Locks: locks, LockSetID: "big"}
	s.Announce(a, time.Minute)
	got, err := s.Acquire(ctx, store.Holder{ID: "a"}, locks[:1], time.Minute)
	if err != nil || !got[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", got, err)
	}
	if w := writes(); w != n {
		t.Fatalf("member_locks rows written by the first Acquire: %d, want %d", w, n)
	}
	ref := []store.LeaseRef{{Lock: locks[0], Token: got[0].Token}}
	for range 3 {
		a.Masters++
		s.Announce(a, time.Minute)
		if _, err := s.Renew(ctx, "a", ref, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if w := writes(); w != n {
		t.Errorf("member_locks rows written by 3 Renews with the lock set unchanged: %d, want 0", w-n)
	}
	other := openStore(t, path)
	other.Announce(store.Member{ID: "b", Locks: locks, LockSetID: "big"}, time.Minute)
	if _, err := other.Acquire(ctx, store.Holder{ID: "b"}, locks[:1], time.Minute); err != nil {
		t.Fatal(err)
	}
	if w := writes(); w != n {
		t.Errorf("member_locks rows written for a second member with the same set: %d, want 0", w-n)
	}
	ms, err := s.Members(ctx, store.MemberFilter{Lock: locks[n-1], WithLocks: true})
	if err != nil || len(ms) != 2 || ms[0].Masters != 3 || ms[1].LockCount != n || !slices.Equal(ms[1].Locks, locks) {
		t.Fatalf("Members of %s: %d members, %v", locks[n-1], len(ms), err)
	}

	// a's set changes (one lock fewer): the new set is written once; the
	// old one stays while b has it.
	a.Locks, a.LockSetID = locks[1:], "big-1"
	s.Announce(a, time.Minute)
	if _, err := s.Renew(ctx, "a", ref, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Renew(ctx, "a", ref, time.Minute); err != nil {
		t.Fatal(err)
	}
	if w := writes(); w != 2*n-1 {
		t.Errorf("member_locks rows written for a changed set: %d, want %d", w-n, n-1)
	}
	if ms, err := s.Members(ctx, store.MemberFilter{Lock: locks[0]}); err != nil || len(ms) != 1 || ms[0].ID != "b" {
		t.Errorf("members of %s after a left it: %+v, %v", locks[0], ms, err)
	}
	for _, st := range []*sqlite.Store{s, other} {
		for _, id := range []string{"a", "b"} {
			if err := st.Leave(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if w := writes(); w != 4*n-2 {
		t.Errorf("member_locks rows deleted when both members left: %d, want %d", w-(2*n-1), 2*n-1)
	}
}
