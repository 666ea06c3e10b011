package redis

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/internal/syncbuf"
)

// TestSetClientLogger: go-redis's own lines (a pool's failed dials) go to
// the logger given, at the debug level, and nowhere with nil.
func TestSetClientLogger(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	dial := func() {
		c := goredis.NewClient(&goredis.Options{Addr: closed, MaxRetries: -1})
		defer c.Close()
		if err := c.Ping(context.Background()).Err(); err == nil {
			t.Fatal("Ping of a closed port succeeded")
		}
	}
	t.Cleanup(func() { SetClientLogger(nil) })

	var debug, info syncbuf.Buffer
	SetClientLogger(slog.New(slog.NewJSONHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for range 6 { // the pool logs after repeated failed dials
		dial()
	}
	if got := debug.String(); !strings.Contains(got, `"level":"DEBUG"`) || !strings.Contains(got, `"msg":"redis client: `) {
		t.Errorf("debug logger got %q, want go-redis's lines at debug", got)
	}
	SetClientLogger(slog.New(slog.NewJSONHandler(&info, nil)))
	for range 6 {
		dial()
	}
	if got := info.String(); got != "" {
		t.Errorf("info logger got %q, want nothing (the lines are debug)", got)
	}
	// nil discards: the adapter does nothing, and does not fail.
	clientLog{}.Printf(context.Background(), "%v", errors.New("x"))
}
