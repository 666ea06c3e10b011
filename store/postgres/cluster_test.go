package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/store"
)

// wire counts what a pool's connections send while on is set: bytes; the
// round trips, as the writes that end with a message the client then
// waits for (Sync, or a simple Query), parsed from the stream as
// pgcount.Proxy does (a pipeline of several Syncs written at once is one
// round trip); among those, the ones that prepared statements (with a
// Parse of a named statement); and the Parse messages of the unnamed
// statement (the statements run without being prepared).
type wire struct {
	on         atomic.Bool
	bytes      atomic.Int64
	roundTrips atomic.Int64
	prepares   atomic.Int64
	parses     atomic.Int64
}

// dial is a pgconn DialFunc whose connections w counts.
func (w *wire) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, w: w, startup: true}, nil
}

type wireConn struct {
	net.Conn
	w *wire

	mu      sync.Mutex
	startup bool   // the first message (no type byte) not yet passed
	hdr     []byte // the part of a message header read so far
	skip    int    // bytes of the current message's body still to come
	// The messages of the current write: Parses of the unnamed
	// statement, whether one named a statement, whether one was a Sync
	// or a simple Query.
	parses   int64
	prepares bool
	waits    bool
	// peek: the current message is a Parse whose first byte, which
	// tells whether it names a statement, is still to come.
	peek bool
}

func (c *wireConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.parse(b)
	if c.waits && c.w.on.Load() {
		c.w.roundTrips.Add(1)
		c.w.parses.Add(c.parses)
		if c.prepares {
			c.w.prepares.Add(1)
		}
	}
	c.parses, c.prepares, c.waits = 0, false, false
	c.mu.Unlock()
	if c.w.on.Load() {
		c.w.bytes.Add(int64(len(b)))
	}
	return c.Conn.Write(b)
}

// parse follows the frontend messages: a type byte and a length (the
// startup message has only the length).
func (c *wireConn) parse(b []byte) {
	for len(b) > 0 {
		if c.skip > 0 {
			if c.peek {
				// The statement's name, ended by a zero byte.
				if b[0] == 0 {
					c.parses++
				} else {
					c.prepares = true
				}
				c.peek = false
			}
			n := min(c.skip, len(b))
			c.skip -= n
			b = b[n:]
			continue
		}
		hdrLen := 5
		if c.startup {
			hdrLen = 4
		}
		n := min(hdrLen-len(c.hdr), len(b))
		c.hdr = append(c.hdr, b[:n]...)
		b = b[n:]
		if len(c.hdr) < hdrLen {
			return
		}
		length := int(binary.BigEndian.Uint32(c.hdr[hdrLen-4:]))
		if !c.startup && (c.hdr[0] == 'S' || c.hdr[0] == 'Q') {
			c.waits = true
		}
		c.skip = length - 4
		c.peek = !c.startup && c.hdr[0] == 'P'
		c.startup = false
		c.hdr = c.hdr[:0]
	}
}

// countedStore opens a store in schema on a pool of one connection that w
// counts.
func countedStore(t *testing.T, schema string, w *wire) *Store {
	t.Helper()
	pool := userPool(t, func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
		c.ConnConfig.DialFunc = w.dial
	})
	return newStoreOn(t, pool, WithSchema(schema))
}

// measure runs fn with counting on and returns its round trips, not
// counting one that prepared statements (once per connection), and all
// the bytes it sent.
func (w *wire) measure(t *testing.T, what string, fn func() error) (int64, int64) {
	t.Helper()
	w.roundTrips.Store(0)
	w.bytes.Store(0)
	w.prepares.Store(0)
	w.parses.Store(0)
	w.on.Store(true)
	err := fn()
	w.on.Store(false)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return w.roundTrips.Load() - w.prepares.Load(), w.bytes.Load()
}

func lockNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

// TestMemberWriteOneRoundTrip: with a member announced, Acquire and Renew
// still cost one round trip each (one Sync), and a Renew sends the lock
// list only when the set changed.
func TestMemberWriteOneRoundTrip(t *testing.T) {
	var w wire
	schema := newSchema(t)
	s := countedStore(t, schema, &w)
	names := lockNames("RT", 1000)
	member := store.Member{ID: holderA.ID, Info: holderA.Info, Locks: names, LockSetID: "set-1"}
	s.Announce(member, time.Minute)

	var states []store.LockState
	rt, sent := w.measure(t, "Acquire", func() (err error) {
		states, err = s.Acquire(t.Context(), holderA, names, time.Minute)
		return err
	})
	if rt != 1 {
		t.Errorf("Acquire of 1000 locks with a member: %d round trips, want 1", rt)
	}
	t.Logf("Acquire of 1000 locks with the member's first record: %d round trip, %d bytes sent", rt, sent)
	refs := heldRefs(t, states)
	one := refs[:1]
	renew := func() error {
		res, err := s.Renew(t.Context(), holderA.ID, one, time.Minute)
		if err == nil && !res[0].Renewed {
			err = fmt.Errorf("not renewed: %+v", res[0])
		}
		return err
	}
	rt, unchanged := w.measure(t, "Renew", renew)
	if rt != 1 {
		t.Errorf("Renew with a member: %d round trips, want 1", rt)
	}
	// The list of 1000 names is about 9 kB; a renewal of one lease that
	// does not send it sends its parameters and, where the connection
	// prepares a statement or prepares none, the statements' text (about
	// 3.3 kB for the two).
	if unchanged > 5000 {
		t.Errorf("Renew of one lease with an unchanged lock set sent %d bytes: the lock list went again", unchanged)
	}
	member.Locks, member.LockSetID = append(slices.Clone(names), "RT-EXTRA"), "set-2"
	s.Announce(member, time.Minute)
	rt, changed := w.measure(t, "Renew after a new lock set", renew)
	if rt != 1 {
		t.Errorf("Renew after a new lock set: %d round trips, want 1", rt)
	}
	rt, again := w.measure(t, "Renew", renew)
	if rt != 1 || again > 5000 {
		t.Errorf("second Renew with the new set: %d round trips, %d bytes; want 1 and the list not sent again", rt, again)
	}
	// 1001 names of 8 bytes, at least, went with the new set only.
	if changed-again < 1001*8 {
		t.Errorf("Renew after a new lock set sent %d bytes, the next one %d: the list was not sent", changed, again)
	}
	t.Logf("Renew of one lease: %d bytes sent with the lock set unchanged, %d when it changed (1001 names)", unchanged, changed)
	got, err := s.Members(t.Context(), store.MemberFilter{Lock: "RT-EXTRA", WithLocks: true})
	if err != nil || len(got) != 1 || got[0].LockSetID != "set-2" || got[0].LockCount != 1001 || len(got[0].Locks) != 1001 {
		t.Fatalf("Members after the new set = %d members, %v", len(got), err)
	}
}

// toastChunks returns the identities of the out-of-line (TOAST) values of
// the members table: a rewritten lock list gets a new chunk_id.
func toastChunks(t *testing.T, s *Store) []string {
	t.Helper()
	var toast string
	if err := adminPool(t).QueryRow(t.Context(), `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = $1::regclass`,
		s.members).Scan(&toast); err != nil {
		t.Fatal(err)
	}
	rows, err := adminPool(t).Query(t.Context(), `SELECT chunk_id::text || ':' || count(*) FROM `+toast+` GROUP BY chunk_id ORDER BY chunk_id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestMemberLockListNotRewritten: renewals of an instance taking part in
// 10,000 locks, with its lock set unchanged, leave the stored list as it
// is (the same TOAST value); a new set writes it once.
func TestMemberLockListNotRewritten(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	names := lockNames("BIG", 10000)
	member := store.Member{ID: holderA.ID, Locks: names, LockSetID: "big-1"}
	s.Announce(member, time.Minute)
	states, err := s.Acquire(t.Context(), holderA, names, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	refs := heldRefs(t, states)
	before := toastChunks(t, s)
	if len(before) != 1 {
		t.Fatalf("TOAST values of the members table: %v, want the one lock list", before)
	}
	for range 5 {
		if _, err := s.Renew(t.Context(), holderA.ID, refs, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if after := toastChunks(t, s); !slices.Equal(before, after) {
		t.Errorf("5 renewals with an unchanged lock set rewrote the list: TOAST values %v, then %v", before, after)
	}
	member.Locks, member.LockSetID = names[:9999], "big-2"
	s.Announce(member, time.Minute)
	if _, err := s.Renew(t.Context(), holderA.ID, refs, time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := toastChunks(t, s); slices.Equal(before, after) {
		t.Errorf("a new lock set left the TOAST values as they were (%v)", after)
	}
	got, err := s.Members(t.Context(), store.MemberFilter{WithLocks: true})
	if err != nil || len(got) != 1 || got[0].LockCount != 9999 || !slices.Equal(got[0].Locks, names[:9999]) {
		t.Fatalf("Members = %d, %v; want the new list of 9999", len(got), err)
	}
}

// TestMemberOlderAnnouncementDoesNotWin: a write carrying an older
// announcement of the same handle, which committed after a newer one (two
// calls in flight at once), refreshes the record but does not undo the
// newer announcement, and tells the handle what the record holds.
func TestMemberOlderAnnouncementDoesNotWin(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	write := func(gen int64, set string, locks []string, masters int32) memberResult {
		t.Helper()
		rows, err := s.pool.Query(t.Context(), s.q.memberWrite, pgx.QueryExecModeExec,
			holderA.ID, "info", set, locks, masters, 1.0, int64(60e6), s.ann.writer, gen, s.channel)
		if err != nil {
			t.Fatal(err)
		}
		res, err := pgx.CollectExactlyOneRow(rows, scanMemberResult)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	write(1, "set-1", []string{"A"}, 1)
	if res := write(3, "set-3", []string{"C"}, 3); res.gen != 3 || res.set != "set-3" {
		t.Fatalf("newer write: %+v", res)
	}
	// The older announcement (generation 2) lands last.
	if res := write(2, "set-2", []string{"B"}, 2); res.gen != 3 || res.set != "set-3" {
		t.Errorf("an older write that landed last reports %+v, want generation 3 and set-3", res)
	}
	got, err := s.Members(t.Context(), store.MemberFilter{WithLocks: true})
	if err != nil || len(got) != 1 {
		t.Fatalf("Members = %+v, %v", got, err)
	}
	if got[0].LockSetID != "set-3" || !slices.Equal(got[0].Locks, []string{"C"}) || got[0].Masters != 3 {
		t.Errorf("record after an older write landed last: %+v, want set-3 [C] masters 3", got[0])
	}
	// Another handle (a new writer) is believed whatever its numbers.
	other := openStore(t, WithSchema(s.cfg.schema))
	other.Announce(store.Member{ID: holderA.ID, Locks: []string{"D"}, LockSetID: "set-d"}, time.Minute)
	if _, err := other.Acquire(t.Context(), holderA, []string{"D"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Members(t.Context(), store.MemberFilter{WithLocks: true})
	if len(got) != 1 || got[0].LockSetID != "set-d" {
		t.Errorf("record after another handle wrote it: %+v, want set-d", got)
	}
}

// TestAnnouncementsResendAfterLoss: the handle sends the lock list again
// when the record lost it (pruned, then written again without it), when
// another handle wrote it last, or when the write that carried it failed.
func TestAnnouncementsResendAfterLoss(t *testing.T) {
	var a announcements
	a.init()
	set := func(id string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.gen++
		an := a.m["m"]
		if an == nil {
			an = &announced{}
			a.m["m"] = an
		}
		an.m, an.gen = store.Member{ID: "m", Locks: []string{"X"}, LockSetID: id}, a.gen
	}
	sends := func() bool {
		w := a.begin("m", "ch")
		defer a.end(w, nil)
		return w.args[3].([]string) != nil
	}
	set("s1")
	w := a.begin("m", "ch")
	if w.args[3].([]string) == nil {
		t.Fatal("first write does not send the list")
	}
	a.end(w, &memberResult{writer: a.writer, gen: 1, set: "s1"})
	if sends() {
		t.Error("the list is sent again although the record holds it")
	}
	// The record was pruned and written again without the list.
	w = a.begin("m", "ch")
	a.end(w, &memberResult{writer: a.writer, gen: 1, set: ""})
	if !sends() {
		t.Error("the list is not sent after the record lost it")
	}
	a.end(a.begin("m", "ch"), &memberResult{writer: a.writer, gen: 1, set: "s1"})
	// Another handle wrote it.
	a.end(a.begin("m", "ch"), &memberResult{writer: "other", gen: 9, set: "s1"})
	if !sends() {
		t.Error("the list is not sent after another handle wrote the record")
	}
	a.end(a.begin("m", "ch"), &memberResult{writer: a.writer, gen: 1, set: "s1"})
	// A new set, whose write fails: sent again next time.
	set("s2")
	w = a.begin("m", "ch")
	if w.args[3].([]string) == nil {
		t.Fatal("a new set is not sent")
	}
	a.end(w, nil)
	if !sends() {
		t.Error("the list is not sent again after the write that carried it failed")
	}
	// Two writes in flight: the newer (generation 2, s2) comes back first,
	// then the older (generation 1) reporting what the record held then.
	newer := a.begin("m", "ch")
	a.end(newer, &memberResult{writer: a.writer, gen: 2, set: "s2"})
	a.end(a.begin("m", "ch"), &memberResult{writer: a.writer, gen: 1, set: "s1"})
	if sends() {
		t.Error("an older result overrode a newer one")
	}
}

// TestLeaveWaitsForWritesInFlight: a Renew that carries the member's record
// and is held up (here behind a row lock) does not write the record again
// after Leave deleted it.
func TestLeaveWaitsForWritesInFlight(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	s.Announce(store.Member{ID: holderA.ID, Locks: []string{"JOB"}, LockSetID: "j"}, time.Minute)
	st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}
	tx, err := adminPool(t).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM "+s.table+" WHERE lock_name = 'JOB' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	renewed := make(chan error, 1)
	go func() {
		_, err := s.Renew(context.Background(), holderA.ID, []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}, time.Minute)
		renewed <- err
	}()
	waitUntil(t, "the Renew waits for the row lock", func() bool {
		var n int
		_ = adminPool(t).QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%'||$1||'%'`, s.table).Scan(&n)
		return n > 0
	})
	left := make(chan error, 1)
	go func() { left <- s.Leave(context.Background(), holderA.ID) }()
	select {
	case err := <-left:
		t.Fatalf("Leave returned (%v) while a write of the record was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-renewed; err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if err := <-left; err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if got, err := s.Members(t.Context(), store.MemberFilter{}); err != nil || len(got) != 0 {
		t.Fatalf("after Leave: members %+v, %v; want none", got, err)
	}
}

// TestLeaveBoundedByContext: Leave waiting for a write in flight gives up
// with its context.
func TestLeaveBoundedByContext(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)), WithCallTimeout(10*time.Second))
	s.Announce(store.Member{ID: holderA.ID, Locks: []string{"JOB"}, LockSetID: "j"}, time.Minute)
	st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := adminPool(t).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM "+s.table+" WHERE lock_name = 'JOB' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		_, _ = s.Renew(context.Background(), holderA.ID, []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}, time.Minute)
	}()
	waitUntil(t, "the write is in flight", func() bool {
		s.ann.mu.Lock()
		defer s.ann.mu.Unlock()
		return s.ann.m[holderA.ID] != nil && s.ann.m[holderA.ID].inflight > 0
	})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Leave(ctx, holderA.ID)
	if err == nil || !strings.Contains(err.Error(), "in flight") {
		t.Errorf("Leave behind a write in flight with a 200ms context = %v, want a timeout naming the write", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Leave returned after %v", d)
	}
	_ = tx.Rollback(t.Context())
	<-renewed
}

// TestNotifyPayloads: each change is pushed with its kind; a payload
// without a kind (a store of an older version) is a lease change of that
// lock; a 200-byte lock name fits.
func TestNotifyPayloads(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want store.Change
	}{
		{"lease\x1fJOB", store.Change{Kind: store.ChangeLease, Lock: "JOB"}},
		{"control\x1fa\x1fb", store.Change{Kind: store.ChangeControl, Lock: "a\x1fb"}},
		{"member\x1f", store.Change{Kind: store.ChangeMember}},
		{"JOB:1", store.Change{Kind: store.ChangeLease, Lock: "JOB:1"}},
		{"lease\x1eme\x1e7\x1e\x1fJOB", store.Change{Kind: store.ChangeLease, Lock: "JOB", Holder: "me", Token: 7}},
		{"lease\x1e\x1e0\x1eyou\x1fJOB", store.Change{Kind: store.ChangeLease, Lock: "JOB", ReservedFor: "you"}},
		{"lease\x1e\x1e0\x1e\x1fJOB", store.Change{Kind: store.ChangeLease, Lock: "JOB"}},
		// A token that does not parse, or a holder left out, says nothing.
		{"lease\x1eme\x1ex\x1e\x1fJOB", store.Change{Kind: store.ChangeLease, Lock: "JOB"}},
		{"lease\x1e\x1e7\x1e\x1fJOB", store.Change{Kind: store.ChangeLease, Lock: "JOB"}},
	} {
		if got := decodeChange(tc.in); got != tc.want {
			t.Errorf("decodeChange(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	s := openStore(t, WithSchema(newSchema(t)))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", store.MaxLockNameLen/2)
	st, err := s.Acquire(t.Context(), holderA, []string{long}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Change{Kind: store.ChangeLease, Lock: long, Holder: holderA.ID, Token: st[0].Token}
	if got := recv(t, sub, "the acquisition of a 200-byte name"); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// An instance id holding a separator cannot be said: the hint is left
	// out, not cut short.
	odd := store.Holder{ID: "odd\x1eid"}
	if err := s.Release(t.Context(), holderA.ID, []store.LeaseRef{{Lock: long, Token: st[0].Token, Successor: odd.ID, Reserve: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, sub, "a release reserved for an odd id"); got != (store.Change{Kind: store.ChangeLease, Lock: long}) {
		t.Errorf("got %+v, want a lease change without hints", got)
	}
	if _, err := s.Acquire(t.Context(), odd, []string{long}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, sub, "an acquisition by an odd id"); got != (store.Change{Kind: store.ChangeLease, Lock: long}) {
		t.Errorf("got %+v, want a lease change without hints", got)
	}
	if _, err := adminPool(t).Exec(t.Context(), "SELECT pg_notify($1, 'OLD-STYLE')", s.channel); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, sub, "an old-style notification"); got != (store.Change{Kind: store.ChangeLease, Lock: "OLD-STYLE"}) {
		t.Errorf("got %+v, want a lease change of OLD-STYLE", got)
	}
}

// TestReservedLockNotWrittenByOthersChecks: a follower's check of a lock
// reserved for another instance does not write its row, and the reserved
// successor takes it.
func TestReservedLockNotWrittenByOthersChecks(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	st, err := s.Acquire(t.Context(), holderA, []string{"RES"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatal(st, err)
	}
	if err := s.Release(t.Context(), holderA.ID, []store.LeaseRef{{Lock: "RES", Token: st[0].Token, Successor: holderB.ID, Reserve: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	xmin := func() string {
		var x string
		if err := adminPool(t).QueryRow(t.Context(), "SELECT xmin::text FROM "+s.table+" WHERE lock_name = 'RES'").Scan(&x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	before := xmin()
	got, err := s.Acquire(t.Context(), store.Holder{ID: "holder-c"}, []string{"RES"}, time.Minute)
	if err != nil || got[0].Acquired || got[0].ReservedFor != holderB.ID {
		t.Fatalf("another instance's Acquire of a reserved lock = %+v, %v", got, err)
	}
	if xmin() != before {
		t.Error("another instance's check of a reserved lock wrote its row")
	}
	got, err = s.Acquire(t.Context(), holderB, []string{"RES"}, time.Minute)
	if err != nil || !got[0].Acquired || got[0].PrevHolder != "" {
		t.Fatalf("the successor's Acquire = %+v, %v", got, err)
	}
}

// TestDocumentedGrantsSuffice: a role with exactly the grants schema.sql's
// header lists can do everything the store does at run time, on a schema a
// DBA applied: leases, hand-offs, members (with pruning), history and
// notifications.
func TestDocumentedGrantsSuffice(t *testing.T) {
	schema := newSchema(t)
	applySchemaSQL(t, schema, "masterjob_")
	role := newRole(t, schema)
	ctx := t.Context()
	var grants int
	for _, line := range strings.Split(schemaSQL, "\n") {
		g, ok := strings.CutPrefix(strings.TrimSpace(strings.TrimPrefix(line, "--")), "GRANT ")
		if !ok {
			continue
		}
		g = strings.ReplaceAll(strings.TrimSuffix(g, ";"), "myschema", pgx.Identifier{schema}.Sanitize())
		g = strings.TrimSuffix(g, " TO app") + " TO " + role
		if _, err := adminPool(t).Exec(ctx, "GRANT "+g); err != nil {
			t.Fatalf("GRANT %s: %v", g, err)
		}
		grants++
	}
	if grants != 6 {
		t.Fatalf("schema.sql lists %d grants, want 6", grants)
	}
	s := newStoreOn(t, rolePool(t, role), WithSchema(schema), WithoutMigrate())
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Announce(store.Member{ID: holderA.ID, Locks: []string{"G"}, LockSetID: "g"}, time.Minute)
	// B's record is written already expired: Members prunes it.
	s.Announce(store.Member{ID: holderB.ID, Locks: []string{"G"}, LockSetID: "g"}, 0)
	st, err := s.Acquire(ctx, holderA, []string{"G"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire as %s = %+v, %v", role, st, err)
	}
	if _, err := s.Acquire(ctx, holderB, []string{"G"}, time.Minute); err != nil {
		t.Fatalf("Acquire as %s: %v", role, err)
	}
	recv(t, sub, "a notification")
	ref := store.LeaseRef{Lock: "G", Token: st[0].Token}
	if _, err := s.Handoff(ctx, "G", holderB.ID, "ops"); err != nil {
		t.Fatalf("Handoff as %s: %v", role, err)
	}
	if _, err := s.Renew(ctx, holderA.ID, []store.LeaseRef{ref}, time.Minute); err != nil {
		t.Fatalf("Renew as %s: %v", role, err)
	}
	// A transfer gives the lock only to a live member: B's record, for
	// the transfer, then written expired again.
	s.Announce(store.Member{ID: holderB.ID, Locks: []string{"G"}, LockSetID: "g"}, time.Minute)
	if _, err := s.Acquire(ctx, holderB, []string{"G"}, time.Minute); err != nil {
		t.Fatalf("Acquire as %s: %v", role, err)
	}
	ref.Successor = holderB.ID
	if err := s.Transfer(ctx, holderA.ID, []store.LeaseRef{ref}, time.Minute); err != nil {
		t.Fatalf("Transfer as %s: %v", role, err)
	}
	s.Announce(store.Member{ID: holderB.ID, Locks: []string{"G"}, LockSetID: "g"}, 0)
	if got, err := s.Locks(ctx, "G"); err != nil || got[0].Holder != holderB.ID {
		t.Fatalf("Locks as %s after the transfer = %+v, %v", role, got, err)
	} else {
		ref = store.LeaseRef{Lock: "G", Token: got[0].Token}
	}
	if _, err := s.Renew(ctx, holderB.ID, []store.LeaseRef{ref}, time.Minute); err != nil {
		t.Fatalf("Renew as %s: %v", role, err)
	}
	ref.Successor, ref.Reserve = holderA.ID, time.Minute
	if err := s.Release(ctx, holderB.ID, []store.LeaseRef{ref}); err != nil {
		t.Fatalf("Release as %s: %v", role, err)
	}
	if ms, err := s.Members(ctx, store.MemberFilter{Lock: "G"}); err != nil || len(ms) != 1 {
		t.Fatalf("Members as %s = %+v, %v", role, ms, err)
	}
	for _, id := range []string{holderA.ID, holderB.ID} {
		if err := s.Leave(ctx, id); err != nil {
			t.Fatalf("Leave as %s: %v", role, err)
		}
	}
	if _, err := s.Disable(ctx, "G", "r", "ops"); err != nil {
		t.Fatalf("Disable as %s: %v", role, err)
	}
	if _, err := s.Enable(ctx, "G", "ops"); err != nil {
		t.Fatalf("Enable as %s: %v", role, err)
	}
	if err := s.AppendEvents(ctx, []store.Event{{Lock: "G", Kind: store.EventHandoff}}); err != nil {
		t.Fatalf("AppendEvents as %s: %v", role, err)
	}
	if _, err := s.Events(ctx, store.EventFilter{}); err != nil {
		t.Fatalf("Events as %s: %v", role, err)
	}
	var left int
	if err := adminPool(t).QueryRow(ctx, "SELECT count(*) FROM "+s.members).Scan(&left); err != nil || left != 0 {
		t.Errorf("member rows left after pruning and Leave: %d, %v", left, err)
	}
}

// TestReadsOnReadOnlyConnection: the reads (Locks, Members, Events) work on
// a read-only connection (a standby, or a role limited to reading); the
// writes fail there.
func TestReadsOnReadOnlyConnection(t *testing.T) {
	schema := newSchema(t)
	w := openStore(t, WithSchema(schema))
	w.Announce(store.Member{ID: holderA.ID, Locks: []string{"R"}, LockSetID: "r"}, time.Minute)
	w.Announce(store.Member{ID: holderB.ID, Locks: []string{"R"}, LockSetID: "r"}, 0) // expired at once
	for _, h := range []store.Holder{holderB, holderA} {
		if _, err := w.Acquire(t.Context(), h, []string{"R"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	pool := userPool(t, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on" })
	r := newStoreOn(t, pool, WithSchema(schema), WithoutMigrate())
	ms, err := r.Members(t.Context(), store.MemberFilter{Lock: "R", WithLocks: true})
	if err != nil || len(ms) != 1 || ms[0].ID != holderA.ID {
		t.Fatalf("Members on a read-only connection = %+v, %v; want only %s", ms, err, holderA.ID)
	}
	if _, err := r.Locks(t.Context()); err != nil {
		t.Fatalf("Locks on a read-only connection: %v", err)
	}
	if _, err := r.Events(t.Context(), store.EventFilter{}); err != nil {
		t.Fatalf("Events on a read-only connection: %v", err)
	}
	if _, err := r.Acquire(t.Context(), holderA, []string{"W"}, time.Minute); err == nil {
		t.Fatal("Acquire succeeded on a read-only connection: the test does not test")
	}
	var n int
	if err := adminPool(t).QueryRow(t.Context(), "SELECT count(*) FROM "+w.members).Scan(&n); err != nil || n != 1 {
		t.Errorf("member rows = %d, %v; want 1: A's write pruned B's expired row", n, err)
	}
}

// newRole creates a login role with no privilege, dropped (with what it
// was granted on schema) when t ends.
func newRole(t *testing.T, schema string) string {
	t.Helper()
	role := "mjtest_app_" + randomHex(4)
	if _, err := adminPool(t).Exec(t.Context(), "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, q := range []string{"REVOKE ALL ON ALL TABLES IN SCHEMA " + pgx.Identifier{schema}.Sanitize() + " FROM " + role,
			"REVOKE ALL ON ALL SEQUENCES IN SCHEMA " + pgx.Identifier{schema}.Sanitize() + " FROM " + role,
			"REVOKE ALL ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " FROM " + role,
			"DROP ROLE IF EXISTS " + role} {
			if _, err := adminPool(t).Exec(ctx, q); err != nil && !strings.Contains(err.Error(), "does not exist") {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	return role
}

// rolePool returns a pool that connects as role, closed when t ends.
func rolePool(t *testing.T, role string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestReadsWithAReadOnlyRole: a role that may only read the tables (a
// dashboard's, a status command's) reads the member list and the leases.
// Its connections prepare the hand-off's writes too, whose runs ahead of
// time the server refuses: that costs the reads nothing.
func TestReadsWithAReadOnlyRole(t *testing.T) {
	schema := newSchema(t)
	w := openStore(t, WithSchema(schema))
	w.Announce(store.Member{ID: holderA.ID, Locks: []string{"R"}, LockSetID: "r"}, time.Minute)
	if _, err := w.Acquire(t.Context(), holderA, []string{"R"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	role := newRole(t, schema)
	for _, g := range []string{"USAGE ON SCHEMA", "SELECT ON ALL TABLES IN SCHEMA"} {
		if _, err := adminPool(t).Exec(t.Context(), "GRANT "+g+" "+pgx.Identifier{schema}.Sanitize()+" TO "+role); err != nil {
			t.Fatal(err)
		}
	}
	r := newStoreOn(t, rolePool(t, role), WithSchema(schema), WithoutMigrate())
	for range 2 { // the second on a connection that has prepared
		ms, err := r.Members(t.Context(), store.MemberFilter{Lock: "R"})
		if err != nil || len(ms) != 1 || ms[0].ID != holderA.ID {
			t.Fatalf("Members as a reader = %+v, %v; want %s", ms, err, holderA.ID)
		}
		ls, err := r.Locks(t.Context(), "R")
		if err != nil || len(ls) != 1 || ls[0].Holder != holderA.ID {
			t.Fatalf("Locks as a reader = %+v, %v; want R held by %s", ls, err, holderA.ID)
		}
	}
	if err := r.Release(t.Context(), holderA.ID, []store.LeaseRef{{Lock: "R", Token: 1}}); err == nil {
		t.Fatal("Release succeeded as a reader: the test does not test")
	}
}

// TestAsyncCommitOnlyWhenNothingWritten: the statement that relaxes the
// commit of a member's refresh does so only when the lease statement
// before it wrote nothing (a check of locks others hold); an acquisition or
// a renewal keeps its synchronous commit.
func TestAsyncCommitOnlyWhenNothingWritten(t *testing.T) {
	// One connection: the last check reads the setting on the connection
	// the batches ran on.
	s := newStoreOn(t, userPool(t, func(c *pgxpool.Config) { c.MaxConns = 1 }), WithSchema(newSchema(t)))
	hour := micros(time.Hour)
	commitMode := func(sql string, args ...any) string {
		t.Helper()
		var mode string
		err := s.batch(t.Context(), []stmt{{sql, args}, {asyncIfUnwritten, nil}, {"SELECT current_setting('synchronous_commit')", nil}},
			func(i int, rows pgx.Rows) error {
				if i == 2 {
					var err error
					mode, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[string])
					return err
				}
				return discard(rows)
			})
		if err != nil {
			t.Fatal(err)
		}
		return mode
	}
	if got := commitMode(s.q.acquire, []string{"J"}, holderA.ID, "", hour, s.seq, s.channel); got != "on" {
		t.Errorf("commit of an acquisition: synchronous_commit=%s, want on", got)
	}
	var token int64
	if err := adminPool(t).QueryRow(t.Context(), "SELECT token FROM "+s.table+" WHERE lock_name = 'J'").Scan(&token); err != nil {
		t.Fatal(err)
	}
	if got := commitMode(s.q.renew, []string{"J"}, []int64{token}, holderA.ID, hour); got != "on" {
		t.Errorf("commit of a renewal: synchronous_commit=%s, want on", got)
	}
	if got := commitMode(s.q.acquire, []string{"J"}, holderB.ID, "", hour, s.seq, s.channel); got != "off" {
		t.Errorf("commit of a check that took nothing: synchronous_commit=%s, want off", got)
	}
	// And the setting ends with the transaction.
	var after string
	if err := s.pool.QueryRow(t.Context(), "SELECT current_setting('synchronous_commit')").Scan(&after); err != nil || after != "on" {
		t.Errorf("synchronous_commit after the batch = %q, %v; want on", after, err)
	}
}

// TestHandoffRequestBoundToItsLease: a request counts only for the lease it
// was made for, even when something that does not know the request (a
// store of an older version, an operator's UPDATE) replaces that lease.
func TestHandoffRequestBoundToItsLease(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	st, err := s.Acquire(t.Context(), holderA, []string{"H"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatal(st, err)
	}
	if _, err := s.Handoff(t.Context(), "H", holderB.ID, "ops"); err != nil {
		t.Fatal(err)
	}
	// A new lease written the way a version 3 store writes it: the
	// hand-off columns are left as they were.
	var token int64
	if err := adminPool(t).QueryRow(t.Context(), "UPDATE "+s.table+` SET holder = 'old-version', token = nextval($1::text::regclass),
		acquired_at = now(), renewed_at = now(), expires_at = now() + interval '1 minute' WHERE lock_name = 'H' RETURNING token`,
		s.seq).Scan(&token); err != nil {
		t.Fatal(err)
	}
	got, err := s.Locks(t.Context(), "H")
	if err != nil || got[0].HandoffRequested || got[0].HandoffTo != "" {
		t.Errorf("the lease of another holder shows the earlier lease's request: %+v, %v", got, err)
	}
	res, err := s.Renew(t.Context(), "old-version", []store.LeaseRef{{Lock: "H", Token: token}}, time.Minute)
	if err != nil || !res[0].Renewed || res[0].HandoffRequested {
		t.Errorf("renewal of the new lease = %+v, %v; want renewed without the earlier request", res, err)
	}
}

// TestTransferRows: one Transfer gives a lock (one token drawn, the
// predecessor recorded as ended, not expired, the successor's member info
// taken), releases a lock without a successor, and releases a revoked lease
// reserved for its successor; each is pushed as acquire and release push
// it, and the released rows draw no token.
func TestTransferRows(t *testing.T) {
	schema := newSchema(t)
	s := openStore(t, WithSchema(schema))
	b := openStore(t, WithSchema(schema))
	b.Announce(store.Member{ID: holderB.ID, Info: holderB.Info, Locks: []string{"GIVEN"}, LockSetID: "x"}, time.Minute)
	if _, err := b.Acquire(t.Context(), holderB, []string{"B-OWN"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st, err := s.Acquire(t.Context(), holderA, []string{"GIVEN", "FREED", "REVOKED"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]int64{}
	for _, x := range st {
		if !x.Acquired {
			t.Fatalf("%s not acquired: %+v", x.Lock, x)
		}
		tokens[x.Lock] = x.Token
	}
	if _, err := s.Handoff(t.Context(), "GIVEN", holderB.ID, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Disable(t.Context(), "REVOKED", "test", "ops"); err != nil {
		t.Fatal(err)
	}
	lastToken := func() int64 {
		var v int64
		if err := adminPool(t).QueryRow(t.Context(), "SELECT last_value FROM "+s.seq).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := lastToken()
	if err := s.Transfer(t.Context(), holderA.ID, []store.LeaseRef{
		{Lock: "GIVEN", Token: tokens["GIVEN"], Successor: holderB.ID, Reserve: time.Minute},
		{Lock: "FREED", Token: tokens["FREED"]},
		{Lock: "REVOKED", Token: tokens["REVOKED"], Successor: holderB.ID, Reserve: time.Minute},
	}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := lastToken(); after != before+1 {
		t.Errorf("the sequence went from %d to %d, want one token drawn (for the lock given)", before, after)
	}
	got, err := s.Locks(t.Context(), "FREED", "GIVEN", "REVOKED")
	if err != nil {
		t.Fatal(err)
	}
	given, freed, revoked := got[1], got[0], got[2]
	if given.Holder != holderB.ID || given.HolderInfo != holderB.Info || given.Token != before+1 || !given.Held() ||
		given.HandoffRequested || given.ReservedFor != "" || given.Revoked {
		t.Errorf("the lock given: %+v", given)
	}
	var prevHolder *string
	var prevToken int64
	if err := adminPool(t).QueryRow(t.Context(), "SELECT prev_holder, prev_token FROM "+s.table+" WHERE lock_name = 'GIVEN'").Scan(&prevHolder, &prevToken); err != nil {
		t.Fatal(err)
	}
	if prevHolder != nil || prevToken != tokens["GIVEN"] {
		t.Errorf("the lock given records prev_holder %v, prev_token %d; want NULL (ended, not expired) and %d", prevHolder, prevToken, tokens["GIVEN"])
	}
	if freed.Holder != "" || freed.Token != tokens["FREED"] || freed.ReservedFor != "" {
		t.Errorf("the lock released: %+v", freed)
	}
	if revoked.Holder != "" || revoked.Token != tokens["REVOKED"] || revoked.ReservedFor != holderB.ID || revoked.ReservedTTL <= 0 || !revoked.Disabled {
		t.Errorf("the revoked lease: %+v, want released and reserved for %s", revoked, holderB.ID)
	}
	want := map[string]store.Change{
		"GIVEN":   {Kind: store.ChangeLease, Lock: "GIVEN", Holder: holderB.ID, Token: given.Token},
		"FREED":   {Kind: store.ChangeLease, Lock: "FREED"},
		"REVOKED": {Kind: store.ChangeLease, Lock: "REVOKED", ReservedFor: holderB.ID},
	}
	for len(want) > 0 {
		c := recv(t, sub, "the transfer's pushes")
		if w, ok := want[c.Lock]; !ok || c != w {
			t.Errorf("pushed %+v, want one of %+v", c, want)
		}
		delete(want, c.Lock)
	}
}

func TestMayBeReadOnly(t *testing.T) {
	for _, tt := range []struct {
		name     string
		reported map[string]string
		readOnly bool
	}{
		{"PostgreSQL 14 or later, read-write", map[string]string{"default_transaction_read_only": "off", "in_hot_standby": "off"}, false},
		{"default_transaction_read_only on", map[string]string{"default_transaction_read_only": "on", "in_hot_standby": "off"}, true},
		{"a hot standby", map[string]string{"default_transaction_read_only": "off", "in_hot_standby": "on"}, true},
		{"before 14: nothing reported", map[string]string{}, true},
	} {
		if got := mayBeReadOnly(func(k string) string { return tt.reported[k] }); got != tt.readOnly {
			t.Errorf("%s: mayBeReadOnly = %v, want %v", tt.name, got, tt.readOnly)
		}
	}
}
