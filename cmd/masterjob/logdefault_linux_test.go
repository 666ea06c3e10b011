//go:build linux && !masterjob_noredis

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/cli"
	"github.com/masterjob/masterjob/internal/syncbuf"
)

// TestRunLogsOnlyJSON: a runner with --log-format json on Redis writes
// JSON lines only, to its own stderr, the Redis store's warnings (logged
// to slog.Default()) included, and nothing to the process's standard
// error: the command installs its logger as slog's default.
func TestRunLogsOnlyJSON(t *testing.T) {
	url := os.Getenv("MASTERJOB_TEST_REDIS")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	admin := goredis.NewClient(opts)
	t.Cleanup(func() { admin.Close() }) // after the cleanup below, which uses it
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := admin.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis unreachable at %s on CI: %v", url, err)
		}
		t.Skipf("Redis unreachable at %s (set MASTERJOB_TEST_REDIS): %v", url, err)
	}
	prefix := fmt.Sprintf("mjcmd%d:", os.Getpid())
	t.Cleanup(func() {
		keys, err := admin.Keys(context.Background(), prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			err = admin.Del(context.Background(), keys...).Err()
		}
		if err != nil {
			t.Errorf("deleting the keys of prefix %s: %v", prefix, err)
		}
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}

	// What Main changes for the whole process, put back afterwards.
	oldDefault, oldOut, oldFlags := slog.Default(), log.Writer(), log.Flags()
	cli.InstallDefaultLogger = true
	defer func() {
		cli.InstallDefaultLogger = false
		slog.SetDefault(oldDefault)
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
	}()

	var out, errOut syncbuf.Buffer
	var code int
	leaked := captureStderr(t, func() {
		code = cli.Main(ctx, []string{"run", "--log-format", "json", "--store", url + sep + "prefix=" + prefix,
			"--lock", "JSONLOG", "--", "true"}, &out, &errOut, func(string) (string, bool) { return "", false })
	})
	if code != 0 {
		t.Fatalf("run: exit %d, stderr:\n%s", code, errOut.String())
	}
	if len(leaked) > 0 {
		t.Errorf("the process's standard error got lines the runner did not log:\n%s", leaked)
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	for _, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Errorf("a line that is not JSON: %q", line)
		}
	}
	if len(lines) < 3 {
		t.Errorf("%d lines logged, want the runner's own:\n%s", len(lines), errOut.String())
	}
	t.Logf("%d JSON lines; the Redis store's warning among them: %v", len(lines),
		strings.Contains(errOut.String(), "keeps nothing on disk"))
}
