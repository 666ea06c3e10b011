//go:build linux

package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/postgres"
	"github.com/masterjob/masterjob/store/sqlite"
)

// Store kinds.
const (
	kindSQLite   = "sqlite"
	kindPostgres = "postgres"
)

// storeSpec is a parsed store URL.
type storeSpec struct {
	kind   string
	path   string  // SQLite file
	dsn    string  // PostgreSQL URL (or an engine's), as given
	engine *Engine // a registered engine (RegisterEngine)
}

// parseStoreURL accepts sqlite:PATH, sqlite://PATH and postgres:// or
// postgresql:// URLs.
func parseStoreURL(raw string) (storeSpec, error) {
	switch {
	case strings.HasPrefix(raw, "sqlite://"):
		p := strings.TrimPrefix(raw, "sqlite://")
		if p == "" {
			return storeSpec{}, fmt.Errorf("store URL %q: empty path", raw)
		}
		return storeSpec{kind: kindSQLite, path: p}, nil
	case strings.HasPrefix(raw, "sqlite:"):
		p := strings.TrimPrefix(raw, "sqlite:")
		if p == "" {
			return storeSpec{}, fmt.Errorf("store URL %q: empty path", raw)
		}
		return storeSpec{kind: kindSQLite, path: p}, nil
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		u, err := url.Parse(raw)
		if err != nil {
			return storeSpec{}, fmt.Errorf("store URL: %w", err)
		}
		if u.Host == "" {
			return storeSpec{}, fmt.Errorf("store URL %q: no host (the harness proxies TCP to it)", redactURL(raw))
		}
		return storeSpec{kind: kindPostgres, dsn: raw}, nil
	}
	if e, ok := engineFor(raw); ok {
		return storeSpec{kind: e.Scheme, dsn: raw, engine: &e}, nil
	}
	return storeSpec{}, fmt.Errorf("store URL %q: want sqlite:PATH or postgres://USER@HOST:PORT/DB", redactURL(raw))
}

// redactURL hides a password in a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// upstream returns the server's host:port (PostgreSQL).
func (s storeSpec) upstream() string {
	if s.engine != nil {
		up, _ := s.engine.Upstream(s.dsn)
		return up
	}
	u, _ := url.Parse(s.dsn)
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5432")
	}
	return u.Host
}

// viaProxy returns the DSN an instance uses: through its proxy, tagged with
// an application_name that identifies its backends.
func (s storeSpec) viaProxy(proxyAddr, appName string) string {
	u, _ := url.Parse(s.dsn)
	u.Host = proxyAddr
	q := u.Query()
	q.Set("application_name", appName)
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	return u.String()
}

// namespace is where one run keeps its tables: a SQLite table prefix or a
// PostgreSQL schema, unique per run.
func namespace(runID string) string { return "mjchaos_" + runID }

// openStore opens the run's store. For PostgreSQL dsn overrides the spec's
// (an instance connects through its proxy).
func openStore(ctx context.Context, s storeSpec, ns, dsn string) (store.Store, error) {
	if s.engine != nil {
		return s.engine.Open(ctx, s.dsn, ns, dsn)
	}
	switch s.kind {
	case kindSQLite:
		return sqlite.Open(s.path, sqlite.WithTablePrefix(ns+"_"))
	case kindPostgres:
		if dsn == "" {
			dsn = s.dsn
		}
		return postgres.Open(ctx, dsn, postgres.WithSchema(ns))
	}
	return nil, errors.New("chaos: unknown store kind " + s.kind)
}

// dropNamespace removes the run's tables (SQLite) or schema (PostgreSQL),
// and nothing else.
func dropNamespace(ctx context.Context, s storeSpec, ns string) error {
	if s.engine != nil {
		return s.engine.Drop(ctx, s.dsn, ns)
	}
	switch s.kind {
	case kindSQLite:
		db, err := sql.Open("sqlite", "file:"+s.path+"?_busy_timeout=5000")
		if err != nil {
			return err
		}
		defer db.Close()
		// Every table of the run's prefix, whatever the store's schema
		// version made (their triggers and indexes go with them).
		rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
		if err != nil {
			return err
		}
		var tables []string
		for rows.Next() {
			var t string
			if err := rows.Scan(&t); err != nil {
				rows.Close()
				return err
			}
			if strings.HasPrefix(t, ns+"_") {
				tables = append(tables, t)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, t := range tables {
			if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS "`+t+`"`); err != nil {
				return fmt.Errorf("drop %s: %w", t, err)
			}
		}
		return nil
	case kindPostgres:
		conn, err := pgx.Connect(ctx, s.dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{ns}.Sanitize()+" CASCADE")
		return err
	}
	return nil
}

// terminateBackends ends every server backend of the instance tagged
// appName (PostgreSQL's "store restart" for one instance) and returns how
// many it ended.
func terminateBackends(ctx context.Context, conn *pgx.Conn, appName string) (int, error) {
	var n int
	err := conn.QueryRow(ctx,
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
		appName).Scan(&n)
	return n, err
}

// Store-side loss modes (see endLease).
const (
	// LossDelete deletes the lock's record, as an operator cleaning up or
	// a failover to a replica that never saw the acquisition would. The
	// record also holds the lock's control, so a disabled lock's record is
	// never deleted (nothing happens then).
	LossDelete = "delete"
	// LossExpire sets the lease's expiry in the past and keeps the record
	// (and its control), as a failover to a replica that missed the last
	// renewals, or a step of the store's clock, would.
	LossExpire = "expire"
)

// endLease ends lock's current lease in the store behind its holder's back,
// through the driver's own connection (PostgreSQL: pg; SQLite: db, a
// connection of its own to the file), and returns the token and holder of
// the lease it ended; token 0 when no lease was held (or, with LossDelete,
// the lock was disabled). The holder's next renewal is refused.
func endLease(ctx context.Context, kind string, pg *pgx.Conn, db *sql.DB, ns, lock, mode string) (token int64, holder string, err error) {
	q, err := endLeaseSQL(kind, ns, mode)
	if err != nil {
		return 0, "", err
	}
	switch kind {
	case kindPostgres:
		err = pg.QueryRow(ctx, q, lock).Scan(&token, &holder)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, "", nil
		}
	case kindSQLite:
		err = db.QueryRowContext(ctx, q, lock).Scan(&token, &holder)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, "", nil
		}
	}
	return token, holder, err
}

// endLeaseSQL returns endLease's statement: one parameter, the lock name;
// it returns the token and holder of the lease it ended, or no row.
func endLeaseSQL(kind, ns, mode string) (string, error) {
	switch kind + "/" + mode {
	case kindPostgres + "/" + LossDelete:
		return `DELETE FROM ` + pgLocksTable(ns) + ` WHERE lock_name = $1 AND holder IS NOT NULL AND expires_at > now() AND NOT disabled
			RETURNING token, holder`, nil
	case kindPostgres + "/" + LossExpire:
		return `UPDATE ` + pgLocksTable(ns) + ` SET expires_at = now() - interval '1 millisecond'
			WHERE lock_name = $1 AND holder IS NOT NULL AND expires_at > now() RETURNING token, holder`, nil
	case kindSQLite + "/" + LossDelete:
		// No clock column is read: this holds whatever clock the store
		// keeps its expiry on.
		return `DELETE FROM ` + sqliteLocksTable(ns) + ` WHERE lock_name = ?1 AND holder <> '' AND disabled = 0
			RETURNING token, holder`, nil
	case kindSQLite + "/" + LossExpire:
		return sqliteExpireSQL(ns), nil
	}
	return "", fmt.Errorf("store-side loss: no mode %q on %s", mode, kind)
}

// sqliteExpireSQL is the statement that sets the current SQLite lease of
// lock ?1 expired for every reader, keeping the record, and returns its
// token and holder. It depends on how the SQLite store keeps expiries
// (store/sqlite/schema.sql, version 4: the lease's end in milliseconds on
// the host's boot clock, in the lease_clock table, for the lease whose
// token it names; 0 is the boot itself, long past): when that changes,
// change this, and nothing else.
func sqliteExpireSQL(ns string) string {
	locks := sqliteLocksTable(ns)
	return `UPDATE "` + ns + `_lease_clock" SET expires = 0
		WHERE lock_name = ?1 AND lease_token = (SELECT token FROM ` + locks + ` WHERE lock_name = ?1 AND holder <> '')
		RETURNING lease_token, (SELECT holder FROM ` + locks + ` WHERE lock_name = ?1)`
}

func pgLocksTable(ns string) string { return pgx.Identifier{ns, "masterjob_locks"}.Sanitize() }

func sqliteLocksTable(ns string) string { return `"` + ns + `_locks"` }

// openLossDB opens the driver's own connection to a SQLite file, for the
// store-side loss: an outside writer, as an operator's sqlite3 shell.
func openLossDB(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}
