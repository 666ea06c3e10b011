//go:build linux

package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // driver "sqlite", for the version

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/postgres"
	"github.com/masterjob/masterjob/store/sqlite"
	"github.com/masterjob/masterjob/storeurl"
)

// Backend kinds.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Backend makes a fresh, empty store for each scenario: a new SQLite file
// in the work directory, or a new PostgreSQL schema (masterjob_schema) that
// is dropped afterwards.
type Backend struct {
	Kind string
	dir  string // sqlite: where files go
	dsn  string // postgres: the driver's DSN, masterjob_* parameters removed
	raw  string // postgres: the URL as given
}

// NewBackend parses spec: "sqlite" (files under dir), a PostgreSQL URL,
// "etcd" (masterjob on a throw-away etcd server with its data under dir),
// "etcd-election" (etcd's own election on that server), or a redis:// or
// mysql:// (mariadb://) URL.
func NewBackend(spec, dir string) (*Backend, error) {
	if spec == SQLite || isEtcd(spec) {
		return &Backend{Kind: spec, dir: dir}, nil
	}
	if k := serverKind(spec); k != "" {
		return newServerBackend(k, spec)
	}
	u, err := storeurl.Parse(spec)
	if err != nil {
		return nil, err
	}
	if u.Scheme == storeurl.SchemeSQLite {
		return nil, fmt.Errorf("bench: give -store sqlite (each scenario makes its own file), not %q", spec)
	}
	return &Backend{Kind: Postgres, dsn: u.DSN, raw: spec}, nil
}

// DSN returns the PostgreSQL DSN ("" for SQLite).
func (b *Backend) DSN() string { return b.dsn }

// Fresh is one scenario's store.
type Fresh struct {
	// URL is the store URL for `masterjob run --store`.
	URL string
	// Schema is the PostgreSQL schema (the key prefix on etcd and Redis,
	// the table prefix on MySQL); Path the SQLite file.
	Schema, Path string
	b            *Backend
}

// Fresh makes a new, empty store named after name.
func (b *Backend) Fresh(name string) (*Fresh, error) {
	suffix := randomHex(4)
	switch b.Kind {
	case Etcd, EtcdElection:
		return b.etcdFresh(name)
	case Redis, MySQL:
		return b.serverFresh(name)
	case SQLite:
		p := filepath.Join(b.dir, name+"-"+suffix+".db")
		return &Fresh{URL: "sqlite:" + p, Path: p, b: b}, nil
	default:
		schema := "mjbench_" + strings.ReplaceAll(name, "-", "_") + "_" + suffix
		u, err := url.Parse(b.raw)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("masterjob_schema", schema)
		u.RawQuery = q.Encode()
		return &Fresh{URL: u.String(), Schema: schema, b: b}, nil
	}
}

// Open opens the store with the library, reaching PostgreSQL at dsn when it
// is not empty (through a proxy), else directly. For etcd's election there
// is no store: it returns nil.
func (f *Fresh) Open(ctx context.Context, dsn string) (store.Store, error) {
	switch f.b.Kind {
	case EtcdElection:
		return nil, nil
	case Etcd:
		return f.etcdOpen(ctx)
	case Redis, MySQL:
		return f.serverOpen(ctx, dsn)
	}
	if f.b.Kind == SQLite {
		return sqlite.Open(f.Path)
	}
	if dsn == "" {
		dsn = f.b.dsn
	}
	return postgres.Open(ctx, dsn, postgres.WithSchema(f.Schema))
}

// Drop removes the store: the SQLite files, the PostgreSQL schema, or the
// etcd prefix.
func (f *Fresh) Drop() error {
	if isEtcd(f.b.Kind) {
		return f.etcdDrop()
	}
	if f.b.Kind == Redis || f.b.Kind == MySQL {
		return f.serverDrop()
	}
	if f.b.Kind == SQLite {
		for _, s := range []string{"", "-wal", "-shm", "-journal"} {
			_ = os.Remove(f.Path + s)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connectPG(ctx, f.b.dsn)
	if err != nil {
		return fmt.Errorf("bench: drop schema %s: %w", f.Schema, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{f.Schema}.Sanitize()+" CASCADE")
	if err != nil {
		return fmt.Errorf("bench: drop schema %s: %w", f.Schema, err)
	}
	return nil
}

// connectPG opens one connection to the server of a PostgreSQL store URL.
// The URL may carry the pool's settings (pool_min_conns and the like, which
// the store's pool reads), which pgx.Connect would send to the server as
// run-time settings, and the server refuses: a run with such a URL left
// every scenario's schema behind.
func connectPG(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg.ConnConfig)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sqliteVersion() string {
	db, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		return "?"
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SELECT sqlite_version()").Scan(&v); err != nil {
		return "?"
	}
	return "SQLite " + v
}

// RedactURL returns raw with its password, if any, hidden.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
