//go:build linux

// Command masterjob-bench-rounds compares builds of masterjob: it runs
// masterjob-bench with the same flags in rounds, each build once per round
// (in the given order in odd rounds and in reverse in even ones, so that a
// host that drifts during a round favours no build), keeps every run's
// JSON report, and writes one report pooled over the rounds: medians and
// p99s with bootstrap confidence intervals, ratios to etcd's election
// measured in the same runs, round by round and pooled, and ratios between
// builds.
//
// A build is a directory that holds masterjob-bench and the programs it
// runs (masterjob, masterjob-bench-child, masterjob-bench-etcd-election,
// masterjob-bench-instance; those present are passed to it). Build one
// from a checkout with
//
//	D=/tmp/mjbA; mkdir -p $D
//	go build -o $D/masterjob ./cmd/masterjob && (cd bench && go build -o $D/ ./cmd/...)
//
// then compare, giving masterjob-bench's flags after --:
//
//	masterjob-bench-rounds -out /tmp/cmp -rounds 4 -build A=/tmp/mjbA -build B=/tmp/mjbB -- \
//	    -store etcd-election -store etcd -scenarios handoff -leases 2s -trials 40
//
// Each run writes BUILD-ROUND.json, .md and .log in -out. -report writes
// the pooled report again from the files there, without running anything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/bench"
)

// build is one -build NAME=DIR.
type build struct{ name, dir string }

type buildsFlag []build

func (b *buildsFlag) String() string {
	var s []string
	for _, x := range *b {
		s = append(s, x.name+"="+x.dir)
	}
	return strings.Join(s, ",")
}

func (b *buildsFlag) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok || name == "" || dir == "" {
		return fmt.Errorf("want NAME=DIR, got %q", v)
	}
	if strings.ContainsAny(name, "/ ") || strings.HasSuffix(name, "-") {
		return fmt.Errorf("build name %q: no slash, space or trailing dash", name)
	}
	if slices.ContainsFunc(*b, func(x build) bool { return x.name == name }) {
		return fmt.Errorf("build %q named twice", name)
	}
	*b = append(*b, build{name: name, dir: dir})
	return nil
}

// programs are the programs of a build directory passed to masterjob-bench,
// by flag.
var programs = []struct{ flag, file string }{
	{"masterjob", "masterjob"},
	{"child", "masterjob-bench-child"},
	{"election", "masterjob-bench-etcd-election"},
	{"instance", "masterjob-bench-instance"},
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("masterjob-bench-rounds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var builds buildsFlag
	fs.Var(&builds, "build", "a build to measure, NAME=DIR (DIR holds masterjob-bench and the programs it runs); repeatable, in the order of odd rounds")
	var (
		out    = fs.String("out", "", "directory for the runs' reports and logs (required)")
		rounds = fs.Int("rounds", 3, "rounds: each build runs once per round")
		keep   = fs.Bool("keep", false, "keep each run's work directory (OUT/w-BUILD-ROUND)")
		report = fs.Bool("report", false, "run nothing: write the pooled report of the runs already in -out")
		ref    = fs.String("ref", "", "the build the others are compared with (default: the first -build, or with -report the first in name order)")
		md     = fs.String("md", "", "write the pooled report to this file (default: standard output)")
		seed   = fs.Uint64("seed", 1, "seed of the bootstrap's resampling")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "masterjob-bench-rounds: "+format+"\n", a...)
		return 2
	}
	if *out == "" {
		return fail("-out is required")
	}
	benchArgs := fs.Args()
	if !*report {
		if len(builds) == 0 {
			return fail("name at least one -build NAME=DIR (or -report)")
		}
		if *rounds < 1 {
			return fail("-rounds must be at least 1")
		}
		if f := setByCaller(benchArgs); f != "" {
			return fail("masterjob-bench's -%s is set by this command; leave it out", f)
		}
		for _, b := range builds {
			if _, err := os.Stat(filepath.Join(b.dir, "masterjob-bench")); err != nil {
				return fail("build %s: %v", b.name, err)
			}
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fail("%v", err)
		}
		if have, _ := bench.LoadRounds(*out); len(have) > 0 {
			return fail("%s already holds results; choose another -out, or -report to read them", *out)
		}
		if *ref == "" {
			*ref = builds[0].name
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		failed := runRounds(ctx, builds, *rounds, *out, *keep, benchArgs, stderr)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "masterjob-bench-rounds: interrupted")
			return 1
		}
		if code := writeReport(*out, *ref, *md, *seed, stdout, stderr); code != 0 {
			return code
		}
		if failed > 0 {
			fmt.Fprintf(stderr, "masterjob-bench-rounds: %d run(s) failed; see their logs in %s\n", failed, *out)
			return 1
		}
		return 0
	}
	if len(benchArgs) > 0 || len(builds) > 0 {
		return fail("-report reads %s only: no -build and no masterjob-bench flags", *out)
	}
	return writeReport(*out, *ref, *md, *seed, stdout, stderr)
}

// setByCaller returns the first masterjob-bench flag in args that this
// command sets itself (its outputs, and the programs of a build), or "".
func setByCaller(args []string) string {
	own := []string{"json", "md", "workdir", "keep"}
	for _, p := range programs {
		own = append(own, p.flag)
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && slices.Contains(own, name) {
			return name
		}
	}
	return ""
}

// order returns the builds in the order of round r (1-based): as given in
// odd rounds, reversed in even ones.
func order(builds []build, r int) []build {
	o := slices.Clone(builds)
	if r%2 == 0 {
		slices.Reverse(o)
	}
	return o
}

// runRounds runs every build once per round and returns how many runs
// failed. It stops starting runs once ctx is done.
func runRounds(ctx context.Context, builds []build, rounds int, out string, keep bool, benchArgs []string, stderr io.Writer) (failed int) {
	progress, err := os.OpenFile(filepath.Join(out, "progress"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err == nil {
		defer progress.Close()
	}
	say := func(format string, a ...any) {
		line := time.Now().UTC().Format("15:04:05") + " " + fmt.Sprintf(format, a...) + "\n"
		io.WriteString(stderr, line)
		if progress != nil {
			progress.WriteString(line)
		}
	}
	for r := 1; r <= rounds; r++ {
		for _, b := range order(builds, r) {
			if ctx.Err() != nil {
				return failed
			}
			say("round %d of %d, build %s: started", r, rounds, b.name)
			began := time.Now()
			if err := runOne(ctx, b, r, out, keep, benchArgs); err != nil {
				failed++
				say("round %d of %d, build %s: failed after %s: %v", r, rounds, b.name, time.Since(began).Round(time.Second), err)
				continue
			}
			say("round %d of %d, build %s: done in %s", r, rounds, b.name, time.Since(began).Round(time.Second))
		}
	}
	return failed
}

// runOne runs masterjob-bench of build b for round r.
func runOne(ctx context.Context, b build, r int, out string, keep bool, benchArgs []string) error {
	base := filepath.Join(out, strings.TrimSuffix(bench.RoundFile(b.name, r), ".json"))
	args := []string{"-json", base + ".json", "-md", base + ".md"}
	if keep {
		args = append(args, "-keep", "-workdir", filepath.Join(out, fmt.Sprintf("w-%s-%d", b.name, r)))
	}
	for _, p := range programs {
		if path := filepath.Join(b.dir, p.file); isFile(path) {
			args = append(args, "-"+p.flag, path)
		}
	}
	args = append(args, benchArgs...)
	logf, err := os.Create(base + ".log")
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(b.dir, "masterjob-bench"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// An interrupted run stops as masterjob-bench stops on Ctrl-C: its
	// servers and runners are cleaned up.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logf.Name())
	}
	if !isFile(base + ".json") {
		return errors.New("no JSON report written (log: " + logf.Name() + ")")
	}
	return nil
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// writeReport writes the pooled report of the runs in dir.
func writeReport(dir, ref, mdPath string, seed uint64, stdout, stderr io.Writer) int {
	rounds, err := bench.LoadRounds(dir)
	if err != nil {
		fmt.Fprintf(stderr, "masterjob-bench-rounds: %v\n", err)
		return 1
	}
	if len(rounds) == 0 {
		fmt.Fprintf(stderr, "masterjob-bench-rounds: no reports (BUILD-ROUND.json) in %s\n", dir)
		return 1
	}
	c := bench.Pool(rounds)
	if ref != "" && !slices.Contains(c.Builds(), ref) {
		fmt.Fprintf(stderr, "masterjob-bench-rounds: -ref %s: no such build in %s (%s)\n", ref, dir, strings.Join(c.Builds(), ", "))
		return 2
	}
	w := stdout
	if mdPath != "" {
		f, err := os.Create(mdPath)
		if err != nil {
			fmt.Fprintf(stderr, "masterjob-bench-rounds: %v\n", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	c.Markdown(w, ref, seed)
	return 0
}
