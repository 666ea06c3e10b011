//go:build linux

package bench

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/mysql"
	"github.com/masterjob/masterjob/store/redis"
)

// Backend kinds on a Redis or MySQL/MariaDB server the run is given (a
// redis:// or mysql:// URL): each scenario works under a key prefix or
// table prefix of its own, deleted or dropped afterwards; nothing else on
// the server is touched.
const (
	Redis = "redis"
	MySQL = "mysql"
)

// serverKind returns Redis or MySQL for a store URL of theirs, "" for
// another.
func serverKind(spec string) string {
	scheme, _, _ := strings.Cut(strings.ToLower(spec), "://")
	switch scheme {
	case redis.SchemeRedis, redis.SchemeRediss:
		return Redis
	case "mysql", "mariadb":
		return MySQL
	}
	return ""
}

// newServerBackend checks a redis:// or mysql:// URL without connecting.
func newServerBackend(kind, spec string) (*Backend, error) {
	var err error
	switch kind {
	case Redis:
		err = redis.CheckURL(spec)
	case MySQL:
		err = mysql.CheckURL(spec)
	}
	if err != nil {
		return nil, err
	}
	return &Backend{Kind: kind, raw: spec}, nil
}

var notPrefixChar = regexp.MustCompile(`[^a-z0-9_]+`)

// serverFresh is a new prefix on the server: the URL's prefix parameter is
// replaced by the scenario's own.
func (b *Backend) serverFresh(name string) (*Fresh, error) {
	u, err := url.Parse(b.raw)
	if err != nil {
		return nil, err
	}
	var prefix string
	switch b.Kind {
	case Redis:
		prefix = "mjbench:" + name + "-" + randomHex(4) + ":"
	case MySQL:
		// [a-z0-9_]{0,40}: "mjb_" + at most 22 + "_" + 8 + "_".
		n := notPrefixChar.ReplaceAllString(strings.ToLower(name), "_")
		if len(n) > 22 {
			n = n[:22]
		}
		prefix = "mjb_" + n + "_" + randomHex(4) + "_"
	}
	q := u.Query()
	q.Del("masterjob_prefix")
	q.Set("prefix", prefix)
	u.RawQuery = q.Encode()
	return &Fresh{URL: u.String(), Schema: prefix, b: b}, nil
}

func (f *Fresh) serverOpen(ctx context.Context, dsn string) (store.Store, error) {
	if dsn != "" {
		return nil, fmt.Errorf("bench: %s: no proxied store handle (the round-trip scenario counts PostgreSQL's messages only)", f.b.Kind)
	}
	if f.b.Kind == Redis {
		return redis.OpenURL(ctx, f.URL)
	}
	return mysql.OpenURL(ctx, f.URL)
}

// serverDrop deletes the prefix's keys (Redis) or drops its tables
// (MySQL).
func (f *Fresh) serverDrop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f.b.Kind == Redis {
		u, err := redis.ParseURL(f.b.raw)
		if err != nil {
			return err
		}
		c := goredis.NewClient(u.Options)
		defer c.Close()
		iter := c.Scan(ctx, 0, f.Schema+"*", 1000).Iterator()
		var ks []string
		for iter.Next(ctx) {
			ks = append(ks, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("bench: drop prefix %s: %w", f.Schema, err)
		}
		for len(ks) > 0 {
			n := min(len(ks), 1000)
			if err := c.Unlink(ctx, ks[:n]...).Err(); err != nil {
				return fmt.Errorf("bench: drop prefix %s: %w", f.Schema, err)
			}
			ks = ks[n:]
		}
		return nil
	}
	db, err := mysqlDB(f.b.raw)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
	if err != nil {
		return fmt.Errorf("bench: drop prefix %s: %w", f.Schema, err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		if strings.HasPrefix(n, f.Schema) {
			names = append(names, "`"+n+"`")
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(names) > 0 {
		if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", ")); err != nil {
			return fmt.Errorf("bench: drop prefix %s: %w", f.Schema, err)
		}
	}
	return nil
}

// mysqlDB opens a pool on a mysql:// URL's server, for the benchmark's own
// statements.
func mysqlDB(raw string) (*sql.DB, error) {
	cfg, _, err := mysql.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// ServerVersion returns the version of a Redis or MySQL/MariaDB server a
// store URL names, "" for another URL or when it cannot be read.
func ServerVersion(ctx context.Context, spec string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch serverKind(spec) {
	case Redis:
		u, err := redis.ParseURL(spec)
		if err != nil {
			return ""
		}
		c := goredis.NewClient(u.Options)
		defer c.Close()
		info, err := c.Info(ctx, "server").Result()
		if err != nil {
			return ""
		}
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				return "Redis " + v
			}
		}
	case MySQL:
		db, err := mysqlDB(spec)
		if err != nil {
			return ""
		}
		defer db.Close()
		var v string
		if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err == nil {
			return v
		}
	}
	return ""
}
