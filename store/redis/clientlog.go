package redis

import (
	"context"
	"fmt"
	"log/slog"

	goredis "github.com/redis/go-redis/v9"
)

// SetClientLogger sends the lines the Redis client library (go-redis)
// logs, such as a connection pool's failed dials, to l at the debug
// level; a nil l discards them. Without it they go to standard error in
// the log package's format, which breaks a program's structured logs
// (masterjob's command with --log-format json) while Redis is down,
// when its logs matter most. The store's own errors already say what
// those lines say.
//
// go-redis has one logger per process: the call affects every Redis
// client of the program, not only this package's.
func SetClientLogger(l *slog.Logger) {
	goredis.SetLogger(clientLog{l})
}

// clientLog is go-redis's Logging interface over a slog.Logger.
type clientLog struct{ l *slog.Logger }

func (c clientLog) Printf(ctx context.Context, format string, v ...any) {
	if c.l == nil || !c.l.Enabled(ctx, slog.LevelDebug) {
		return
	}
	c.l.Log(ctx, slog.LevelDebug, "redis client: "+fmt.Sprintf(format, v...))
}
