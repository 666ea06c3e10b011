//go:build linux

// Command masterjob-bench measures masterjob's failover, handoff, control
// latency, SIGSTOP recovery, store round trips and idle cost on SQLite and
// PostgreSQL, and prints the results as Markdown (and JSON with -json).
//
// Run it from the repository, so that it can build the masterjob command and
// its instrumented child (or pass them with -masterjob and -child):
//
//	go build -o /tmp/mjb/masterjob-bench ./bench/cmd/masterjob-bench
//	/tmp/mjb/masterjob-bench -store sqlite \
//	    -store 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	    -json /tmp/mjb/results.json -md /tmp/mjb/results.md
//
// See docs/benchmarks.md for every command and the figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/bench"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// scenarios, in the order they run.
var allScenarios = []string{"exec", "failover", "treefailover", "handoff", "handoff-api", "control", "sigstop", "roundtrips", "idle", "scale"}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	os.Exit(run())
}

func run() int {
	var stores listFlag
	flag.Var(&stores, "store", "store to measure: sqlite, a PostgreSQL URL (each scenario uses its own masterjob_schema, dropped afterwards), "+
		"etcd (masterjob on a throw-away etcd server, each scenario under its own key prefix), etcd-election (etcd's own election on that server), "+
		"or a redis:// or mysql:// URL (each scenario under its own key or table prefix, deleted afterwards); repeatable (default sqlite)")
	var (
		masterjobBin = flag.String("masterjob", "", "the masterjob binary (default: go build ./cmd/masterjob into the work directory)")
		childBin     = flag.String("child", "", "the instrumented child (default: go build ./bench/cmd/masterjob-bench-child into the work directory)")
		electionBin  = flag.String("election", "", "etcd's election runner of -store etcd-election (default: go build ./bench/cmd/masterjob-bench-etcd-election into the work directory)")
		scenarios    = flag.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", "))
		trials       = flag.Int("trials", 30, "trials per scenario")
		longTrials   = flag.Int("long-trials", 10, "trials for leases of 5s or more")
		leasesFlag   = flag.String("leases", "1s,2s,10s", "leases (tolerance) of the failover, handoff and handoff-api scenarios; heartbeat = lease/3, check interval 30s")
		controlLease = flag.Duration("control-lease", 2*time.Second, "lease of the disable/enable scenario (heartbeat = lease/3)")
		controlCheck = flag.Duration("control-check", 5*time.Second, "check interval of the disable/enable scenario")
		stopLease    = flag.Duration("sigstop-lease", time.Second, "lease of the SIGSTOP scenario")
		stopPause    = flag.Duration("sigstop-pause", 2*time.Second, "how long the SIGSTOP scenario keeps the master stopped (more than the lease)")
		stopReplace  = flag.Bool("sigstop-replace", false, "replace the resumed runner by a fresh one after each SIGSTOP trial (by default it stays and must take over from the next frozen master)")
		sizesFlag    = flag.String("sizes", "1,100,1000,10000", "lock counts of the round-trip scenario")
		rtLease      = flag.Duration("rt-lease", 3*time.Second, "lease of the round-trip scenario (heartbeat = lease/3, check interval 30s)")
		window       = flag.Duration("window", 20*time.Second, "measuring window of the round-trip scenario")
		idleWindow   = flag.Duration("idle-window", 60*time.Second, "measuring window of the idle scenario")
		scaleInsts   = flag.Int("scale-instances", 10, "instances of the scale scenario")
		scaleLocks   = flag.String("scale-locks", "10000", "comma-separated lock counts of the scale scenario")
		scaleLease   = flag.Duration("scale-lease", 3*time.Second, "lease of the scale scenario (heartbeat = lease/3)")
		scaleCheck   = flag.Duration("scale-check", 5*time.Second, "check interval of the scale scenario")
		scaleWindow  = flag.Duration("scale-window", 20*time.Second, "window over which the scale scenario counts round trips")
		traceSteps   = flag.Bool("trace", false, "trace the runners ($MASTERJOB_TRACE) and break each graceful handoff down into its steps")
		scaleLogs    = flag.String("scale-logs", "", "directory for the scale instances' debug logs (default: none)")
		instanceBin  = flag.String("instance", "", "the scale scenario's instance (default: go build ./bench/cmd/masterjob-bench-instance into the work directory)")
		workDir      = flag.String("workdir", "", "directory for binaries, databases and runner logs (default: a new temporary directory, removed unless -keep)")
		keep         = flag.Bool("keep", false, "keep the work directory")
		jsonOut      = flag.String("json", "", "write the results as JSON to this file")
		mdOut        = flag.String("md", "", "write the results as Markdown to this file (default: stdout)")
		etcdBuild    = flag.String("etcd-build", string(bench.EtcdKind), "etcd of -store etcd and etcd-election: debian (the system's etcd binary) or current (built from go.etcd.io/etcd/server/v3)")
	)
	flag.Parse()
	bench.EtcdKind = etcdtest.Kind(*etcdBuild)
	defer bench.StopEtcd()
	if len(stores) == 0 {
		stores = listFlag{bench.SQLite}
	}
	leases, err := parseDurations(*leasesFlag)
	if err != nil {
		return usage("-leases: %v", err)
	}
	sizes, err := parseInts(*sizesFlag)
	if err != nil {
		return usage("-sizes: %v", err)
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allScenarios, s) {
			return usage("-scenarios: unknown scenario %q", s)
		}
		want[s] = true
	}
	if *stopPause <= *stopLease {
		return usage("-sigstop-pause must be longer than -sigstop-lease")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}

	dir := *workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "masterjob-bench-"); err != nil {
			logf("%v", err)
			return 1
		}
	}
	if !*keep {
		defer os.RemoveAll(dir)
	} else {
		logf("work directory: %s", dir)
	}
	var bins bench.Binaries
	if *masterjobBin == "" || *childBin == "" || *electionBin == "" {
		logf("building masterjob, the child and etcd's election runner into %s", dir)
		if bins, err = bench.Build(dir); err != nil {
			logf("%v", err)
			return 1
		}
	}
	if *masterjobBin != "" {
		bins.Masterjob = *masterjobBin
	}
	if *childBin != "" {
		bins.Child = *childBin
	}
	if *electionBin != "" {
		bins.Election = *electionBin
	}
	if want["scale"] && *instanceBin == "" {
		*instanceBin = filepath.Join(dir, "masterjob-bench-instance")
		if err := bench.BuildPackage(*instanceBin, "github.com/masterjob/masterjob/bench/cmd/masterjob-bench-instance"); err != nil {
			logf("%v", err)
			return 1
		}
	}
	scaleSizes, err := parseInts(*scaleLocks)
	if err != nil {
		return usage("-scale-locks: %v", err)
	}

	var pgDSN, redisVersion, mysqlVersion string
	var envs []*bench.Env
	for i, spec := range stores {
		b, err := bench.NewBackend(spec, filepath.Join(dir, fmt.Sprintf("store-%d", i)))
		if err != nil {
			return usage("-store: %v", err)
		}
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("store-%d", i)), 0o755); err != nil {
			logf("%v", err)
			return 1
		}
		if b.Kind == bench.Postgres && pgDSN == "" {
			pgDSN = b.DSN()
		}
		switch b.Kind {
		case bench.Redis:
			redisVersion = bench.ServerVersion(ctx, spec)
		case bench.MySQL:
			mysqlVersion = bench.ServerVersion(ctx, spec)
		}
		envs = append(envs, &bench.Env{Bin: bins, Backend: b, Dir: filepath.Join(dir, fmt.Sprintf("runs-%d", i)), Logf: logf, Trace: *traceSteps})
	}

	rep := &bench.Report{
		Machine: bench.DescribeMachine(ctx, pgDSN),
		Command: commandLine(),
		Started: time.Now(),
	}
	rep.Machine.Redis, rep.Machine.MySQL = redisVersion, mysqlVersion
	failed := false
	note := func(what string, err error) {
		if errors.Is(err, context.Canceled) || ctx.Err() != nil {
			return
		}
		logf("FAILED %s: %v", what, err)
		failed = true
	}
	trialsFor := func(lease time.Duration) int {
		if lease >= 5*time.Second {
			return *longTrials
		}
		return *trials
	}
	if want["exec"] && len(envs) > 0 {
		logf("exec baseline")
		if r, err := envs[0].ExecBaseline(ctx, *trials); err != nil {
			note("exec baseline", err)
		} else {
			rep.Results = append(rep.Results, r)
		}
	}
	for _, env := range envs {
		kind := env.Backend.Kind
		election := kind == bench.EtcdElection // no store API: no disable/enable, no round trips
		// The scenarios run once per lease.
		for _, sc := range []struct {
			key, name string
			store     bool // needs the store's API (not etcd's election)
			run       func(context.Context, time.Duration, int) (*bench.Result, error)
		}{
			{"failover", "crash failover", false, env.CrashFailover},
			{"treefailover", "crash failover, whole tree", false, env.TreeCrashFailover},
			{"handoff", "graceful handoff", false, env.Handoff},
			{"handoff-api", "hand-off through the API", true, env.HandoffAPI},
		} {
			if !want[sc.key] || (sc.store && election) {
				continue
			}
			for _, lease := range leases {
				logf("%s: %s, lease %v", kind, sc.name, lease)
				if r, err := sc.run(ctx, lease, trialsFor(lease)); err != nil {
					note(kind+" "+sc.name, err)
				} else {
					rep.Results = append(rep.Results, r)
				}
			}
		}
		if want["control"] && !election {
			timing := bench.LeaseTiming(*controlLease)
			timing.Check = *controlCheck
			logf("%s: disable/enable, %v", kind, timing)
			if r, err := env.Control(ctx, timing, *trials); err != nil {
				note(kind+" disable/enable", err)
			} else {
				rep.Results = append(rep.Results, r)
			}
		}
		if want["sigstop"] {
			logf("%s: SIGSTOP/SIGCONT, lease %v, pause %v", kind, *stopLease, *stopPause)
			if r, err := env.SigStop(ctx, *stopLease, *stopPause, *trials, *stopReplace); err != nil {
				note(kind+" sigstop", err)
			} else {
				rep.Results = append(rep.Results, r)
			}
		}
		if want["roundtrips"] && !election {
			for _, mode := range []string{bench.ModeHeld, bench.ModeFollowed} {
				for _, n := range sizes {
					r, err := env.RoundTrips(ctx, mode, n, bench.LeaseTiming(*rtLease), *window)
					if err != nil {
						note(fmt.Sprintf("%s round trips %s %d", kind, mode, n), err)
						continue
					}
					rep.RoundTrips = append(rep.RoundTrips, *r)
				}
			}
		}
		if want["scale"] && !election {
			for _, n := range scaleSizes {
				timing := bench.LeaseTiming(*scaleLease)
				timing.Check = *scaleCheck
				logf("%s: scale, %d instances × %d locks, %v", kind, *scaleInsts, n, timing)
				r, err := env.Scale(ctx, *instanceBin, bench.ScaleConfig{Instances: *scaleInsts, Locks: n, Timing: timing, Window: *scaleWindow, LogDir: *scaleLogs})
				if err != nil {
					note(fmt.Sprintf("%s scale %d", kind, n), err)
					continue
				}
				rep.Scale = append(rep.Scale, r)
			}
		}
		if want["idle"] {
			logf("%s: idle runners, default timing", kind)
			if r, err := env.Idle(ctx, *idleWindow); err != nil {
				note(kind+" idle", err)
			} else {
				rep.Idle = append(rep.Idle, r)
			}
		}
	}
	rep.Elapsed = time.Since(rep.Started)
	rep.Machine.Etcd = bench.EtcdVersion()

	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			logf("%v", err)
			failed = true
		}
	}
	out := os.Stdout
	if *mdOut != "" {
		f, err := os.Create(*mdOut)
		if err != nil {
			logf("%v", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	rep.Markdown(out)
	if ctx.Err() != nil {
		logf("interrupted")
		return 130
	}
	if failed {
		return 1
	}
	return 0
}

func usage(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "masterjob-bench: "+format+"\n", args...)
	flag.Usage()
	return 2
}

// commandLine is the command as run, with PostgreSQL passwords hidden.
func commandLine() string {
	args := make([]string, len(os.Args))
	for i, a := range os.Args {
		args[i] = bench.RedactURL(a)
	}
	args[0] = "masterjob-bench"
	return strings.Join(args, " ")
}
