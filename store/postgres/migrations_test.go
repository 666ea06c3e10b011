package postgres

import (
	"context"
	_ "embed"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/masterjob/masterjob/store"
)

// schemaV2SQL is schema.sql as versions 1 and 2 of the store shipped it:
// the objects a database created by that code holds, without a version.
//
//go:embed testdata/schema_v2.sql
var schemaV2SQL string

// schemaV3SQL is schema.sql as version 3 shipped it (before the cluster
// view).
//
//go:embed testdata/schema_v3.sql
var schemaV3SQL string

// currentVersion is the version of schema.sql.
var currentVersion = schemaMigrations[len(schemaMigrations)-1].version

// recordedVersion returns the schema version recorded in schema's meta
// table, or -1 if there is none (or no table).
func recordedVersion(t *testing.T, schema, prefix string) int64 {
	t.Helper()
	meta := pgx.Identifier{schema, prefix + "meta"}.Sanitize()
	var exists bool
	if err := adminPool(t).QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", meta).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return -1
	}
	var v int64
	err := adminPool(t).QueryRow(t.Context(), "SELECT value FROM "+meta+" WHERE name = 'schema_version'").Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return -1
	}
	if err != nil {
		t.Fatalf("reading the schema version: %v", err)
	}
	return v
}

// columnExists reports whether schema.prefix+locks has the column.
func columnExists(t *testing.T, schema, table, column string) bool {
	t.Helper()
	var ok bool
	err := adminPool(t).QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)`, schema, table, column).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestSchemaMigrationsParse(t *testing.T) {
	if n := len(schemaMigrations); n != 4 {
		t.Fatalf("schema.sql has %d sections, want 4", n)
	}
	for i, m := range schemaMigrations {
		if m.version != i+1 || strings.TrimSpace(m.sql) == "" {
			t.Errorf("section %d: version %d, %d bytes", i, m.version, len(m.sql))
		}
	}
	if !strings.Contains(schemaMigrations[2].sql, `"{{prefix}}meta"`) || strings.Contains(schemaMigrations[1].sql, `"{{prefix}}meta"`) {
		t.Error("the meta table should be created by version 3, and only there")
	}
	if !strings.Contains(schemaMigrations[3].sql, `"{{prefix}}members"`) {
		t.Error("the members table should be created by version 4")
	}
	for _, tc := range []struct{ name, file, want string }{
		{"no marker", "CREATE TABLE x ();", "no"},
		{"gap", "-- masterjob:version 1\nA;\n-- masterjob:version 3\nINSERT INTO m VALUES ('schema_version', 3);", "versions must run 1, 2, 3"},
		{"unrecorded", "-- masterjob:version 1\nA;\n-- masterjob:version 2\nB;\n-- masterjob:version 3\nC;", "does not record its version"},
	} {
		if _, err := parseMigrations(tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: parseMigrations = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestMigrateFromVersion2: a database created by the code before the schema
// version existed (schema.sql version 2, applied as that code applied it)
// is migrated when a Store opens it: the version is recorded, the data kept,
// and tokens go on growing.
func TestMigrateFromVersion2(t *testing.T) {
	schema := newSchema(t)
	applySQLFile(t, schema, "masterjob_", schemaV2SQL)
	locks := pgx.Identifier{schema, "masterjob_locks"}.Sanitize()
	if _, err := adminPool(t).Exec(t.Context(), `INSERT INTO `+locks+` (lock_name, disabled, reason, changed_by, changed_at)
		VALUES ('OLD', true, 'from v2', 'ops', now())`); err != nil {
		t.Fatal(err)
	}
	var oldToken int64
	if err := adminPool(t).QueryRow(t.Context(), `SELECT token FROM `+locks+` WHERE lock_name = 'OLD'`).Scan(&oldToken); err != nil {
		t.Fatal(err)
	}
	if v := recordedVersion(t, schema, "masterjob_"); v != -1 {
		t.Fatalf("a version 2 database records version %d", v)
	}

	// WithoutMigrate refuses it, and says what to apply.
	_, err := Open(t.Context(), testDSN(), WithSchema(schema), WithoutMigrate())
	if err == nil || !strings.Contains(err.Error(), "schema version 2, this version of masterjob needs 4") ||
		!strings.Contains(err.Error(), "the sections of schema.sql after version 2") {
		t.Fatalf("Open WithoutMigrate on a version 2 database = %v, want it to name versions 2 and 4", err)
	}

	s := openStore(t, WithSchema(schema))
	if v := recordedVersion(t, schema, "masterjob_"); v != 4 {
		t.Fatalf("schema version after opening a version 2 database = %d, want 4", v)
	}
	st, err := s.Locks(t.Context(), "OLD")
	if err != nil || len(st) != 1 || !st[0].Disabled || st[0].Reason != "from v2" {
		t.Fatalf("lock made by version 2 = %+v, %v; want it disabled with its reason", st, err)
	}
	got, err := s.Acquire(t.Context(), holderA, []string{"NEW"}, time.Minute)
	if err != nil || !got[0].Acquired || got[0].Token <= oldToken {
		t.Fatalf("Acquire after migration = %+v, %v; want a token above %d", got, err, oldToken)
	}
	// Now WithoutMigrate is content.
	s2, err := Open(t.Context(), testDSN(), WithSchema(schema), WithoutMigrate())
	if err != nil {
		t.Fatalf("Open WithoutMigrate after migration: %v", err)
	}
	_ = s2.Close()
}

// TestMigrateFromVersion3: a database made by version 3 (before the cluster
// view) gets the new columns and the members table when a Store opens it;
// its leases keep working, and the first acquisition after the migration
// reports the expired lease it replaced.
func TestMigrateFromVersion3(t *testing.T) {
	schema := newSchema(t)
	applySQLFile(t, schema, "masterjob_", schemaV3SQL)
	locks := pgx.Identifier{schema, "masterjob_locks"}.Sanitize()
	var oldToken int64
	if err := adminPool(t).QueryRow(t.Context(), `INSERT INTO `+locks+` (lock_name, holder, acquired_at, renewed_at, expires_at)
		VALUES ('OLD', 'old-holder', now() - interval '1 minute', now() - interval '1 minute', now() - interval '1 second')
		RETURNING token`).Scan(&oldToken); err != nil {
		t.Fatal(err)
	}
	if v := recordedVersion(t, schema, "masterjob_"); v != 3 {
		t.Fatalf("a version 3 database records version %d", v)
	}
	_, err := Open(t.Context(), testDSN(), WithSchema(schema), WithoutMigrate())
	if err == nil || !strings.Contains(err.Error(), "schema version 3, this version of masterjob needs 4") ||
		!strings.Contains(err.Error(), "the sections of schema.sql after version 3") {
		t.Fatalf("Open WithoutMigrate on a version 3 database = %v, want it to name versions 3 and 4", err)
	}

	s := openStore(t, WithSchema(schema))
	if v := recordedVersion(t, schema, "masterjob_"); v != 4 {
		t.Fatalf("schema version after opening a version 3 database = %d, want 4", v)
	}
	got, err := s.Acquire(t.Context(), holderA, []string{"OLD"}, time.Minute)
	if err != nil || !got[0].Acquired || got[0].Token <= oldToken {
		t.Fatalf("Acquire after migration = %+v, %v; want a token above %d", got, err, oldToken)
	}
	if got[0].PrevHolder != "old-holder" || got[0].PrevToken != oldToken || !got[0].PrevExpired {
		t.Errorf("Acquire after migration reports prev %q token %d expired %v, want old-holder, %d, true",
			got[0].PrevHolder, got[0].PrevToken, got[0].PrevExpired, oldToken)
	}
	s.Announce(store.Member{ID: holderA.ID, Locks: []string{"OLD"}, LockSetID: "x"}, time.Minute)
	if _, err := s.Renew(t.Context(), holderA.ID, []store.LeaseRef{{Lock: "OLD", Token: got[0].Token}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ms, err := s.Members(t.Context(), store.MemberFilter{Lock: "OLD"}); err != nil || len(ms) != 1 {
		t.Fatalf("Members after migration = %+v, %v", ms, err)
	}
}

// futureMigrations is schema.sql plus a simulated version 5 whose ALTER
// cannot run twice: it fails if a migration runs again.
func futureMigrations() []migration {
	return append(append([]migration(nil), schemaMigrations...), migration{version: 5, sql: `
ALTER TABLE "{{prefix}}locks" ADD COLUMN future_note text NOT NULL DEFAULT '';
INSERT INTO "{{prefix}}meta" AS m (name, value) VALUES ('schema_version', 5)
    ON CONFLICT (name) DO UPDATE SET value = greatest(m.value, EXCLUDED.value);
`})
}

// TestMigrateFutureVersion: a database at the current version gets a later
// migration exactly once, even when several stores open it at once; a store
// of the older version still opens it; WithoutMigrate names what is missing.
func TestMigrateFutureVersion(t *testing.T) {
	schema := newSchema(t)
	s := openStore(t, WithSchema(schema))
	if _, err := s.Disable(t.Context(), "JOB", "kept", "ops"); err != nil {
		t.Fatal(err)
	}
	if v := recordedVersion(t, schema, "masterjob_"); v != 4 {
		t.Fatalf("schema version of a new database = %d, want 4", v)
	}

	future := futureMigrations()
	_, err := Open(t.Context(), testDSN(), WithSchema(schema), WithoutMigrate(), withMigrations(future))
	if err == nil || !strings.Contains(err.Error(), "schema version 4, this version of masterjob needs 5") ||
		!strings.Contains(err.Error(), "the sections of schema.sql after version 4") {
		t.Fatalf("Open WithoutMigrate by version 5 on a version 4 database = %v", err)
	}
	if columnExists(t, schema, "masterjob_locks", "future_note") {
		t.Fatal("WithoutMigrate ran the migration")
	}

	// Four stores of the new version open it at once: the ALTER runs once
	// (a second run would fail: the column exists).
	const n = 4
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := Open(ctx, testDSN(), WithSchema(schema), withMigrations(future))
			if err == nil {
				err = st.Close()
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d of %d by version 5 at once: %v", i, n, err)
		}
	}
	if !columnExists(t, schema, "masterjob_locks", "future_note") {
		t.Fatal("the version 5 migration did not run")
	}
	if v := recordedVersion(t, schema, "masterjob_"); v != 5 {
		t.Fatalf("schema version after the version 5 migration = %d, want 5", v)
	}
	// Reopening runs nothing (the ALTER would fail), and the data is intact.
	s4 := openStore(t, WithSchema(schema), withMigrations(future))
	st, err := s4.Locks(t.Context(), "JOB")
	if err != nil || !st[0].Disabled || st[0].Reason != "kept" {
		t.Fatalf("lock after the version 5 migration = %+v, %v", st, err)
	}
	// The older version (4) still opens a version 5 database, with or
	// without migration: migrations only add.
	openStore(t, WithSchema(schema))
	openStore(t, WithSchema(schema), WithoutMigrate())
	if v := recordedVersion(t, schema, "masterjob_"); v != 5 {
		t.Fatalf("schema version after an older store opened it = %d, want 5", v)
	}
}

// TestMigrateFailureRollsBack: a migration that fails leaves the database
// as it was (one transaction), and the error names the version.
func TestMigrateFailureRollsBack(t *testing.T) {
	schema := newSchema(t)
	openStore(t, WithSchema(schema))
	bad := append(append([]migration(nil), schemaMigrations...), migration{version: 5, sql: `
ALTER TABLE "{{prefix}}locks" ADD COLUMN half_done text;
SELECT no_such_function();
INSERT INTO "{{prefix}}meta" (name, value) VALUES ('schema_version', 5);
`})
	_, err := Open(t.Context(), testDSN(), WithSchema(schema), withMigrations(bad))
	if err == nil || !strings.Contains(err.Error(), "schema version 5") {
		t.Fatalf("Open with a failing migration = %v, want an error naming version 5", err)
	}
	if columnExists(t, schema, "masterjob_locks", "half_done") {
		t.Error("a failed migration left its first statement applied")
	}
	if v := recordedVersion(t, schema, "masterjob_"); v != 4 {
		t.Errorf("schema version after a failed migration = %d, want 4", v)
	}
	var _ store.Store = openStore(t, WithSchema(schema)) // the current version still opens it
}

// withMigrations makes a store apply steps instead of schema.sql's sections.
func withMigrations(steps []migration) Option {
	return func(c *config) { c.migrations = steps }
}
