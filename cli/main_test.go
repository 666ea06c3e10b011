package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/internal/syncbuf"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == LastWillArg {
		// A supervisor of a runner in this test binary runs its will.
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction("os/signal.loop"),
			goleak.IgnoreAnyFunction("os/signal.signal_recv")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// envFunc returns a lookupEnv over m.
func envFunc(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// result is the outcome of one Main call.
type result struct {
	code           int
	stdout, stderr string
}

// mainCtx runs Main with ctx, env and args.
func mainCtx(ctx context.Context, env map[string]string, args ...string) result {
	var stdout, stderr syncbuf.Buffer
	code := Main(ctx, args, &stdout, &stderr, envFunc(env))
	return result{code, stdout.String(), stderr.String()}
}

// mainEnv runs Main with env and args.
func mainEnv(env map[string]string, args ...string) result {
	return mainCtx(context.Background(), env, args...)
}

// postgresURL returns the test server's URL. It skips the test when the
// server cannot be reached, or fails it when $CI is set.
func postgresURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("MASTERJOB_TEST_POSTGRES")
	if u == "" {
		u = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL (MASTERJOB_TEST_POSTGRES=%q) is unreachable on CI: %v", u, err)
		}
		t.Skipf("PostgreSQL unreachable; set MASTERJOB_TEST_POSTGRES to run this test: %v", err)
	}
	return u
}

// postgresSchemaURL returns a store URL on a schema of its own, dropped when
// the test ends.
func postgresSchemaURL(t *testing.T) string {
	t.Helper()
	base := postgresURL(t)
	schema := fmt.Sprintf("mjcli_%s_%d_%d", sanitize(t.Name()), os.Getpid(), time.Now().UnixNano()%1e6)
	if len(schema) > 63 {
		schema = schema[len(schema)-63:]
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if bytes.ContainsRune([]byte(base), '?') {
		sep = "&"
	}
	return base + sep + "masterjob_schema=" + schema
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			} else {
				b[i] = '_'
			}
		}
	}
	return string(b)
}

// The masterjob binary, built once for the process tests.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// buildBinary builds cmd/masterjob into a temporary directory once.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "masterjob-cli-test-")
		if binErr != nil {
			return
		}
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		path := filepath.Join(binDir, "masterjob")
		cmd := exec.Command(goTool, "build", "-o", path, "github.com/masterjob/masterjob/cmd/masterjob")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = path
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
