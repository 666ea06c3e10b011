package mysql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// migration is one section of schema.sql: the statements that take a
// database from version-1 to version.
type migration struct {
	version int
	sql     string
}

// schemaMigrations are the sections of schema.sql, in order.
var schemaMigrations = mustParseMigrations(schemaSQL)

// migrationMarker starts a section of schema.sql.
var migrationMarker = regexp.MustCompile(`(?m)^-- masterjob:version (\d+)[ \t]*$`)

// parseMigrations splits a schema file into its sections. Text before the
// first marker is the file's header (comments). Versions must run 1, 2, 3,
// ... without gaps, and each section must record its version in the meta
// table.
func parseMigrations(file string) ([]migration, error) {
	locs := migrationMarker.FindAllStringSubmatchIndex(file, -1)
	if len(locs) == 0 {
		return nil, fmt.Errorf("no %q marker", "-- masterjob:version N")
	}
	var out []migration
	for i, loc := range locs {
		v, err := strconv.Atoi(file[loc[2]:loc[3]])
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("section %d is marked version %s: versions must run 1, 2, 3, ...", i+1, file[loc[2]:loc[3]])
		}
		end := len(file)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		text := file[loc[1]:end]
		if !strings.Contains(text, fmt.Sprintf("VALUES ('schema_version', %d)", v)) {
			return nil, fmt.Errorf("section version %d does not record its version (INSERT INTO `{{prefix}}meta` ... VALUES ('schema_version', %d) ...)", v, v)
		}
		out = append(out, migration{version: v, sql: text})
	}
	return out, nil
}

func mustParseMigrations(file string) []migration {
	m, err := parseMigrations(file)
	if err != nil {
		panic("store/mysql: schema.sql: " + err.Error())
	}
	return m
}

// migrations returns the migrations this store applies.
func (s *Store) migrations() []migration {
	if s.cfg.migrations != nil {
		return s.cfg.migrations
	}
	return schemaMigrations
}

// migrateTimeout bounds a migration at open, unless the call timeout is
// longer (a caller's earlier deadline also applies).
const migrateTimeout = 30 * time.Second

// tableNames lists the store's tables, by the suffix after the prefix.
var tableNames = []string{"seq", "locks", "notify", "history", "members", "member_locks", "meta"}

// schemaState is what inspect found.
type schemaState struct {
	// version is the version recorded in the meta table, 0 if none.
	version int
	// missing names the tables that do not exist, and the sequence's row
	// if it is missing.
	missing []string
}

// none reports that none of the store's tables exist.
func (st schemaState) none() bool { return len(st.missing) == len(tableNames) }

func (st schemaState) describe(latest int) string {
	switch {
	case st.none():
		return "no masterjob tables (" + strings.Join(st.missing, ", ") + " do not exist)"
	case len(st.missing) > 0 && st.version > 0:
		return fmt.Sprintf("schema version %d recorded, but %s missing", st.version, strings.Join(st.missing, ", "))
	case len(st.missing) > 0:
		return strings.Join(st.missing, ", ") + " missing"
	default:
		return fmt.Sprintf("schema version %d, this version of masterjob needs %d", st.version, latest)
	}
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// inspect returns the schema's version and which objects are missing, in
// the connection's current database.
func (s *Store) inspect(ctx context.Context, q queryer) (schemaState, error) {
	var st schemaState
	var db sql.NullString
	if err := queryRow(ctx, q, "SELECT DATABASE()", &db); err != nil {
		return st, err
	}
	if !db.Valid {
		return st, errNoDatabase
	}
	var quoted []string
	for _, n := range tableNames {
		quoted = append(quoted, quoteString(s.cfg.prefix+n))
	}
	rows, err := q.QueryContext(ctx, `SELECT table_name FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name IN (`+strings.Join(quoted, ", ")+`)`)
	if err != nil {
		return st, err
	}
	found := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return st, err
		}
		found[name] = true
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	rows.Close()
	for _, n := range tableNames {
		if !found[s.cfg.prefix+n] {
			st.missing = append(st.missing, "table "+s.cfg.prefix+n)
		}
	}
	if found[s.cfg.prefix+"meta"] {
		var v sql.NullInt64
		err := queryRow(ctx, q, "SELECT MAX(value) FROM "+s.t.meta+" WHERE name = 'schema_version'", &v)
		if err != nil {
			return st, err
		}
		st.version = int(v.Int64)
	}
	if found[s.cfg.prefix+"seq"] {
		var n int
		if err := queryRow(ctx, q, "SELECT COUNT(*) FROM "+s.t.seq+" WHERE id IN (1, 2)", &n); err != nil {
			return st, err
		}
		if n != 2 {
			st.missing = append(st.missing, "the rows of table "+s.cfg.prefix+"seq")
		}
	}
	return st, nil
}

// errNoDatabase: the connection has no current database.
var errNoDatabase = errors.New("no database selected: name one in the DSN or URL (user@tcp(host:3306)/DBNAME, mysql://user@host/DBNAME)")

func queryRow(ctx context.Context, q queryer, query string, dest ...any) error {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// migrateLockName is the GET_LOCK name that serialises the migrations of
// one database and prefix. GET_LOCK names are at most 64 characters.
func migrateLockName(db, prefix string) string {
	name := "masterjob migrate " + db + "." + prefix
	if len(name) > 64 {
		sum := sha256.Sum256([]byte(name))
		name = "masterjob migrate " + hex.EncodeToString(sum[:16])
	}
	return name
}

// migrate applies the migrations above the schema's version on one
// connection that holds a GET_LOCK named after the database and prefix, so
// that several processes may start at once. DDL commits as it goes: a
// failed section leaves what it created, and the next attempt runs the
// section again (its statements are idempotent).
func (s *Store) migrate(ctx context.Context, steps []migration) (err error) {
	latest := steps[len(steps)-1].version
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var db sql.NullString
	if err := queryRow(ctx, conn, "SELECT DATABASE()", &db); err != nil {
		return err
	}
	if !db.Valid {
		return errNoDatabase
	}
	lockName := quoteString(migrateLockName(db.String, s.cfg.prefix))
	wait := int(time.Until(deadlineOr(ctx, time.Now().Add(migrateTimeout))).Seconds())
	var got sql.NullInt64
	if err := queryRow(ctx, conn, fmt.Sprintf("SELECT GET_LOCK(%s, %d)", lockName, max(wait, 1)), &got); err != nil {
		return err
	}
	if got.Int64 != 1 {
		return fmt.Errorf("GET_LOCK(%s) timed out: another process has been migrating for %ds", lockName, max(wait, 1))
	}
	defer func() {
		// The lock also ends with the connection; a failed release only
		// makes the connection unusable for the pool.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK("+lockName+")"); rerr != nil && err == nil {
			err = rerr
		}
	}()
	// Another process may have migrated while we waited for the lock.
	st, err := s.inspect(ctx, conn)
	if err != nil {
		return err
	}
	if st.version >= latest && len(st.missing) == 0 {
		return nil
	}
	for _, m := range steps {
		// A database whose tables are gone is completed from version 1
		// (the statements are idempotent).
		if m.version <= st.version && len(st.missing) == 0 {
			continue
		}
		ddl := strings.ReplaceAll(m.sql, "{{prefix}}", s.cfg.prefix)
		if err := execScript(ctx, conn, ddl); err != nil {
			return fmt.Errorf("schema version %d: %w", m.version, err)
		}
	}
	after, err := s.inspect(ctx, conn)
	if err != nil {
		return err
	}
	if after.version < latest || len(after.missing) > 0 {
		return fmt.Errorf("after migrating from version %d: %s", st.version, after.describe(latest))
	}
	return nil
}

// execScript runs the statements of a script one by one (a script may be
// larger than the server accepts in one packet, and a failing statement is
// named). Statements end with ";" at the end of a line; lines starting
// with "--" are comments.
func execScript(ctx context.Context, conn *sql.Conn, script string) error {
	for _, stmt := range splitStatements(script) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			first, _, _ := strings.Cut(strings.TrimSpace(stmt), "\n")
			return fmt.Errorf("%s: %w", first, err)
		}
	}
	return nil
}

// splitStatements splits a script at the semicolons that end a line,
// dropping comment lines.
func splitStatements(script string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(script) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

func deadlineOr(ctx context.Context, def time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return def
}
