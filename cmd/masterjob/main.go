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
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}
