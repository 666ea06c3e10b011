//go:build linux

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/masterjob/masterjob/cli"
)

// Main is the masterjob-chaos command: "masterjob-chaos [flags]" runs the
// driver; "masterjob-chaos instance ...", "runner ..." and "child ..." are
// how the driver re-executes itself for each instance (an executor, or in
// runner mode a `masterjob run` runner and its child command). It returns the process's exit code: 0 when the
// run found no violation, 1 when it did, 2 when it could not run.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == cli.LastWillArg {
		// A runner of this process died: its supervisor runs its will,
		// which tells the driver that it ran.
		done := recordWill(os.Getenv)
		code := cli.Main(context.Background(), args, stdout, stderr, os.LookupEnv)
		done(code)
		return code
	}
	if len(args) > 0 && isSubcommand(args[0]) {
		run := map[string]func([]string, io.Writer, io.Writer) error{
			"instance": RunInstance, "runner": RunRunner, "child": RunChild,
		}[args[0]]
		if err := run(args[1:], stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "masterjob-chaos %s: %v\n", args[0], err)
			return 1
		}
		return 0
	}
	cfg, jsonOut, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "masterjob-chaos:", err)
		return 2
	}
	cfg.Log = stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "masterjob-chaos:", err)
		return 2
	}
	rep.WriteSummary(stdout)
	if jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "masterjob-chaos:", err)
			return 2
		}
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// isSubcommand reports whether name is one of the subcommands by which the
// driver re-executes its binary, or a runner's supervisor its last will.
func isSubcommand(name string) bool {
	return name == "instance" || name == "runner" || name == "child" || name == cli.LastWillArg
}

func parseFlags(args []string, stderr io.Writer) (Config, string, error) {
	var cfg Config
	var jsonOut string
	fs := flag.NewFlagSet("masterjob-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: masterjob-chaos --store URL [flags]

Starts N instance processes of a masterjob executor (or, with --runner, of
'masterjob run' with a child command) on the store, injects faults on a
seeded random schedule (SIGKILL, SIGSTOP, SIGTERM, cut and latency to the
store, store restart, wall-clock jumps, disable/enable, store-side loss of
a lease, and a planned stop combined with a loss, cut or pause while the
job stops), then checks masterjob's promises (package doc, README
"Guarantees and their limits"). Exit status: 0 no violation, 1 violations,
2 the run could not be carried out. See docs/chaos.md.

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.StoreURL, "store", "", "store URL: sqlite:PATH or postgres://USER@HOST:PORT/DB?sslmode=disable")
	fs.IntVar(&cfg.Instances, "instances", DefaultInstances, "instance processes")
	fs.IntVar(&cfg.Locks, "locks", DefaultLocks, "lock names followed by every instance")
	fs.IntVar(&cfg.Faults, "faults", DefaultFaults, "faults to inject")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule (0: random, printed)")
	kinds := fs.String("kinds", "", "comma-separated fault kinds to inject (default all: "+strings.Join(FaultKinds, ",")+")")
	fs.DurationVar(&cfg.FaultGap, "fault-gap", DefaultFaultGap, "mean time between fault starts")
	fs.DurationVar(&cfg.Timing.Heartbeat, "heartbeat", DefaultTiming.Heartbeat, "instances' heartbeat interval")
	fs.DurationVar(&cfg.Timing.Tolerance, "tolerance", DefaultTiming.Tolerance, "instances' lease duration")
	fs.DurationVar(&cfg.Timing.Check, "check", DefaultTiming.Check, "instances' check-master interval")
	fs.DurationVar(&cfg.Timing.InitDelay, "init-delay", DefaultTiming.InitDelay, "instances' init delay")
	fs.DurationVar(&cfg.Timing.WriteEvery, "write-every", DefaultTiming.WriteEvery, "interval of a master's writes to the fenced sink")
	fs.DurationVar(&cfg.Margin, "margin", DefaultMargin, "slack added to tolerance + check for the no-master bound")
	fs.DurationVar(&cfg.StopGrace, "stop-grace", DefaultStopGrace, "how long a SIGSTOPped master may run after SIGCONT")
	fs.DurationVar(&cfg.DisableSlack, "disable-slack", DefaultDisableSlack, "slack added to one heartbeat for a job to stop after disable")
	fs.DurationVar(&cfg.LossSlack, "loss-slack", DefaultLossSlack, "slack added to one heartbeat for a job to stop after its lease was lost")
	fs.Float64Var(&cfg.SlowStop, "slow-stop", DefaultSlowStop, "fraction of jobs slow to stop (0: none)")
	fs.DurationVar(&cfg.SlowStopMax, "slow-stop-max", 0, "longest stop of a slow job (0: 1.5 x tolerance)")
	fs.DurationVar(&cfg.Timing.ShutdownTimeout, "shutdown-timeout", 0, "instances' shutdown timeout (0: slow-stop-max + 2 x tolerance + 1s)")
	fs.BoolVar(&cfg.Runner, "runner", false, "run each instance as a real `masterjob run` runner with a child command (needs --locks 1)")
	fs.BoolVar(&cfg.DirectChild, "direct-child", false, "runner mode: run the child command directly, not under sh -c 'CHILD & wait'")
	fs.BoolVar(&cfg.StrictSQLiteLock, "strict-sqlite-lock", false, "count a SIGSTOP that catches SQLite's write lock as a violation instead of a store outage")
	fs.DurationVar(&cfg.Settle, "settle", DefaultSettle, "fault-free period at the end")
	fs.DurationVar(&cfg.MaxDuration, "max-duration", 0, "bound on the whole run (0: from faults and fault gap)")
	fs.StringVar(&cfg.Dir, "dir", "", "work directory for logs and events.jsonl (default: a temporary one, removed after a passing run)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work directory after a passing run")
	fs.StringVar(&jsonOut, "json", "", "also write the report as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if *kinds != "" {
		cfg.Kinds = strings.Split(*kinds, ",")
	}
	if cfg.SlowStop == 0 {
		cfg.SlowStop = -1 // --slow-stop 0: none (Config's zero is the default)
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if cfg.StoreURL == "" {
		return cfg, "", fmt.Errorf("%w: --store is required (sqlite:PATH or postgres://...)", errUsage)
	}
	return cfg, jsonOut, nil
}
