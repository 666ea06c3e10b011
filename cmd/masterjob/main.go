// Command masterjob runs a command on exactly one instance of a cluster at a
// time, and shows and controls the locks that elect it. See package cli, or
// run `masterjob help`.
package main

import (
	"context"
	"os"

	"github.com/masterjob/masterjob/cli"
)

func main() {
	// No signal.NotifyContext here: `masterjob run` handles SIGINT and
	// SIGTERM itself (the first stops the command gracefully and releases the
	// lease, a second kills the command), `masterjob serve` too (a graceful
	// shutdown of its HTTP server), and the other commands are short and
	// keep the default disposition.
	// One process, one Main: the logger of run and serve becomes slog's
	// default, so that what the store libraries log comes out in its
	// format (--log-format json).
	cli.InstallDefaultLogger = true
	code := cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	// Everything is released and closed: only the exit is left, whose
	// teardown of a Go process takes milliseconds of CPU that a successor
	// starting on this host needs more. Not earlier: a runner lowered while
	// it still held SQLite's write lock (leaving the member list) held up
	// every other instance (cli's TestProcessHandoffSQLite, in CI).
	cli.YieldForExit()
	os.Exit(code)
}
