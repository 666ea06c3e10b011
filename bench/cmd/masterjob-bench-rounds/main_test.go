//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// No goroutine of a run (the runs' waits and signal handling) outlives
// the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBench is a masterjob-bench stand-in: it appends its build's name and
// arguments to $FAKE_BENCH_CALLS, fails when its build and round are named
// in $FAKE_BENCH_FAIL, and otherwise writes a report of one hand-off on
// etcd and on etcd's election to its -json file.
const fakeBench = `#!/bin/sh
build=$(basename "$(dirname "$0")")
echo "$build $*" >> "$FAKE_BENCH_CALLS"
json=
while [ $# -gt 0 ]; do
  case "$1" in -json) json=$2; shift;; esac
  shift
done
case "$FAKE_BENCH_FAIL" in *"$(basename "$json")"*) echo "failing on purpose"; exit 1;; esac
case "$build" in A) etcd=15000000;; *) etcd=12000000;; esac
cat > "$json" <<EOF
{"results":[
 {"store":"etcd-election","scenario":"graceful handoff","lease":2000000000,"series":[{"name":"h","samples":[10000000,10000000]}]},
 {"store":"etcd","scenario":"graceful handoff","lease":2000000000,"series":[{"name":"h","samples":[$etcd,$etcd]}]}
]}
EOF
`

// builds makes build directories named after names, each holding the fake
// masterjob-bench and a masterjob file.
func builds(t *testing.T, names ...string) (args []string) {
	root := t.TempDir()
	for _, n := range names {
		dir := filepath.Join(root, n)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "masterjob-bench"), []byte(fakeBench), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "masterjob"), nil, 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-build", n+"="+dir)
	}
	return args
}

func calls(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestRoundsAlternateBuildsAndPool(t *testing.T) {
	callLog := filepath.Join(t.TempDir(), "calls")
	t.Setenv("FAKE_BENCH_CALLS", callLog)
	t.Setenv("FAKE_BENCH_FAIL", "")
	out := filepath.Join(t.TempDir(), "cmp")
	args := append(builds(t, "A", "B"), "-out", out, "-rounds", "3", "--", "-store", "etcd", "-trials", "2")
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var order []string
	for _, c := range calls(t, callLog) {
		build, rest, _ := strings.Cut(c, " ")
		order = append(order, build)
		// Each build runs its own masterjob.
		if f := strings.Fields(rest); len(f) < 6 || f[4] != "-masterjob" || f[5] != filepath.Join(filepath.Dir(f[5]), "masterjob") ||
			filepath.Base(filepath.Dir(f[5])) != build {
			t.Errorf("call %q does not pass build %s's masterjob", c, build)
		}
		for _, want := range []string{"-store etcd -trials 2"} {
			if !strings.Contains(rest, want) {
				t.Errorf("call %q lacks %q", c, want)
			}
		}
		if strings.Contains(rest, "-child") || strings.Contains(rest, "-keep") {
			t.Errorf("call %q passes a program that is not there, or -keep unasked", c)
		}
	}
	if got := strings.Join(order, ","); got != "A,B,B,A,A,B" {
		t.Errorf("builds ran in the order %s, want A,B,B,A,A,B", got)
	}
	for _, f := range []string{"A-1.json", "B-3.json", "A-2.log", "progress"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("no %s: %v", f, err)
		}
	}
	// B's etcd at 12 ms against A's 15: a ratio of 0.80, lower in every
	// round (6 samples a build: too few for intervals).
	for _, want := range []string{"| B | etcd | 0.80 (–)", "| 3 of 3 |", "| A | etcd | 1.50, 1.50, 1.50 | 1.50 (–)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}

	// The report again from the files alone, the same.
	var again bytes.Buffer
	if code := run([]string{"-out", out, "-report", "-ref", "A"}, &again, &stderr); code != 0 {
		t.Fatalf("-report: exit %d: %s", code, stderr.String())
	}
	if again.String() != stdout.String() {
		t.Errorf("-report wrote another report:\n%s\nagainst\n%s", again.String(), stdout.String())
	}
	// Results are never mixed with a second comparison's.
	stderr.Reset()
	if code := run(append(builds(t, "A"), "-out", out, "--", "-store", "etcd"), &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "already holds results") {
		t.Errorf("a second comparison in the same -out: exit %d, %s", code, stderr.String())
	}
}

func TestFailedRunIsReportedAndTheOthersPooled(t *testing.T) {
	callLog := filepath.Join(t.TempDir(), "calls")
	t.Setenv("FAKE_BENCH_CALLS", callLog)
	t.Setenv("FAKE_BENCH_FAIL", "B-1.json")
	out := filepath.Join(t.TempDir(), "cmp")
	var stdout, stderr bytes.Buffer
	code := run(append(builds(t, "A", "B"), "-out", out, "-rounds", "2", "-keep"), &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "1 run(s) failed") {
		t.Errorf("exit %d, stderr %s: want 1 and the failure counted", code, stderr.String())
	}
	if len(calls(t, callLog)) != 4 {
		t.Errorf("the runs after the failed one were not all made: %v", calls(t, callLog))
	}
	if !strings.Contains(calls(t, callLog)[0], "-keep -workdir "+filepath.Join(out, "w-A-1")) {
		t.Errorf("-keep did not give the run its work directory: %s", calls(t, callLog)[0])
	}
	if !strings.Contains(stdout.String(), "| 1 of 1 |") {
		t.Errorf("the report does not pool the one round both builds ran:\n%s", stdout.String())
	}
}

func TestRefusals(t *testing.T) {
	out := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{"-build", "A=/nonexistent"}, "-out is required"},
		{"no build", []string{"-out", out}, "at least one -build"},
		{"a flag it sets", append(builds(t, "A"), "-out", out, "--", "-json", "x.json"), "-json is set by this command"},
		{"a flag it sets, with =", append(builds(t, "A"), "-out", out, "--", "--workdir=/tmp/x"), "-workdir is set by this command"},
		{"no masterjob-bench", []string{"-out", out, "-build", "A=" + t.TempDir()}, "build A:"},
		{"a build named twice", []string{"-out", out, "-build", "A=/x", "-build", "A=/y"}, "named twice"},
		{"report with flags", []string{"-out", out, "-report", "--", "-store", "etcd"}, "-report reads"},
		{"report of nothing", []string{"-out", out, "-report"}, "no reports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q: want a failure saying %q", code, stderr.String(), tc.want)
			}
		})
	}
}

func TestOrder(t *testing.T) {
	bs := []build{{name: "A"}, {name: "B"}, {name: "C"}}
	name := func(o []build) string {
		var s []string
		for _, b := range o {
			s = append(s, b.name)
		}
		return strings.Join(s, "")
	}
	if got := []string{name(order(bs, 1)), name(order(bs, 2)), name(order(bs, 3))}; !slices.Equal(got, []string{"ABC", "CBA", "ABC"}) {
		t.Errorf("orders %v", got)
	}
	if name(bs) != "ABC" {
		t.Error("order changed its argument")
	}
}
