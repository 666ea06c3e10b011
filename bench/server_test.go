//go:build linux

package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// serverSpec returns the store URL of the Redis or MySQL server the store
// modules' tests use ($MASTERJOB_TEST_REDIS, a URL; $MASTERJOB_TEST_MYSQL, a
// DSN in the driver's format; else the local defaults), or skips the test
// when the server cannot be reached, failing instead under $CI.
func serverSpec(t *testing.T, kind string) string {
	t.Helper()
	var spec string
	switch kind {
	case Redis:
		spec = os.Getenv("MASTERJOB_TEST_REDIS")
		if spec == "" {
			spec = "redis://127.0.0.1:6379/0"
		}
	case MySQL:
		dsn := os.Getenv("MASTERJOB_TEST_MYSQL")
		if dsn == "" {
			dsn = "root@tcp(127.0.0.1:3306)/test"
		}
		cfg, err := mysqldrv.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("MASTERJOB_TEST_MYSQL: %v", err)
		}
		u := url.URL{Scheme: "mysql", User: url.User(cfg.User), Host: cfg.Addr, Path: "/" + cfg.DBName}
		if cfg.Passwd != "" {
			u.User = url.UserPassword(cfg.User, cfg.Passwd)
		}
		if cfg.Net == "unix" {
			u.Host, u.RawQuery = "", "socket="+url.QueryEscape(cfg.Addr)
		}
		spec = u.String()
	}
	if ServerVersion(context.Background(), spec) == "" {
		msg := fmt.Sprintf("%s at %s not reachable", kind, RedactURL(spec))
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: the benchmark's smoke test must run)")
		}
		t.Skip(msg)
	}
	return spec
}

// TestSmokeServers runs the scenarios on Redis and MySQL/MariaDB for a
// trial or two with short timings. Correctness only, as TestSmoke.
func TestSmokeServers(t *testing.T) {
	const lease = 600 * time.Millisecond
	for _, kind := range []string{Redis, MySQL} {
		t.Run(kind, func(t *testing.T) {
			env := testEnv(t, serverSpec(t, kind))
			if env.Backend.Kind != kind {
				t.Fatalf("backend kind %q, want %q", env.Backend.Kind, kind)
			}
			smokeScenarios(t, env, lease)
		})
	}
}
