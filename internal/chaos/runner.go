//go:build linux

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/cli"
	"github.com/masterjob/masterjob/internal/childproc"
	"github.com/masterjob/masterjob/internal/trace"
)

// RunRunner is an instance in runner mode: it runs `masterjob run` (package
// cli, in this process, exactly as the masterjob command does) for the
// run's one lock, with a child command that reports its mastership to the
// driver (RunChild). It reports ready and its pauses like an instance, and
// stops the runner gracefully when the driver asks (as SIGTERM would; the
// runner handles SIGTERM itself). By default the child runs under
// "sh -c 'CHILD & wait'", so the process that must die with the runner is
// a grandchild of it. It is called by Main for the "runner" subcommand.
func RunRunner(args []string, stdout, stderr io.Writer) error {
	a, err := parseInstanceArgs(args)
	if err != nil {
		return err
	}
	spec, err := parseStoreURL(a.storeURL)
	if err != nil {
		return err
	}
	storeURL, err := runnerStoreURL(spec, namespace(a.runID), a.dsn)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	conn, err := net.Dial("unix", a.sock)
	if err != nil {
		return fmt.Errorf("runner: dial driver: %w", err)
	}
	defer conn.Close()
	in := &instance{args: a, conn: conn, enc: json.NewEncoder(conn)}
	in.reach.in = in

	child := append([]string{exe, "child"}, childArgs(a)...)
	if !a.directChild {
		child = append([]string{"sh", "-c", `"$@" & wait`, "sh"}, child...)
	}
	t := a.timing
	runArgs := append([]string{"run",
		"--lock", lockName(0),
		"--store", storeURL,
		"--init-delay", t.InitDelay.String(),
		"--heartbeat-interval", t.Heartbeat.String(),
		"--tolerance", t.Tolerance.String(),
		"--check-master-interval", t.Check.String(),
		"--shutdown-timeout", t.ShutdownTimeout.String(),
		"--",
	}, child...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.control(cancel)
	// The runner offers no observer: its renewals are timed from the
	// loop's trace marks (one lock, so one renew.sent per call), as an
	// instance's observer reports them, for the checks bounded by "the
	// holder's next renewal", and the end of each check is reported as an
	// instance's observer reports it (Life.LastCheck).
	//
	// It is ready once `masterjob run` catches SIGTERM: a SIGTERM before
	// that (the driver may send one as soon as it is ready) would end the
	// process by the signal's default action, which is not the graceful
	// stop under test.
	var renewBegan atomic.Int64
	trace.SetSink(func(ns int64, event, lock string) {
		switch event {
		case "signals.caught":
			in.send(Message{Type: msgHello, Index: a.index, Gen: a.gen, PID: os.Getpid(), T: Mono()})
			go in.watchPauses(ctx)
		case "renew.sent":
			renewBegan.Store(ns)
		case "renew.done":
			observer{in}.Renewal(time.Duration(ns-renewBegan.Load()), 1, nil)
		case "renew.failed":
			observer{in}.Renewal(time.Duration(ns-renewBegan.Load()), 1, errRenewalFailed)
		case "check.done":
			in.send(Message{Type: msgCheck, T: Mono()})
		case "job.cancel":
			// The runner is ending its command itself (a lost lease, a
			// disable, a shutdown), maybe with a SIGKILL that the command
			// cannot report: a kill of the runner from now on owes no will.
			in.send(Message{Type: msgRunnerStop, Lock: lock, T: ns})
		}
	})
	defer trace.SetSink(nil)
	// The runner reads no environment: its settings are the flags above.
	logs := &logReach{w: stderr, r: &in.reach, window: t.Tolerance}
	code := cli.Main(ctx, runArgs, stdout, logs, func(string) (string, bool) { return "", false })
	in.reach.flush()
	bye := Message{Type: msgBye, T: Mono()}
	if code != cli.ExitOK {
		bye.Err = fmt.Sprintf("masterjob run exited with status %d", code)
	}
	in.send(bye)
	if bye.Err != "" {
		return errors.New(bye.Err)
	}
	return nil
}

// errRenewalFailed stands for a runner's failed renewal, whose error its
// trace mark does not carry.
var errRenewalFailed = errors.New("renewal failed")

// runnerStoreURL is the store URL a runner uses: the run's tables (or
// keys), and on PostgreSQL or an engine the instance's proxy (dsn; an
// engine's host:port).
func runnerStoreURL(spec storeSpec, ns, dsn string) (string, error) {
	if spec.engine != nil { // Config.validate checked RunnerURL
		return spec.engine.RunnerURL(spec.dsn, ns, dsn)
	}
	switch spec.kind {
	case kindSQLite:
		return "sqlite:" + spec.path + "?prefix=" + ns + "_", nil
	case kindPostgres:
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		q := u.Query()
		q.Set("masterjob_schema", ns)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return "", errors.New("chaos: unknown store kind " + spec.kind)
}

// childArgs are the flags of the child command.
func childArgs(a instanceArgs) []string {
	return []string{
		"--sock", a.sock,
		"--index", strconv.Itoa(a.index),
		"--gen", strconv.Itoa(a.gen),
		"--write-every", a.timing.WriteEvery.String(),
		"--slow-stop", strconv.FormatFloat(a.slowStop, 'g', -1, 64),
		"--slow-max", a.slowMax.String(),
		"--seed", strconv.FormatUint(a.seed, 10),
	}
}

// RunChild is the command a runner runs while master (runner mode): it
// reports its mastership (lock and token from the runner's environment) to
// the driver and writes to the fenced sink every WriteEvery. On SIGTERM it
// reports that it was told to stop and, if its plan says it is slow to
// stop, goes on writing for that long, ignoring further SIGTERMs: the
// runner must kill it in time. It never exits by itself otherwise. It is
// called by Main for the "child" subcommand.
func RunChild(args []string, _, _ io.Writer) error {
	var a instanceArgs
	fs := flag.NewFlagSet("masterjob-chaos child", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.sock, "sock", "", "driver socket")
	fs.IntVar(&a.index, "index", 0, "instance slot")
	fs.IntVar(&a.gen, "gen", 0, "restart generation")
	fs.DurationVar(&a.timing.WriteEvery, "write-every", 20*time.Millisecond, "")
	fs.Float64Var(&a.slowStop, "slow-stop", 0, "")
	fs.DurationVar(&a.slowMax, "slow-max", 0, "")
	fs.Uint64Var(&a.seed, "seed", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lock := os.Getenv(childproc.EnvLock)
	token, err := strconv.ParseInt(os.Getenv(childproc.EnvToken), 10, 64)
	if err != nil || lock == "" || a.sock == "" {
		return fmt.Errorf("child: needs --sock and the runner's %s and %s", childproc.EnvLock, childproc.EnvToken)
	}
	// Catch SIGTERM (and SIGINT) from the start: the stop is ours to pace.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// The connection is never closed here: the kernel closes it when the
	// process dies, which is how the driver learns that it is dead.
	conn, err := net.Dial("unix", a.sock)
	if err != nil {
		return fmt.Errorf("child: dial driver: %w", err)
	}
	in := &instance{args: a, conn: conn, enc: json.NewEncoder(conn)}
	gone := make(chan struct{}) // the driver went away
	go func() {
		defer close(gone)
		_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
	}()

	plan, _ := stopPlan(a, token)
	in.send(Message{Type: msgChild, Index: a.index, Gen: a.gen, PID: os.Getpid(), Lock: lock, Token: token, T: Mono()})
	in.send(Message{Type: msgStart, Lock: lock, Token: token, T: Mono(), Plan: int64(plan), Policy: policySigterm})
	tick := time.NewTicker(a.timing.WriteEvery)
	defer tick.Stop()
	write := func() { in.send(Message{Type: msgWrite, Lock: lock, Token: token, T: Mono()}) }
	for told := false; !told; {
		write()
		select {
		case <-tick.C:
		case <-sigs:
			told = true
		case <-gone:
			return errors.New("child: the driver went away")
		}
	}
	in.send(Message{Type: msgStopping, Lock: lock, Token: token, T: Mono(), Reason: "SIGTERM"})
	how := howPrompt
	if plan > 0 {
		how = howDone
		end := time.NewTimer(plan)
		defer end.Stop()
	slow:
		for {
			write()
			select {
			case <-tick.C:
			case <-sigs: // ignored: the runner escalates to SIGKILL
			case <-end.C:
				break slow
			case <-gone:
				return errors.New("child: the driver went away")
			}
		}
	}
	in.send(Message{Type: msgStop, Lock: lock, Token: token, T: Mono(), Reason: "SIGTERM", How: how})
	return nil
}
