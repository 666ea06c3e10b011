package postgres

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/storetest"
)

// The tests run against a real server: MASTERJOB_TEST_POSTGRES, or a local
// default. Each test works in its own schema, dropped when it ends.
const defaultTestDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func testDSN() string {
	if dsn := os.Getenv("MASTERJOB_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return defaultTestDSN
}

var admin struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if admin.pool != nil {
		admin.pool.Close()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// adminPool returns a pool for the tests' own SQL. When the server cannot be
// reached the test is skipped, or fails when the CI environment variable is
// set: CI must not pass by skipping.
func adminPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	admin.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pool, err := pgxpool.New(ctx, testDSN())
		if err == nil {
			err = pool.Ping(ctx)
			if err != nil {
				pool.Close()
			}
		}
		if err != nil {
			admin.err = err
			return
		}
		admin.pool = pool
	})
	if admin.err != nil {
		msg := fmt.Sprintf("PostgreSQL not reachable at MASTERJOB_TEST_POSTGRES=%q: %v", testDSN(), admin.err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: the PostgreSQL tests must run)")
		}
		t.Skip(msg + " (set MASTERJOB_TEST_POSTGRES to a reachable server to run these tests)")
	}
	return admin.pool
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newSchema returns a fresh schema name (not created) that is dropped when
// the test ends.
func newSchema(t testing.TB) string {
	return newSchemaNamed(t, "mjtest_"+randomHex(6))
}

func newSchemaNamed(t testing.TB, schema string) string {
	t.Helper()
	pool := adminPool(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping schema %q: %v", schema, err)
		}
	})
	return schema
}

// openStore opens a Store with its own pool, closed when the test ends.
func openStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	adminPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, testDSN(), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// userPool returns a pool the test owns, configured by edit.
func userPool(t testing.TB, edit func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	adminPool(t)
	cfg, err := pgxpool.ParseConfig(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func newStoreOn(t testing.TB, pool *pgxpool.Pool, opts ...Option) *Store {
	t.Helper()
	s, err := New(t.Context(), pool, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// heldRefs returns the leases of states, which must all be acquired.
func heldRefs(t testing.TB, states []store.LockState) []store.LeaseRef {
	t.Helper()
	refs := make([]store.LeaseRef, 0, len(states))
	for _, st := range states {
		if !st.Acquired {
			t.Fatalf("%s not acquired", st.Lock)
		}
		refs = append(refs, store.LeaseRef{Lock: st.Lock, Token: st.Token})
	}
	return refs
}

var (
	holderA = store.Holder{ID: "holder-a", Info: `{"host":"a"}`}
	holderB = store.Holder{ID: "holder-b", Info: `{"host":"b"}`}
)

// historyLimit is the retention of the conformance suite's stores: above
// store.MaxEventsLimit, so that the suite checks the cap on Limit too.
const historyLimit = 1200

// TestConformance runs the conformance suite with prepared statements
// (pgx's default query mode) and without them (default_query_exec_mode=exec
// in the URL, as behind a pooler in transaction mode).
func TestConformance(t *testing.T) {
	adminPool(t)
	for _, mode := range []string{"", "exec"} {
		t.Run("mode="+cmp.Or(mode, "default"), func(t *testing.T) { testConformance(t, mode) })
	}
}

func testConformance(t *testing.T, mode string) {
	dsn := testDSN()
	if mode != "" && !strings.Contains(dsn, "://") {
		dsn += " default_query_exec_mode=" + mode // key=value form
	} else if mode != "" {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("default_query_exec_mode", mode)
		u.RawQuery = q.Encode()
		dsn = u.String()
	}
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		schema := newSchema(t)
		opts := []Option{WithSchema(schema), WithTablePrefix("mj_"), WithHistoryLimit(historyLimit)}
		table := pgx.Identifier{schema, "mj_locks"}.Sanitize()
		return storetest.Harness{
			Server: serverOf(t, dsn),
			OpenVia: func(t *testing.T, addr string) store.Store {
				s, err := Open(t.Context(), dsnVia(t, dsn, addr), opts...)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return s
			},
			Open: func(t *testing.T) store.Store {
				s, err := Open(t.Context(), dsn, opts...)
				if err == nil && s.prepares() != (mode == "") {
					t.Fatalf("prepared = %v with default_query_exec_mode=%q", s.prepares(), mode)
				}
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return s
			},
			DeleteRecords: func(t *testing.T, locks ...string) {
				_, err := adminPool(t).Exec(t.Context(), "DELETE FROM "+table+" WHERE lock_name = ANY($1)", locks)
				if err != nil {
					t.Fatalf("deleting records: %v", err)
				}
			},
			HistoryLimit: historyLimit,
			Hints:        true,
			ControlHints: true,
		}
	})
}

// serverOf returns the host:port that dsn connects to.
func serverOf(t *testing.T, dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// dsnVia returns dsn connecting to addr (host:port) instead.
func dsnVia(t *testing.T, dsn, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dsn, "://") {
		return dsn + " host=" + host + " port=" + port // the last of a key wins
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// TestConcurrentMigration opens the same new schema from four processes'
// worth of pools at once, several times: nobody may fail.
func TestConcurrentMigration(t *testing.T) {
	for round := range 5 {
		schema := newSchema(t)
		const n = 4
		stores := make([]*Store, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = Open(t.Context(), testDSN(), WithSchema(schema))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: Open %d of %d concurrent: %v", round, i, n, err)
			}
			t.Cleanup(func() { _ = stores[i].Close() })
		}
		// They all work on the same table.
		won := 0
		for i, s := range stores {
			st, err := s.Acquire(t.Context(), store.Holder{ID: fmt.Sprint("h", i)}, []string{"SHARED"}, time.Minute)
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if st[0].Acquired {
				won++
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d stores acquired the same lock", round, won)
		}
	}
}

// TestMigrateIsIdempotent reopens an existing schema: no DDL error.
func TestMigrateIsIdempotent(t *testing.T) {
	schema := newSchema(t)
	for range 3 {
		s := openStore(t, WithSchema(schema))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateAddsHistory: a schema made by version 1 (locks table and
// sequence, no history table, no version table) gets the history table when
// a Store opens it, and keeps its data; so does a schema whose history (or
// members) table was dropped although its version says it has one.
// WithoutMigrate refuses them, pointing to schema.sql.
func TestMigrateAddsHistory(t *testing.T) {
	for _, tc := range []struct {
		name, drop, want string
	}{
		{"version 1", "masterjob_history, masterjob_meta", `masterjob_history" missing`},
		{"history dropped at version 4", "masterjob_history", "schema version 4 recorded, but table"},
		{"members dropped at version 4", "masterjob_members", "schema version 4 recorded, but table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			schema := newSchema(t)
			s := openStore(t, WithSchema(schema))
			if _, err := s.Disable(t.Context(), "JOB", "kept", "ops"); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for _, table := range strings.Split(tc.drop, ", ") {
				if _, err := adminPool(t).Exec(t.Context(), "DROP TABLE "+pgx.Identifier{schema, table}.Sanitize()); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Open(t.Context(), testDSN(), WithSchema(schema), WithoutMigrate())
			if err == nil || !strings.Contains(err.Error(), "schema.sql") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open WithoutMigrate without %s = %v, want an error pointing to schema.sql and containing %q", tc.drop, err, tc.want)
			}
			if errors.Is(err, store.ErrNotInitialized) {
				t.Fatalf("Open WithoutMigrate without %s = %v: a store missing some objects is not uninitialized", tc.drop, err)
			}
			s = openStore(t, WithSchema(schema))
			if err := s.AppendEvents(t.Context(), []store.Event{{Lock: "JOB", Kind: store.EventEnabled}}); err != nil {
				t.Fatalf("AppendEvents after migration: %v", err)
			}
			if _, err := s.Members(t.Context(), store.MemberFilter{}); err != nil {
				t.Fatalf("Members after migration: %v", err)
			}
			if v := recordedVersion(t, schema, "masterjob_"); v != 4 {
				t.Errorf("schema version after migration = %d, want 4", v)
			}
			st, err := s.Locks(t.Context(), "JOB")
			if err != nil || !st[0].Disabled || st[0].Reason != "kept" {
				t.Fatalf("lock after migration: %+v, %v; want it still disabled", st, err)
			}
		})
	}
}

// TestHistoryPruneIsBounded: with many entries kept, an append deletes only
// the entries its batch pushed out.
func TestHistoryPruneIsBounded(t *testing.T) {
	schema := newSchema(t)
	s := openStore(t, WithSchema(schema), WithHistoryLimit(50))
	ev := func(n int) []store.Event {
		out := make([]store.Event, n)
		for i := range out {
			out[i] = store.Event{Lock: "JOB", Kind: store.EventAcquired, Token: int64(i)}
		}
		return out
	}
	for range 3 {
		if err := s.AppendEvents(t.Context(), ev(40)); err != nil {
			t.Fatal(err)
		}
	}
	var n, lo, hi int64
	err := adminPool(t).QueryRow(t.Context(), "SELECT count(*), min(id), max(id) FROM "+
		pgx.Identifier{schema, "masterjob_history"}.Sanitize()).Scan(&n, &lo, &hi)
	if err != nil {
		t.Fatal(err)
	}
	if n != 50 || lo != 71 || hi != 120 {
		t.Errorf("history holds %d rows, ids %d..%d; want 50, 71..120", n, lo, hi)
	}
}

// TestWithoutMigrate: without the objects Open fails clearly; once a DBA
// applied schema.sql as documented, Open succeeds and creates nothing.
func TestWithoutMigrate(t *testing.T) {
	schema := newSchema(t)
	_, err := Open(t.Context(), testDSN(), WithSchema(schema), WithoutMigrate())
	if err == nil || !strings.Contains(err.Error(), "schema.sql") || !errors.Is(err, store.ErrNotInitialized) {
		t.Fatalf("Open WithoutMigrate on an empty schema = %v, want store.ErrNotInitialized pointing to schema.sql", err)
	}
	var exists bool
	if err := adminPool(t).QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("Open WithoutMigrate created the schema")
	}

	// What a DBA does, following schema.sql's header.
	applySchemaSQL(t, schema, "dba_")

	s := openStore(t, WithSchema(schema), WithTablePrefix("dba_"), WithoutMigrate())
	st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired || st[0].Token <= 0 {
		t.Fatalf("Acquire on a DBA-made schema = %+v, %v", st, err)
	}
}

func applySchemaSQL(t *testing.T, schema, prefix string) {
	t.Helper()
	applySQLFile(t, schema, prefix, schemaSQL)
}

// applySQLFile runs a schema file as schema.sql's header tells a DBA to.
func applySQLFile(t *testing.T, schema, prefix, file string) {
	t.Helper()
	ctx := t.Context()
	conn, err := adminPool(t).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	id := pgx.Identifier{schema}.Sanitize()
	sql := "BEGIN; CREATE SCHEMA IF NOT EXISTS " + id + "; SET LOCAL search_path TO " + id + ";\n" +
		strings.ReplaceAll(file, "{{prefix}}", prefix) + "\nCOMMIT;"
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("applying schema.sql: %v", err)
	}
}

// TestDefaultSchemaUsesSearchPath: without WithSchema the objects live in the
// connection's search_path.
func TestDefaultSchemaUsesSearchPath(t *testing.T) {
	schema := newSchema(t)
	if _, err := adminPool(t).Exec(t.Context(), "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	pool := userPool(t, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["search_path"] = schema })
	s := newStoreOn(t, pool)
	if _, err := s.Disable(t.Context(), "JOB", "why", "me"); err != nil {
		t.Fatal(err)
	}
	var n int
	err := adminPool(t).QueryRow(t.Context(),
		"SELECT count(*) FROM "+pgx.Identifier{schema, "masterjob_locks"}.Sanitize()+" WHERE disabled").Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("rows in %s.masterjob_locks = %d, %v; want 1", schema, n, err)
	}
}

// TestNewLeavesPoolOpen: Close of a Store made by New does not close the
// user's pool; Close of a Store made by Open closes its own.
func TestNewLeavesPoolOpen(t *testing.T) {
	schema := newSchema(t)
	pool := userPool(t, nil)
	s := newStoreOn(t, pool, WithSchema(schema))
	if _, err := s.Locks(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatalf("user's pool after Store.Close: %v", err)
	}
	if _, err := s.Locks(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Locks after Close = %v, want ErrClosed", err)
	}

	own := openStore(t, WithSchema(schema))
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}
	if err := own.pool.Ping(t.Context()); err == nil {
		t.Fatal("Open's pool still usable after Close")
	}
	if err := own.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestIsolation: stores in different schemas, or with different prefixes in
// one schema, share neither locks, controls nor notifications.
func TestIsolation(t *testing.T) {
	s1, s2 := newSchema(t), newSchema(t)
	stores := []*Store{
		openStore(t, WithSchema(s1)),
		openStore(t, WithSchema(s2)),
		openStore(t, WithSchema(s1), WithTablePrefix("other_")),
	}
	subs := make([]<-chan store.Change, len(stores))
	for i, s := range stores {
		st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
		if err != nil || !st[0].Acquired {
			t.Fatalf("store %d: Acquire = %+v, %v; want acquired", i, st, err)
		}
		subs[i], err = s.Subscribe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stores[0].Disable(t.Context(), "JOB", "isolation", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-subs[0]:
		if c.Lock != "JOB" {
			t.Fatalf("notification %+v, want JOB", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification on the disabled store's channel")
	}
	for i, s := range stores[1:] {
		got, err := s.Locks(t.Context(), "JOB")
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Disabled || got[0].Revoked {
			t.Errorf("store %d sees another namespace's disable: %+v", i+1, got[0])
		}
	}
	select {
	case c := <-subs[1]:
		t.Errorf("other schema notified of %+v", c)
	case c := <-subs[2]:
		t.Errorf("other prefix notified of %+v", c)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestHostileNames: names and values that look like SQL are stored and
// returned verbatim; schema names are quoted.
func TestHostileNames(t *testing.T) {
	schema := newSchemaNamed(t, `mj "evil"; DROP TABLE x; -- `+randomHex(4))
	s := openStore(t, WithSchema(schema))
	names := []string{
		`x'); DROP TABLE masterjob_locks; --`,
		`"; DROP SCHEMA public CASCADE; --`,
		`Robert'); DELETE FROM masterjob_locks WHERE ('1'='1`,
		`$1`, `%s %d %v`, `\x00`, `'`, `"`, `\`, `ünïcödé ✓`, `a b`,
		`NULL`, `null`, `{a,b}`, ` padded `, `a,b`, `"quoted"`, `{`, `}`,
	}
	// The member's record goes with Acquire, its parameters encoded by
	// the store (arrays as text literals): the names come back verbatim.
	hostile := store.Holder{ID: `h'; --`, Info: `{"x":"'); DROP"}`}
	s.Announce(store.Member{ID: hostile.ID, Info: hostile.Info, Locks: names, LockSetID: `set'--`}, time.Minute)
	got, err := s.Acquire(t.Context(), hostile, names, time.Minute)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	members, err := s.Members(t.Context(), store.MemberFilter{Lock: `NULL`, WithLocks: true})
	if err != nil || len(members) != 1 || members[0].ID != hostile.ID || members[0].LockSetID != `set'--` {
		t.Fatalf("Members = %+v, %v", members, err)
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	if !slices.Equal(members[0].Locks, sorted) {
		t.Errorf("member's locks %q, want %q", members[0].Locks, sorted)
	}
	for _, st := range got {
		if !st.Acquired || st.Holder != `h'; --` || st.HolderInfo != `{"x":"'); DROP"}` {
			t.Errorf("state %+v, want acquired by the hostile holder", st)
		}
	}
	reason := `'); UPDATE masterjob_locks SET disabled = false; --`
	if ch, err := s.Disable(t.Context(), names[0], reason, `by'--`); err != nil || ch.State.Reason != reason || ch.State.ChangedBy != `by'--` {
		t.Fatalf("Disable = %+v, %v", ch, err)
	}
	all, err := s.Locks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	var gotNames []string
	for _, st := range all {
		gotNames = append(gotNames, st.Lock)
	}
	if !slices.Equal(gotNames, want) {
		t.Fatalf("Locks() = %q, want %q", gotNames, want)
	}
	// The notification channel of a hostile schema works too.
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enable(t.Context(), names[0], "me"); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-sub:
		if n.Lock != names[0] {
			t.Fatalf("notification %+v, want %q", n, names[0])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
}

// TestOutageAndRecovery cuts the network between the store and the server:
// calls fail fast with ErrUnavailable, then everything recovers, the
// subscription included, without reopening.
func TestOutageAndRecovery(t *testing.T) {
	schema := newSchema(t)
	px := newProxy(t)
	pool := userPool(t, func(c *pgxpool.Config) {
		host, port, _ := net.SplitHostPort(px.addr)
		c.ConnConfig.Host = host
		fmt.Sscan(port, &c.ConnConfig.Port)
		c.ConnConfig.ConnectTimeout = time.Second
	})
	s := newStoreOn(t, pool, WithSchema(schema), WithCallTimeout(time.Second))
	pids := make(chan uint32, 100)
	s.onListen = func(pid uint32) { pids <- pid }
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	recv(t, pids, "first LISTEN")
	st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}

	px.down()
	start := time.Now()
	_, err = s.Renew(t.Context(), holderA.ID, []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Renew during the outage = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Renew during the outage took %v, want about the call timeout (1s)", d)
	}
	t.Logf("during the outage: %v", err)
	if _, err := s.Locks(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Locks during the outage = %v, want ErrUnavailable", err)
	}

	px.up()
	waitUntil(t, "Renew succeeds after the outage", func() bool {
		res, err := s.Renew(t.Context(), holderA.ID, []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}, time.Minute)
		return err == nil && res[0].Renewed
	})
	recv(t, pids, "LISTEN after the outage")
	expectResync(t, sub, "resync after the outage")
	if _, err := s.Disable(t.Context(), "JOB", "after outage", "test"); err != nil {
		t.Fatal(err)
	}
	expectChange(t, sub, store.ChangeControl, "JOB")
}

// TestListenDetectsSilentConnection: a LISTEN connection that stops
// answering (a network that drops packets without closing anything) is
// detected by the ping after listenPing of silence and replaced.
func TestListenDetectsSilentConnection(t *testing.T) {
	schema := newSchema(t)
	px := newProxy(t)
	pool := userPool(t, func(c *pgxpool.Config) {
		host, port, _ := net.SplitHostPort(px.addr)
		c.ConnConfig.Host = host
		fmt.Sscan(port, &c.ConnConfig.Port)
		c.ConnConfig.ConnectTimeout = time.Second
	})
	s := newStoreOn(t, pool, WithSchema(schema), WithCallTimeout(500*time.Millisecond))
	s.listenPing = 200 * time.Millisecond
	pids := make(chan uint32, 100)
	s.onListen = func(pid uint32) { pids <- pid }
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	first := recv(t, pids, "first LISTEN")

	// Silence alone (several ping intervals) keeps the connection.
	time.Sleep(time.Second)
	select {
	case pid := <-pids:
		t.Fatalf("healthy but idle LISTEN connection replaced (new backend %d)", pid)
	default:
	}
	other := openStore(t, WithSchema(schema))
	if _, err := other.Disable(t.Context(), "IDLE", "r", "b"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, sub, "notification after idle pings").Lock; got != "IDLE" {
		t.Fatalf("got %q, want IDLE", got)
	}

	px.frozen.Store(true)
	time.Sleep(1500 * time.Millisecond) // ping interval + ping timeout, and some failed reconnects
	px.frozen.Store(false)
	second := recv(t, pids, "LISTEN after the silent outage")
	if second == first {
		t.Fatalf("still on backend %d", first)
	}
	if got := recv(t, sub, "resync after the silent outage"); got.Kind != store.ChangeResync {
		t.Fatalf("first change after the silent outage: %+v, want a resync", got)
	}
	if _, err := other.Disable(t.Context(), "AFTER-SILENCE", "r", "b"); err != nil {
		t.Fatal(err)
	}
	expectChange(t, sub, store.ChangeControl, "AFTER-SILENCE")
}

// TestListenPingsAlongWithCalls: a LISTEN connection quiet for two thirds
// of listenPing is pinged beside the next renewal (or check, or read of
// the member list), so that an idle instance wakes once for both; a call
// before that does not ping it; and with no call the ping still comes
// once the silence reaches listenPing.
func TestListenPingsAlongWithCalls(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	s.listenPing = 3 * time.Second // pinged along after 2 s of quiet
	type ping struct {
		cause, err error
		at         time.Time
	}
	pings := make(chan ping, 10)
	s.onPing = func(cause, err error) { pings <- ping{cause, err, time.Now()} }
	if _, err := s.Subscribe(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := s.Acquire(t.Context(), holderA, []string{"ALONG"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	refs := []store.LeaseRef{{Lock: "ALONG", Token: st[0].Token}}
	renew := func() {
		t.Helper()
		if _, err := s.Renew(t.Context(), holderA.ID, refs, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	renew() // quiet for 1 s: no ping
	time.Sleep(1300 * time.Millisecond)
	select {
	case p := <-pings:
		t.Fatalf("pinged %v after subscribing (cause %v), before any call asked", p.at, p.cause)
	default:
	}
	renewed := time.Now()
	renew() // quiet for 2.3 s: pinged along
	p := recv(t, pings, "a ping beside the renewal")
	if !errors.Is(p.cause, errPingAlong) || p.err != nil {
		t.Fatalf("ping %v after the renewal: cause %v, result %v; want one asked by the renewal, answered", p.at.Sub(renewed), p.cause, p.err)
	}
	// No call: the ping comes after listenPing of silence.
	p = recv(t, pings, "a ping after silence")
	if !errors.Is(p.cause, context.DeadlineExceeded) || p.err != nil {
		t.Fatalf("ping with no call: cause %v, result %v; want the silence's, answered", p.cause, p.err)
	}
}

// TestFollowerCheckWritesNothing: Acquire of locks held by others, the
// followers' periodic check, does not write their rows.
func TestFollowerCheckWritesNothing(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprint("HELD-", i)
	}
	if _, err := s.Acquire(t.Context(), holderA, names, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Disable(t.Context(), "OFF", "r", "b"); err != nil {
		t.Fatal(err)
	}
	versions := func() map[string]string {
		rows, err := adminPool(t).Query(t.Context(), "SELECT lock_name, xmin::text FROM "+s.table)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for rows.Next() {
			var n, x string
			if err := rows.Scan(&n, &x); err != nil {
				t.Fatal(err)
			}
			m[n] = x
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	before := versions()
	for range 3 {
		got, err := s.Acquire(t.Context(), holderB, append(names, "OFF"), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range got {
			if st.Acquired {
				t.Fatalf("%s acquired by a follower", st.Lock)
			}
		}
	}
	if after := versions(); !maps.Equal(before, after) {
		t.Error("a follower's Acquire of held and disabled locks wrote their rows")
	}
}

// TestUnavailableOnOpen: a server that cannot be reached is ErrUnavailable.
func TestUnavailableOnOpen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = Open(t.Context(), "postgres://postgres@"+addr+"/test?sslmode=disable&connect_timeout=2")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open of a closed port = %v, want ErrUnavailable", err)
	}
}

// TestCallTimeoutBoundsStarvation: a renewal on a pool the application has
// exhausted, or behind a row lock, returns ErrUnavailable after the call
// timeout instead of waiting.
func TestCallTimeoutBoundsStarvation(t *testing.T) {
	schema := newSchema(t)
	pool := userPool(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	s := newStoreOn(t, pool, WithSchema(schema), WithCallTimeout(300*time.Millisecond))
	st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}
	refs := []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}

	// The application holds the pool's only connection.
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Renew(t.Context(), holderA.ID, refs, time.Minute)
	d := time.Since(start)
	conn.Release()
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Renew on an exhausted pool = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("Renew on an exhausted pool returned after %v, want about 300ms", d)
	}

	// Someone holds the row locked.
	tx, err := adminPool(t).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM "+s.table+" WHERE lock_name = 'JOB' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = s.Renew(t.Context(), holderA.ID, refs, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Renew behind a row lock = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Renew behind a row lock returned after %v, want about 300ms", d)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "Renew works again", func() bool {
		res, err := s.Renew(t.Context(), holderA.ID, refs, time.Minute)
		return err == nil && res[0].Renewed
	})

	// A caller's shorter deadline wins over the call timeout.
	slow := newStoreOn(t, pool, WithSchema(schema), WithCallTimeout(time.Hour))
	tx2, err := adminPool(t).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(context.Background())
	if _, err := tx2.Exec(t.Context(), "SELECT 1 FROM "+s.table+" WHERE lock_name = 'JOB' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = slow.Renew(ctx, holderA.ID, refs, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Renew with a caller deadline = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("caller deadline ignored: returned after %v", d)
	}
}

// TestCancelledCallIsNotUnavailable: a caller that cancels gets its
// context's error, not ErrUnavailable.
func TestCancelledCallIsNotUnavailable(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	tx, err := adminPool(t).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := s.Disable(t.Context(), "JOB", "r", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM "+s.table+" WHERE lock_name = 'JOB' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = s.Enable(ctx, "JOB", "me")
	if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Enable cancelled by its caller = %v, want context.Canceled and not ErrUnavailable", err)
	}
}

// TestOneRoundTripPerBatch: Acquire, Renew, Release, Locks and the other
// calls of 1000 locks each send one request (one Sync on the wire). With
// prepared statements (pgx's default query mode), a connection's first
// call with a statement it runs again and again adds one request that
// prepares the store's statements, and from then on the hand-off's
// statements are run prepared too (no Parse); with
// default_query_exec_mode=exec, none is prepared. pg_stat_statements is
// not preloaded on the test server and is shared by every test, so the
// test counts on the client side.
func TestOneRoundTripPerBatch(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) { testOneRoundTripPerBatch(t, mode) })
	}
}

func testOneRoundTripPerBatch(t *testing.T, mode pgx.QueryExecMode) {
	w := &wire{}
	var allPrepares atomic.Int64
	pool := userPool(t, func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
		c.ConnConfig.DefaultQueryExecMode = mode
		c.ConnConfig.DialFunc = w.dial
	})
	s := newStoreOn(t, pool, WithSchema(newSchema(t)))
	prepared := mode == pgx.QueryExecModeCacheStatement
	if s.prepares() != prepared {
		t.Fatalf("prepared = %v in query mode %v, want %v", s.prepares(), mode, prepared)
	}
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("LOCK-%04d", i)
	}
	// measure runs fn; a hand-off's call (runsPrepared) on a store that
	// prepares must send no Parse once the connection has prepared.
	measure := func(what string, runsPrepared bool, fn func() error) {
		t.Helper()
		start := time.Now()
		rt, _ := w.measure(t, what, fn)
		d := time.Since(start)
		p := w.prepares.Load()
		allPrepares.Add(p)
		if rt != 1 || p > 1 {
			t.Errorf("%s: %d requests and %d that prepared, want 1 and at most 1", what, rt, p)
		}
		if n := w.parses.Load(); prepared && runsPrepared && n != 0 {
			t.Errorf("%s: %d statements parsed at the call, want them prepared", what, n)
		}
		t.Logf("%s: one round trip (and %d to prepare), %v", what, p, d)
	}
	defer func() {
		switch n := allPrepares.Load(); {
		case !prepared && n != 0:
			t.Errorf("%d preparations in exec mode", n)
		case prepared && n != 1:
			t.Errorf("%d preparations in the statement cache's mode, want 1 on the one connection", n)
		}
	}()

	var states []store.LockState
	measure("Acquire of 1000 locks", true, func() (err error) {
		states, err = s.Acquire(t.Context(), holderA, names, time.Minute)
		return err
	})
	refs := heldRefs(t, states)
	measure("Acquire by another holder of 1000 locks", true, func() error {
		states, err := s.Acquire(t.Context(), holderB, names, time.Minute)
		for _, st := range states {
			if st.Acquired {
				return fmt.Errorf("%s acquired twice", st.Lock)
			}
		}
		return err
	})
	if n := w.prepares.Load(); n != 0 {
		t.Errorf("the second Acquire prepared again (%d): the connection had prepared the statements", n)
	}
	measure("Renew of 1000 locks", true, func() error {
		res, err := s.Renew(t.Context(), holderA.ID, refs, time.Minute)
		for _, r := range res {
			if !r.Renewed {
				return fmt.Errorf("%s not renewed", r.Lock)
			}
		}
		return err
	})
	measure("Locks of 1000 locks", true, func() error {
		got, err := s.Locks(t.Context(), names...)
		if len(got) != len(names) {
			return fmt.Errorf("%d states, %v", len(got), err)
		}
		return err
	})
	for i := range refs {
		refs[i].Successor = holderB.ID
	}
	s.Announce(store.Member{ID: holderB.ID}, time.Hour) // B may be given the locks only as a live member
	if _, err := s.Acquire(t.Context(), holderB, []string{"MEMBER-B"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	measure("Transfer of 1000 locks", true, func() error { return s.Transfer(t.Context(), holderA.ID, refs, time.Minute) })
	states, err := s.Locks(t.Context(), names...)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range states {
		if st.Holder != holderB.ID || st.Token <= refs[i].Token {
			t.Fatalf("after the transfer: %+v", st)
		}
		refs[i] = store.LeaseRef{Lock: st.Lock, Token: st.Token}
	}
	measure("Release of 1000 locks", true, func() error { return s.Release(t.Context(), holderB.ID, refs) })

	events := make([]store.Event, len(names))
	for i, n := range names {
		events[i] = store.Event{Lock: n, Kind: store.EventReleased, Instance: holderB.ID, Token: refs[i].Token, Reason: "shutdown"}
	}
	measure("AppendEvents of 1000 locks", false, func() error { return s.AppendEvents(t.Context(), events) })
	measure("Events (1000)", false, func() error {
		got, err := s.Events(t.Context(), store.EventFilter{Limit: store.MaxEventsLimit})
		if len(got) != len(events) {
			return fmt.Errorf("%d events, %v", len(got), err)
		}
		return err
	})

	// Hand-off and members (their writes with Acquire and Renew are
	// counted in TestMemberWriteOneRoundTrip).
	states, err = s.Acquire(t.Context(), holderA, names[:1], time.Minute)
	if err != nil || !states[0].Acquired {
		t.Fatalf("Acquire = %+v, %v", states, err)
	}
	measure("Handoff of one lock", false, func() error {
		_, err := s.Handoff(t.Context(), names[0], holderB.ID, "ops")
		return err
	})
	s.Announce(store.Member{ID: holderA.ID, Locks: names, LockSetID: "all"}, time.Minute)
	if _, err := s.Acquire(t.Context(), holderA, names[:1], time.Minute); err != nil {
		t.Fatal(err)
	}
	measure("Members of a lock, with 1000 locks each", true, func() error {
		got, err := s.Members(t.Context(), store.MemberFilter{Lock: names[999], WithLocks: true})
		if len(got) != 1 || len(got[0].Locks) != len(names) {
			return fmt.Errorf("members %+v, %v", got, err)
		}
		return err
	})
	measure("Leave of a member of 1000 locks", false, func() error { return s.Leave(t.Context(), holderA.ID) })
}

// TestTokensGrowAcrossDeletedRowsAndSequence: tokens come from the
// sequence, which nothing resets.
func TestTokensGrowAcrossDeletedRows(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	var last int64
	for i := range 5 {
		st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
		if err != nil || !st[0].Acquired {
			t.Fatalf("round %d: %+v %v", i, st, err)
		}
		if st[0].Token <= last {
			t.Fatalf("round %d: token %d after %d", i, st[0].Token, last)
		}
		last = st[0].Token
		if _, err := adminPool(t).Exec(t.Context(), "DELETE FROM "+s.table); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDisableVersusAcquireRace races Disable and Acquire on fresh locks:
// whichever wins, a disabled lock is never held by an unrevoked lease.
func TestDisableVersusAcquireRace(t *testing.T) {
	schema := newSchema(t)
	s1, s2 := openStore(t, WithSchema(schema)), openStore(t, WithSchema(schema))
	for i := range 50 {
		lock := fmt.Sprint("RACE-", i)
		var wg sync.WaitGroup
		var aerr, derr error
		wg.Go(func() { _, aerr = s1.Acquire(t.Context(), holderA, []string{lock}, time.Minute) })
		wg.Go(func() { _, derr = s2.Disable(t.Context(), lock, "race", "test") })
		wg.Wait()
		if aerr != nil || derr != nil {
			t.Fatalf("acquire: %v, disable: %v", aerr, derr)
		}
		st, err := s1.Locks(t.Context(), lock)
		if err != nil {
			t.Fatal(err)
		}
		if !st[0].Disabled || (st[0].Held() && !st[0].Revoked) {
			t.Fatalf("after the race: %+v", st[0])
		}
	}
}

// TestSubscribeEndsWithStore: Close ends subscriptions and their goroutines.
func TestSubscribeEndsWithStore(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	subs := make([]<-chan store.Change, 3)
	for i := range subs {
		var err error
		if subs[i], err = s.Subscribe(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		waitClosed(t, sub)
	}
	if _, err := s.Subscribe(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

// TestSlowSubscriberCoalesces: a subscriber that does not read does not
// block the store; a repeated change (same kind, same lock) waits once,
// changes of different kinds each wait.
func TestSlowSubscriberCoalesces(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		for _, l := range []string{"A", "B"} {
			if _, err := s.Disable(t.Context(), l, "r", "b"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Enable(t.Context(), l, "b"); err != nil {
				t.Fatal(err)
			}
			st, err := s.Acquire(t.Context(), holderA, []string{l}, time.Minute)
			if err != nil || !st[0].Acquired {
				t.Fatalf("Acquire = %+v, %v", st, err)
			}
			if err := s.Release(t.Context(), holderA.ID, []store.LeaseRef{{Lock: l, Token: st[0].Token}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Let the notifications arrive before reading any of them.
	time.Sleep(300 * time.Millisecond)
	// Counted by kind and lock: an acquisition's hints (its holder and
	// token) make each push distinct, and a push merged with a pending one
	// loses them.
	got := map[store.Change]int{}
	timeout := time.After(2 * time.Second)
	for len(got) < 4 {
		select {
		case n := <-sub:
			got[store.Change{Kind: n.Kind, Lock: n.Lock}]++
		case <-timeout:
			t.Fatalf("got %v, want lease and control changes of A and B", got)
		}
	}
	select {
	case n := <-sub:
		got[store.Change{Kind: n.Kind, Lock: n.Lock}]++
	case <-time.After(300 * time.Millisecond):
	}
	for c, n := range got {
		if n > 2 {
			t.Errorf("%d deliveries of %+v (all: %v): pending changes were not coalesced", n, c, got)
		}
	}
	for _, k := range []store.ChangeKind{store.ChangeLease, store.ChangeControl} {
		for _, l := range []string{"A", "B"} {
			if got[store.Change{Kind: k, Lock: l}] == 0 {
				t.Errorf("no %s change of %s delivered (all: %v)", k, l, got)
			}
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, opt := range map[string]Option{
		"prefix upper case": WithTablePrefix("Bad"),
		"prefix quote":      WithTablePrefix(`a"b`),
		"prefix too long":   WithTablePrefix(strings.Repeat("a", 41)),
		"schema too long":   WithSchema(strings.Repeat("s", 64)),
		"schema NUL":        WithSchema("a\x00b"),
		"timeout zero":      WithCallTimeout(0),
		"timeout negative":  WithCallTimeout(-time.Second),
		"history limit 0":   WithHistoryLimit(0),
	} {
		if _, err := Open(t.Context(), "postgres://127.0.0.1:1/x", opt); err == nil || !strings.Contains(err.Error(), "invalid option") {
			t.Errorf("%s: Open = %v, want an invalid option error", name, err)
		}
	}
}

func TestChannelName(t *testing.T) {
	if got := channelName("", "masterjob_"); got != "masterjob_locks" {
		t.Errorf("channelName(\"\", masterjob_) = %q", got)
	}
	if got := channelName("tenant1", "mj_"); got != "tenant1.mj_locks" {
		t.Errorf("channelName(tenant1, mj_) = %q", got)
	}
	a, b := channelName(strings.Repeat("s", 63), "a_"), channelName(strings.Repeat("s", 63), "b_")
	if len(a) > maxIdentifierLen || a == b {
		t.Errorf("long channel names %q, %q: want distinct and at most 63 bytes", a, b)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("channel closed waiting for %s", what)
		}
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

func waitClosed(t *testing.T, ch <-chan store.Change) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("subscription channel not closed")
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy forwards TCP connections to the test server and can cut them all,
// simulating a network outage.
type proxy struct {
	t      *testing.T
	target string
	addr   string

	frozen atomic.Bool // while set, bytes are swallowed: a silent network

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t *testing.T) *proxy {
	cfg, err := pgx.ParseConfig(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = struct{}{}, struct{}{}
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer dst.Close()
				defer src.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 && !p.frozen.Load() {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			p.wg.Go(func() { pipe(u, c) })
			p.wg.Go(func() { pipe(c, u) })
		}
	})
}

// down stops accepting and cuts every open connection.
func (p *proxy) down() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestLostPreparedStatementsNamed: when the server no longer knows the
// statements a connection prepared (what a pooler in transaction mode
// without prepared statement support causes, or a DISCARD ALL on a shared
// pool's connection), a call fails with an error that says what to put in
// the URL, and the connection's next call prepares them again.
func TestLostPreparedStatementsNamed(t *testing.T) {
	pool := userPool(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	s := newStoreOn(t, pool, WithSchema(newSchema(t)))
	if !s.prepares() {
		t.Fatal("the store does not prepare its statements on a pool in pgx's default mode")
	}
	if _, err := s.Acquire(t.Context(), holderA, []string{"J"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Behind the connection's back, as another server connection would be.
	err = conn.Conn().PgConn().Exec(t.Context(), "DEALLOCATE ALL").Close()
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(t.Context(), holderB, []string{"J"}, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "default_query_exec_mode=exec") {
		t.Fatalf("Acquire after the server forgot the prepared statements: %v; want the hint", err)
	}
	// The connection forgot them too: its next call prepares them again.
	st, err := s.Acquire(t.Context(), holderB, []string{"J"}, time.Minute)
	if err != nil || st[0].Acquired || st[0].Holder != holderA.ID {
		t.Fatalf("the next Acquire: %+v, %v; want it answered (J held by %s)", st, err, holderA.ID)
	}
}

// TestLargeBatchesRepeated: after five calls with the same statement, the
// server may settle on a plan made without the parameters (a generic plan,
// which assumes a short array) if it looks no dearer than the plans made
// for them; after five renewals of 10,000 leases it did, and the sixth did
// not end within the call timeout. A call with a long array is planned for
// its own parameters (see batch).
func TestLargeBatchesRepeated(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	names := lockNames("BIG", 10000)
	states, err := s.Acquire(t.Context(), holderA, names, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	refs := heldRefs(t, states)
	for i := range 8 {
		res, err := s.Renew(t.Context(), holderA.ID, refs, time.Minute)
		if err != nil {
			t.Fatalf("Renew %d of 10,000 leases: %v", i+1, err)
		}
		if len(res) != len(refs) || !res[len(res)-1].Renewed {
			t.Fatalf("Renew %d of 10,000 leases: %d results", i+1, len(res))
		}
	}
}

// TestPreparationNeverDelaysAHandOff: a connection that has not prepared
// (a new one) runs a hand-off's read, transfer or release unprepared, in
// its one round trip; its first acquisition prepares every statement, the
// hand-off's with them and with their generic plans, in one more, and the
// hand-off's statements then run with those plans; a connection whose
// marks were lost while the server kept its statements (a pooler's server
// connection) prepares them again without an error.
func TestPreparationNeverDelaysAHandOff(t *testing.T) {
	w := &wire{}
	s := countedStore(t, newSchema(t), w)
	if !s.prepares() {
		t.Fatal("the store does not prepare its statements on a pool in pgx's default mode")
	}
	// check runs fn: one round trip besides prepares that prepared, with
	// parses statements parsed at the call.
	check := func(what string, prepares, parses int64, fn func() error) {
		t.Helper()
		if rt, _ := w.measure(t, what, fn); rt != 1 || w.prepares.Load() != prepares || w.parses.Load() != parses {
			t.Errorf("%s: %d round trips besides %d preparing, %d statements parsed at the call; want 1, %d, %d",
				what, rt, w.prepares.Load(), w.parses.Load(), prepares, parses)
		}
	}
	read := func() error { _, err := s.Locks(t.Context(), "J"); return err }
	check("the read on a new connection", 0, 1, read)
	check("the first acquisition", 1, 0, func() error {
		_, err := s.Acquire(t.Context(), holderA, []string{"J"}, time.Minute)
		return err
	})
	check("the read after it", 0, 0, read)
	check("a release", 0, 0, func() error {
		return s.Release(t.Context(), holderA.ID, []store.LeaseRef{{Lock: "J", Token: 1}})
	})
	// The hand-off's statements ran with the generic plan made when the
	// connection prepared: the release and the read a second time.
	if serverMajor(t.Context(), s.pool) >= 14 { // the plan counts came with 14
		for sql, want := range map[string]int64{s.q.transfer: 1, s.q.release: 2, s.q.locksNamed: 2} {
			var generic, custom int64
			err := s.pool.QueryRow(t.Context(), "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1",
				s.prepared[sql]).Scan(&generic, &custom)
			if err != nil || generic != want || custom != 0 {
				t.Errorf("%.40q...: %d generic and %d custom plans (%v), want %d and 0", sql, generic, custom, err, want)
			}
		}
	}

	conn, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clear(conn.Conn().PgConn().CustomData())
	conn.Release()
	check("an acquisition after the marks were lost", 1, 0, func() error {
		_, err := s.Acquire(t.Context(), holderB, []string{"J"}, time.Minute)
		return err
	})
}
