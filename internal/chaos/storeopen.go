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
		db, err := sql.Open("sqlite", "file:"+s.path)
		if err != nil {
			return err
		}
		defer db.Close()
		for _, t := range []string{ns + "_locks", ns + "_meta"} {
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
