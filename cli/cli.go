// Package cli implements the masterjob command: run a command on exactly one
// instance of a cluster at a time, serve the control API, dashboard, metrics
// and health probes, show the state and history of the locks, and disable or
// enable a lock cluster-wide.
//
// The package is importable so that the command can be tested through its
// arguments: cmd/masterjob only calls Main.
//
//	masterjob run --lock NAME [--http ADDR [--http-token T]] [flags] -- COMMAND [ARGS...]
//	masterjob serve --http ADDR [--http-token T] [--store URL]
//	masterjob status [--store URL | --server URL [--token T]] [--json] [LOCK...]
//	masterjob disable --lock NAME --reason TEXT [--store URL | --server URL [--token T]]
//	masterjob enable --lock NAME [--store URL | --server URL [--token T]]
//	masterjob history [--lock NAME] [--limit N] [--store URL | --server URL [--token T]] [--json]
//	masterjob instances [--lock NAME] [--store URL | --server URL [--token T]] [--json]
//	masterjob handoff --lock NAME [--to ID] [--reason TEXT] [--store URL | --server URL [--token T]]
//	masterjob watch [--lock NAME] [--store URL | --server URL [--token T]] [--json]
//	masterjob version
//	masterjob help [COMMAND]
//
// Every instance runs `masterjob run` with the same lock and store; the one
// elected master runs COMMAND as its child. When it stops being master (its
// lease could not be renewed, an operator disabled the lock, the runner was
// asked to stop), the child gets SIGTERM, and SIGKILL in time to be dead
// before the lease can expire in the store; only then is the lease released
// for another instance to take.
//
// With --http, run also serves the HTTP side (package httpserver) on the
// same store; serve serves it alone. status, disable, enable, history,
// instances, handoff and watch work on the store directly, or through such
// a server with --server.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// Exit codes of Main. A run whose command exited by itself exits with the
// command's exit code instead (see `masterjob help run`).
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // a runtime failure: the store failed, the executor failed
	ExitUsage   = 2 // bad input: an unknown command or flag, an invalid setting
)

// EnvStore is the environment variable that names the store URL when no
// --store flag is given.
const EnvStore = "MASTERJOB_STORE"

// Version is the version `masterjob version` prints. Set it at link time
// (-ldflags "-X github.com/masterjob/masterjob/cli.Version=v1.2.3"); when it
// is empty, the module version from the build information is used.
var Version = ""

// errUsage marks errors that Main reports with ExitUsage.
var errUsage = errors.New("usage")

// usageError returns an error that Main reports with ExitUsage. Like
// fmt.Errorf, it wraps the operands of %w verbs.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// unexpectedArg is the usage error of a command that takes no arguments
// and got fs.Arg(0). A lock's name given where --lock is wanted says so:
// 'masterjob disable nightly' is a natural first try.
func unexpectedArg(fs *flag.FlagSet) error {
	return usageError("unexpected argument %q%s", fs.Arg(0), lockHint(fs))
}

// lockHint suggests --lock ARG when fs has a --lock flag that is not set
// and its first argument could be a lock's name; else "".
func lockHint(fs *flag.FlagSet) string {
	arg := fs.Arg(0)
	if fs.Lookup("lock") == nil || flagSet(fs, "lock") || arg == "" || store.ValidateLockName(arg) != nil {
		return ""
	}
	hint := " (to name the lock: --lock " + quoteIfNeeded(arg)
	if fs.NArg() > 1 {
		// The flag package stops at the first argument: flags after it
		// were not read.
		hint += ", before any other argument"
	}
	return hint + ")"
}

// cmdEnv is what a command gets from Main.
type cmdEnv struct {
	ctx            context.Context
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

// command is one subcommand.
type command struct {
	name     string
	synopsis string // one line, for the command list
	usage    string // usage lines and description, for `help NAME`
	// flags returns the command's flag set, for help; the command builds its
	// own when it runs.
	flags func() *flag.FlagSet
	run   func(e *cmdEnv, c *command, args []string) int
}

var commands []*command

func init() {
	commands = []*command{runCommand, serveCommand, statusCommand, disableCommand, enableCommand, historyCommand,
		instancesCommand, handoffCommand, watchCommand, versionCommand}
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Main runs the masterjob command with args (without the program name) and
// returns the exit code. Output goes to stdout, diagnostics and logs to
// stderr; lookupEnv replaces os.LookupEnv (nil means an empty environment).
//
// Cancelling ctx asks a run to stop gracefully, as SIGTERM does: the child
// gets SIGTERM, the lease is released, the HTTP server (--http) shuts down,
// and Main returns; a serve shuts its server down and returns. `masterjob
// run` and `masterjob serve` handle SIGINT and SIGTERM themselves (see
// `masterjob help run`), so the caller should not turn them into a
// cancellation of ctx.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	e := &cmdEnv{ctx: ctx, stdout: stdout, stderr: stderr, lookupEnv: lookupEnv}
	if len(args) == 0 {
		printUsage(stderr)
		return ExitUsage
	}
	switch name := args[0]; name {
	case "help", "-h", "-help", "--help":
		return help(e, args[1:])
	case LastWillArg: // a supervisor's, never a user's (lastwill.go)
		return runLastWill(ctx, lookupEnv, stderr)
	default:
		c := lookupCommand(name)
		if c == nil {
			fmt.Fprintf(stderr, "masterjob: unknown command %q\nRun 'masterjob help' for usage.\n", name)
			return ExitUsage
		}
		return c.run(e, c, args[1:])
	}
}

func help(e *cmdEnv, args []string) int {
	switch len(args) {
	case 0:
		printUsage(e.stdout)
		return ExitOK
	case 1:
		c := lookupCommand(args[0])
		if c == nil {
			fmt.Fprintf(e.stderr, "masterjob help: unknown command %q\nRun 'masterjob help' for usage.\n", args[0])
			return ExitUsage
		}
		printCommandUsage(e.stdout, c)
		return ExitOK
	default:
		fmt.Fprintln(e.stderr, "usage: masterjob help [COMMAND]")
		return ExitUsage
	}
}

const usageHeader = `masterjob runs a command on exactly one instance of a cluster at a time.

Every instance runs 'masterjob run' with the same --lock and --store; the
instance elected master runs the command. If the master dies, hangs or loses
the store, another instance becomes master and runs the command again.

Usage:
  masterjob COMMAND [flags]

Commands:
`

const usageFooter = `
Store URLs (--store, else $MASTERJOB_STORE, else sqlite:masterjob.db):
  sqlite:PATH[?prefix=P&busy_timeout=D]
      A SQLite file. Instances must share one host: not for network filesystems.
  postgres://USER@HOST:PORT/DB?sslmode=disable[&schema=S&prefix=P]
      PostgreSQL (also postgresql://). Other parameters go to the driver.
{{engines}}  Every engine takes prefix=P (tables or keys of their own) and
  history_limit=N (history entries kept); README.md gives the rest.

Where status, disable, enable, history, instances, handoff and watch work,
first match wins:
  --server URL, --store URL, $MASTERJOB_SERVER, $MASTERJOB_STORE, the
  default store. A server is 'masterjob run --http' or 'masterjob serve';
  its bearer token is --token, else $MASTERJOB_HTTP_TOKEN.

HTTP (run --http ADDR, serve --http ADDR): the control API at
  /api/mastercontrols, the dashboard at /, /metrics, /healthz, /readyz.
  The bearer token of disable and enable is --http-token, else
  $MASTERJOB_HTTP_TOKEN. An ADDR other machines can reach (anything but
  127.0.0.0/8, ::1, localhost; ":PORT" is every interface) refuses to start
  without a token (exit 2) unless --http-allow-insecure is given.

Configuration of 'masterjob run', per setting, later sources win:
  1. defaults
  2. the "masterJobExecutor" section of a JSON config file
     (--config FILE, else $MASTERJOB_CONFIG)
  3. environment: INIT_DELAY, CHECK_MASTER_INTERVAL,
     MASTER_JOB_HEARTBEAT_INTERVAL, MASTER_JOB_TOLERANCE,
     MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT
  4. flags
  In the file and the environment a duration is milliseconds (8000) or a Go
  duration ("8s"); flags take either too, but refuse a bare number below 10
  ("5" would be 5ms: write 5s). Every timing but the init delay must be at
  least 10ms, whatever its source.

Exit codes: 0 success, 1 failure, 2 bad input; 'run' may exit with the
command's own exit code (see 'masterjob help run').

Run 'masterjob help COMMAND' for the flags of a command.
`

func printUsage(w io.Writer) {
	fmt.Fprint(w, usageHeader)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.synopsis)
	}
	fmt.Fprintf(w, "  %-9s %s\n", "help", "show this help, or the help of a command")
	var engines strings.Builder
	for _, form := range storeurl.EngineUsages() {
		fmt.Fprintf(&engines, "  %s\n", form)
	}
	fmt.Fprint(w, strings.Replace(usageFooter, "{{engines}}", engines.String(), 1))
}

func printCommandUsage(w io.Writer, c *command) {
	fmt.Fprint(w, c.usage)
	if c.flags == nil {
		return
	}
	fs := c.flags()
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprint(w, "\nFlags (-name and --name are the same):\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// newFlagSet returns a flag set that reports nothing itself: parse does.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("masterjob "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args with fs. When it returns false, the command must return
// code: help was printed (-h) or the arguments were bad.
func parse(e *cmdEnv, c *command, fs *flag.FlagSet, args []string) (ok bool, code int) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return true, 0
	case errors.Is(err, flag.ErrHelp):
		printCommandUsage(e.stdout, c)
		return false, ExitOK
	default:
		return false, reportUsage(e, c, err)
	}
}

// reportUsage prints a bad-input error for command c and returns ExitUsage.
func reportUsage(e *cmdEnv, c *command, err error) int {
	msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
	msg = strings.TrimPrefix(msg, "masterjob: ") // from masterjob.LoadConfig
	fmt.Fprintf(e.stderr, "masterjob %s: %s\nRun 'masterjob help %s' for usage.\n", c.name, msg, c.name)
	return ExitUsage
}

// storeURL returns the store URL: the flag, else $MASTERJOB_STORE, else the
// default.
func storeURL(e *cmdEnv, flagValue string, defaultURL string) string {
	if flagValue != "" {
		return flagValue
	}
	if v, ok := e.lookupEnv(EnvStore); ok && v != "" {
		return v
	}
	return defaultURL
}

var versionCommand = &command{
	name:     "version",
	synopsis: "print the version",
	usage: `usage: masterjob version

Prints the version of masterjob on the first line ("masterjob VERSION"), then
the source revision it was built from, if known, and the Go toolchain.

VERSION is the module version: v1.2.3 for a binary installed with
'go install github.com/masterjob/masterjob/cmd/masterjob@v1.2.3', or, for a
binary built with 'go build' in a git checkout, the tag at HEAD if the tree is
clean, else a pseudo-version (v0.0.0-DATE-REVISION, with +dirty for
uncommitted changes). The revision line shows the commit, its time, and
"modified" when the tree had uncommitted changes. 'go run' and builds with
-buildvcs=false record neither: VERSION is then "(devel)".
`,
	flags: func() *flag.FlagSet { return newFlagSet("version") },
	run: func(e *cmdEnv, c *command, args []string) int {
		fs := newFlagSet("version")
		if ok, code := parse(e, c, fs, args); !ok {
			return code
		}
		if fs.NArg() > 0 {
			return reportUsage(e, c, unexpectedArg(fs))
		}
		bi, _ := debug.ReadBuildInfo()
		fmt.Fprint(e.stdout, versionText(bi, Version, runtime.GOOS+"/"+runtime.GOARCH))
		return ExitOK
	},
}

// versionText is what `masterjob version` prints: the version on the first
// line, the VCS revision if the build recorded one, and the toolchain. bi may
// be nil (a binary without build information); override, when set, replaces
// the module version (Version, set at link time).
func versionText(bi *debug.BuildInfo, override, platform string) string {
	var b strings.Builder
	v, goVersion := "(unknown)", runtime.Version()
	var rev, at, modified string
	if bi != nil {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	if override != "" {
		v = override
	}
	fmt.Fprintf(&b, "masterjob %s\n", v)
	if rev != "" {
		fmt.Fprintf(&b, "revision %s", rev)
		if at != "" {
			fmt.Fprintf(&b, ", committed %s", at)
		}
		if modified == "true" {
			b.WriteString(", modified")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "built with %s %s\n", goVersion, platform)
	return b.String()
}

// version returns the short version that instances report (status shows it)
// and the client sends as its User-Agent: Version if set, else the module
// version from the build information; a "(devel)" build that recorded its
// VCS revision gets the revision's first 12 digits, and "+dirty" when the
// tree was modified.
func version() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	return shortVersion(bi)
}

func shortVersion(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	if v != "(devel)" {
		return v // a module version: a tag or a pseudo-version that names the revision
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " " + rev
		if dirty {
			v += "+dirty"
		}
	}
	return v
}
