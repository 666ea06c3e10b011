//go:build linux

// Command masterjob-bench-instance is one instance of the scale benchmark
// (bench.Env.Scale): a library executor that takes part in -locks locks
// with idle jobs, on the store -store, counting its store calls. Every
// -every it prints one JSON line on stdout:
//
//	{"id":"i03","mono":123456789,"calls":812,"held":1000,"rss":31457280}
//
// (mono is CLOCK_MONOTONIC in nanoseconds, calls the store calls made so
// far, held its masterships). SIGTERM stops it gracefully; the benchmark
// also kills it with SIGKILL.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/bench"
	"github.com/masterjob/masterjob/storeurl"
)

func main() {
	var (
		storeURL  = flag.String("store", "", "store URL")
		id        = flag.String("id", "", "instance id")
		locks     = flag.Int("locks", 1000, "number of locks, named L00000...")
		heartbeat = flag.Duration("heartbeat-interval", 0, "heartbeat (0: default)")
		tolerance = flag.Duration("tolerance", 0, "lease (0: default)")
		check     = flag.Duration("check-master-interval", 0, "check interval (0: default)")
		every     = flag.Duration("every", time.Second, "how often to print a line")
		balance   = flag.Bool("balance", true, "balance masterships")
		verbose   = flag.Bool("v", false, "log to stderr")
	)
	flag.Parse()
	if dir := os.Getenv("MASTERJOB_BENCH_CPUPROFILE"); dir != "" {
		// The instances are killed with SIGKILL at the end of a run: the
		// profile covers a fixed stretch from the start instead.
		if err := profileFor(filepath.Join(dir, *id+".pprof"), 45*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "masterjob-bench-instance:", err)
			os.Exit(1)
		}
	}
	if err := run(*storeURL, *id, *locks, *heartbeat, *tolerance, *check, *every, *balance, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "masterjob-bench-instance:", err)
		os.Exit(1)
	}
}

func run(url, id string, locks int, heartbeat, tolerance, check, every time.Duration, balance, verbose bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	st, err := storeurl.Open(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	counter, counted := bench.NewCountingStore(st)
	var w io.Writer = io.Discard
	if verbose {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	unnoticed := &expiryCounter{}
	if verbose {
		unnoticed.calls = log
	}
	opts := []masterjob.Option{
		masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInstanceID(id),
		masterjob.WithInitDelay(0),
		masterjob.WithLogger(log),
		masterjob.WithBalance(masterjob.BalanceConfig{Off: !balance}),
		masterjob.WithObserver(unnoticed),
	}
	if heartbeat > 0 {
		opts = append(opts, masterjob.WithHeartbeatInterval(heartbeat))
	}
	if tolerance > 0 {
		opts = append(opts, masterjob.WithTolerance(tolerance))
	}
	if check > 0 {
		opts = append(opts, masterjob.WithCheckMasterInterval(check))
	}
	ex, err := masterjob.New(counted, opts...)
	if err != nil {
		return err
	}
	idle := masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error { <-ctx.Done(); return nil })
	for i := range locks {
		if err := ex.StartMaster(fmt.Sprintf("L%05d", i), idle); err != nil {
			return err
		}
	}
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	enc := json.NewEncoder(os.Stdout)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		line := bench.InstanceLine{ID: id, Mono: mono(), Calls: counter.Calls().Total(), Held: len(ex.Masters()), RSS: rss(), CPU: cpuTime(), Unnoticed: unnoticed.n.Load()}
		if err := enc.Encode(line); err != nil {
			return err
		}
		select {
		case err := <-done:
			return err
		case <-t.C:
		}
	}
}

// profileFor writes a CPU profile of the first d of the process to path
// (MASTERJOB_BENCH_CPUPROFILE=dir: dir/ID.pprof).
func profileFor(path string, d time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	time.AfterFunc(d, func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	})
	return nil
}

func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// rss returns this process's resident set size in bytes.
// cpuTime returns the CPU time the process has used (user and system), in
// nanoseconds.
func cpuTime() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func rss() int64 {
	var ru unix.Rusage
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return ru.Maxrss * 1024
	}
	var size, res int64
	_, _ = fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

// expiryCounter counts the masterships that ended with
// masterjob.ErrLeaseExpired: the lease expired before the instance noticed.
// With -v it also logs each renewal and check round trip (calls), for
// reading where a run's time went.
type expiryCounter struct {
	masterjob.NopObserver
	n     atomic.Int64
	calls *slog.Logger
}

func (c *expiryCounter) Renewal(took time.Duration, leases int, err error) {
	if c.calls != nil {
		c.calls.Debug("observed renewal", "took", took, "leases", leases, "err", err)
	}
}

func (c *expiryCounter) Check(took time.Duration, locks int, err error) {
	if c.calls != nil {
		c.calls.Debug("observed check", "took", took, "locks", locks, "err", err)
	}
}

func (c *expiryCounter) Transition(t masterjob.Transition) {
	if errors.Is(t.Reason, masterjob.ErrLeaseExpired) {
		c.n.Add(1)
	}
}
