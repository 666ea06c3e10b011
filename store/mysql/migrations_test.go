package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

// recordedVersion returns the schema version recorded in the meta table of
// prefix, or -1 if there is none (or no table).
func recordedVersion(t *testing.T, prefix string) int64 {
	t.Helper()
	var v sql.NullInt64
	err := adminDB(t).QueryRowContext(t.Context(), "SELECT value FROM "+quoteIdent(prefix+"meta")+" WHERE name = 'schema_version'").Scan(&v)
	var me *mysqlError
	switch {
	case errors.Is(err, sql.ErrNoRows), errors.As(err, &me) && me.Number == 1146: // ER_NO_SUCH_TABLE
		return -1
	case err != nil:
		t.Fatalf("reading the schema version: %v", err)
	}
	return v.Int64
}

func columnExists(t *testing.T, table, column string) bool {
	t.Helper()
	var n int
	err := adminDB(t).QueryRowContext(t.Context(), `SELECT COUNT(*) FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?`, table, column).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func tableCount(t *testing.T, prefix string) int {
	t.Helper()
	var n int
	err := adminDB(t).QueryRowContext(t.Context(), `SELECT COUNT(*) FROM information_schema.tables
		WHERE table_schema = DATABASE() AND table_name LIKE ?`, strings.ReplaceAll(prefix, "_", `\_`)+"%").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSchemaMigrationsParse(t *testing.T) {
	if n := len(schemaMigrations); n != 1 {
		t.Fatalf("schema.sql has %d sections, want 1", n)
	}
	for i, m := range schemaMigrations {
		if m.version != i+1 || strings.TrimSpace(m.sql) == "" {
			t.Errorf("section %d: version %d, %d bytes", i, m.version, len(m.sql))
		}
	}
	for _, tc := range []struct{ name, file, want string }{
		{"no marker", "CREATE TABLE x (a int);", "no"},
		{"gap", "-- masterjob:version 1\nINSERT INTO m VALUES ('schema_version', 1);\n-- masterjob:version 3\nINSERT INTO m VALUES ('schema_version', 3);", "versions must run 1, 2, 3"},
		{"unrecorded", "-- masterjob:version 1\nA;", "does not record its version"},
	} {
		if _, err := parseMigrations(tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: parseMigrations = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// Every statement ends a line with ";", so that execScript and the
	// mysql client split the file alike.
	stmts := splitStatements(schemaMigrations[0].sql)
	if len(stmts) != 9 {
		t.Errorf("version 1 splits into %d statements, want 9: %q", len(stmts), stmts)
	}
}

// TestConcurrentMigration opens the same new prefix from several pools at
// once, several times: nobody may fail, and they all share the tables.
func TestConcurrentMigration(t *testing.T) {
	for round := range 3 {
		prefix := newPrefix(t)
		const n = 4
		stores := make([]*Store, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = Open(t.Context(), testDSN(), WithTablePrefix(prefix))
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

// TestMigrateIsIdempotent reopens an existing prefix, and repairs one whose
// table was dropped (the statements of a section can run again).
func TestMigrateIsIdempotent(t *testing.T) {
	prefix := newPrefix(t)
	s := openStore(t, WithTablePrefix(prefix))
	if _, err := s.Disable(t.Context(), "JOB", "kept", "ops"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	for range 2 {
		_ = openStore(t, WithTablePrefix(prefix)).Close()
	}
	if _, err := adminDB(t).ExecContext(t.Context(), "DROP TABLE "+quoteIdent(prefix+"history")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), testDSN(), WithTablePrefix(prefix), WithoutMigrate())
	if err == nil || !strings.Contains(err.Error(), "schema version 1 recorded, but table "+prefix+"history missing") ||
		errors.Is(err, store.ErrNotInitialized) {
		t.Fatalf("Open WithoutMigrate without the history table = %v (not store.ErrNotInitialized: some tables exist)", err)
	}
	s = openStore(t, WithTablePrefix(prefix))
	if err := s.AppendEvents(t.Context(), []store.Event{{Lock: "JOB", Kind: store.EventEnabled}}); err != nil {
		t.Fatalf("AppendEvents after the repair: %v", err)
	}
	st, err := s.Locks(t.Context(), "JOB")
	if err != nil || !st[0].Disabled || st[0].Reason != "kept" {
		t.Fatalf("lock after the repair: %+v, %v; want it still disabled", st, err)
	}
}

// futureMigrations is schema.sql plus a simulated version 2 whose ALTER
// cannot run twice: it fails if a migration runs again.
func futureMigrations() []migration {
	return append(append([]migration(nil), schemaMigrations...), migration{version: 2, sql: "\n" +
		"ALTER TABLE `{{prefix}}locks` ADD COLUMN future_note BLOB NULL;\n" +
		"INSERT INTO `{{prefix}}meta` (name, value) VALUES ('schema_version', 2)\n" +
		"    ON DUPLICATE KEY UPDATE value = GREATEST(value, 2);\n"})
}

func withMigrations(steps []migration) Option {
	return func(c *config) { c.migrations = steps }
}

// TestMigrateFutureVersion: a database at the current version gets a later
// migration exactly once, even when several stores open it at once; a
// store of the older version still opens it; WithoutMigrate names what is
// missing.
func TestMigrateFutureVersion(t *testing.T) {
	prefix := newPrefix(t)
	_ = openStore(t, WithTablePrefix(prefix)).Close()
	_, err := Open(t.Context(), testDSN(), WithTablePrefix(prefix), WithoutMigrate(), withMigrations(futureMigrations()))
	if err == nil || !strings.Contains(err.Error(), "schema version 1, this version of masterjob needs 2") ||
		!strings.Contains(err.Error(), "the sections of schema.sql after version 1") {
		t.Fatalf("Open WithoutMigrate before the future migration = %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(t.Context(), testDSN(), WithTablePrefix(prefix), withMigrations(futureMigrations()))
			if err == nil {
				_ = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open with the future migration: %v", err)
		}
	}
	if v := recordedVersion(t, prefix); v != 2 {
		t.Errorf("version after the future migration = %d, want 2", v)
	}
	if !columnExists(t, prefix+"locks", "future_note") {
		t.Error("the future migration did not run")
	}
	// The current code opens the newer database.
	s := openStore(t, WithTablePrefix(prefix), WithoutMigrate())
	if _, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute); err != nil {
		t.Fatalf("Acquire on a newer schema: %v", err)
	}
}

// TestWithoutMigrate: without the tables Open fails clearly and creates
// nothing; once a DBA applied schema.sql as its header says (with the
// mysql client when there is one), Open succeeds.
func TestWithoutMigrate(t *testing.T) {
	prefix := newPrefix(t)
	_, err := Open(t.Context(), testDSN(), WithTablePrefix(prefix), WithoutMigrate())
	if err == nil || !strings.Contains(err.Error(), "no masterjob tables") || !strings.Contains(err.Error(), "apply schema.sql") ||
		!errors.Is(err, store.ErrNotInitialized) {
		t.Fatalf("Open WithoutMigrate on an empty database = %v, want store.ErrNotInitialized pointing to schema.sql", err)
	}
	if n := tableCount(t, prefix); n != 0 {
		t.Fatalf("Open WithoutMigrate created %d tables", n)
	}
	applySchemaSQL(t, prefix)
	s := openStore(t, WithTablePrefix(prefix), WithoutMigrate())
	st, err := s.Acquire(t.Context(), holderA, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired || st[0].Token <= 0 {
		t.Fatalf("Acquire on a DBA-made schema = %+v, %v", st, err)
	}
	if v := recordedVersion(t, prefix); v != 1 {
		t.Errorf("recorded version %d, want 1", v)
	}
}

// applySchemaSQL does what schema.sql's header tells a DBA: replace the
// prefix and feed the file to the mysql client (mariadb, or mysql), or,
// without a client on this machine, run its statements one by one.
func applySchemaSQL(t *testing.T, prefix string) {
	t.Helper()
	ddl := strings.ReplaceAll(schemaSQL, "{{prefix}}", prefix)
	cfg, err := mysqldrv.ParseDSN(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, client := range []string{"mariadb", "mysql"} {
		path, err := exec.LookPath(client)
		if err != nil || cfg.Net != "tcp" {
			continue
		}
		host, port, _ := strings.Cut(cfg.Addr, ":")
		args := []string{"--host=" + host, "--port=" + port, "--user=" + cfg.User, "--database=" + cfg.DBName}
		if cfg.Passwd != "" {
			args = append(args, "--password="+cfg.Passwd)
		}
		cmd := exec.CommandContext(t.Context(), path, args...)
		cmd.Stdin = strings.NewReader(ddl)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s < schema.sql: %v\n%s", client, err, out.String())
		}
		t.Logf("schema.sql applied with %s", path)
		return
	}
	conn, err := adminDB(t).Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := execScript(t.Context(), conn, ddl); err != nil {
		t.Fatalf("applying schema.sql: %v", err)
	}
}

// TestHistoryPruneIsBounded: the history keeps exactly the retention, the
// newest ids, without gaps.
func TestHistoryPruneIsBounded(t *testing.T) {
	prefix := newPrefix(t)
	s := openStore(t, WithTablePrefix(prefix), WithHistoryLimit(50))
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
	err := adminDB(t).QueryRowContext(t.Context(), "SELECT COUNT(*), MIN(id), MAX(id) FROM "+quoteIdent(prefix+"history")).Scan(&n, &lo, &hi)
	if err != nil {
		t.Fatal(err)
	}
	if n != 50 || lo != 71 || hi != 120 {
		t.Errorf("history holds %d rows, ids %d..%d; want 50, 71..120", n, lo, hi)
	}
}

// TestTokensSurviveSequenceReset: an operator who resets the sequences
// (which schema.sql says never to do) cannot make a lock's token go back
// while its row exists, nor break the notifications or the history.
func TestTokensSurviveSequenceReset(t *testing.T) {
	prefix := newPrefix(t)
	s := openStore(t, WithTablePrefix(prefix))
	ctx := t.Context()
	var last int64
	for range 3 {
		st, err := s.Acquire(ctx, holderA, []string{"RESET"}, time.Minute)
		if err != nil || !st[0].Acquired {
			t.Fatalf("Acquire: %v %+v", err, st)
		}
		last = st[0].Token
		if err := s.Release(ctx, holderA.ID, []store.LeaseRef{{Lock: "RESET", Token: last}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendEvents(ctx, []store.Event{{Lock: "RESET", Kind: store.EventReleased}}); err != nil {
		t.Fatal(err)
	}
	if _, err := adminDB(t).ExecContext(ctx, "UPDATE "+quoteIdent(prefix+"seq")+" SET value = 0"); err != nil {
		t.Fatal(err)
	}
	st, err := s.Acquire(ctx, holderB, []string{"RESET"}, time.Minute)
	if err != nil || !st[0].Acquired || st[0].Token <= last {
		t.Fatalf("Acquire after the sequence was reset: %v %+v, want a token above %d", err, st, last)
	}
	if err := s.Release(ctx, holderB.ID, []store.LeaseRef{{Lock: "RESET", Token: st[0].Token}}); err != nil {
		t.Fatalf("Release after the sequence was reset: %v", err)
	}
	if err := s.AppendEvents(ctx, []store.Event{{Lock: "RESET", Kind: store.EventAcquired}}); err != nil {
		t.Fatalf("AppendEvents after the sequence was reset: %v", err)
	}
	ev, err := s.Events(ctx, store.EventFilter{})
	if err != nil || len(ev) != 2 || ev[0].Kind != store.EventAcquired || ev[0].ID <= ev[1].ID {
		t.Fatalf("history after the reset: %v %+v", err, ev)
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithTablePrefix("Bad-Prefix"), "WithTablePrefix"},
		{WithTablePrefix(strings.Repeat("x", 41)), "WithTablePrefix"},
		{WithCallTimeout(0), "WithCallTimeout: 0s is not positive"},
		{WithHistoryLimit(0), "WithHistoryLimit: 0 is less than 1"},
		{WithNotifyPoll(time.Microsecond), "WithNotifyPoll: 1µs is shorter than 1ms"},
	} {
		_, err := Open(context.Background(), testDSN(), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open with a bad option: %v, want an error containing %q", err, tc.want)
		}
	}
	if _, err := New(context.Background(), nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// TestNoDatabase: a DSN without a database fails with a message saying so.
func TestNoDatabase(t *testing.T) {
	adminDB(t)
	_, err := Open(t.Context(), dsnWith(t, func(c *mysqldrv.Config) { c.DBName = "" }), WithTablePrefix("mjnodb_"))
	if !errors.Is(err, errNoDatabase) {
		t.Fatalf("Open without a database: %v", err)
	}
}
