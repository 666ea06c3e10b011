//go:build !masterjob_noredis

package main

// The engines kept in modules of their own register their store URL
// schemes (storeurl.Register) when imported; SQLite and PostgreSQL are
// built into package storeurl. Build with -tags masterjob_noredis to leave
// this one out of the command (a smaller binary that starts faster and
// keeps less resident; its URLs are then refused with a message that
// says so).
import "github.com/masterjob/masterjob/store/redis" // redis:// and rediss://

// The Redis client library's own lines (a pool's failed dials, written to
// standard error in the log package's format) would break the runner's
// structured logs while Redis is down; the store's errors say the same.
func init() { redis.SetClientLogger(nil) }
