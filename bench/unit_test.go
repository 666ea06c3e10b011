//go:build linux

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/bench/internal/probe"
)

func TestSummarize(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(s)
	want := Summary{N: 100, Min: time.Millisecond, Median: 50500 * time.Microsecond,
		P90: 90 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond, Mean: 50500 * time.Microsecond}
	if got != want {
		t.Fatalf("Summarize = %+v, want %+v", got, want)
	}
	// Fewer than 100 samples: the nearest-rank p99 is the maximum.
	if got := Summarize(s[:30]); got.P99 != got.Max {
		t.Fatalf("p99 of 30 samples = %v, want the max %v", got.P99, got.Max)
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Fatalf("Summarize(nil) = %+v", got)
	}
}

// TestScaleMarkdownMemoryPerLock: two lock counts of one store in a run give
// the memory per lock as the slope of RSS, and the CPU column its figures.
func TestScaleMarkdownMemoryPerLock(t *testing.T) {
	r := &Report{Scale: []*ScaleResult{
		{Store: "sqlite", Instances: 10, Locks: 1000, Timing: "t", RSS: []int64{30 << 20, 31 << 20}, CPU: []float64{10, 20}, RoundTrips: []float64{1}},
		{Store: "sqlite", Instances: 10, Locks: 11000, Timing: "t", RSS: []int64{40 << 20, 41 << 20}, CPU: []float64{100, 220}, RoundTrips: []float64{1}},
	}}
	var b strings.Builder
	r.scaleMarkdown(&b)
	for _, want := range []string{
		"sqlite: memory per lock 1049 bytes (RSS per instance, max, 31.0 MiB at 1000 locks and 41.0 MiB at 11000)",
		"| 10 / 20; 20 |",
		"| 100 / 220; 20 |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}

// TestJoinWatchCountsMovesAndOrphans: a lock that changes holder twice is
// a flap; one free for a moment and taken back by its holder did not
// move; one free for longer than orphanLimit is counted.
func TestJoinWatchCountsMovesAndOrphans(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	t0 := time.Unix(0, 0)
	w := newJoinWatch(map[string]string{"a": "i1", "b": "i1", "c": "i2", "d": "i2"})
	w.sample(t0.Add(1*time.Second), names, map[string]string{"a": "new", "b": "i1", "c": "i2"}) // a moves; d free
	w.sample(t0.Add(2*time.Second), names, map[string]string{"a": "i1", "b": "i1", "c": "i2"})  // a moves back
	w.sample(t0.Add(8*time.Second), names, map[string]string{"a": "i1", "c": "i2"})             // b free; d still free
	w.sample(t0.Add(9*time.Second), names, map[string]string{"a": "i1", "b": "new", "c": "i2", "d": "i2"})
	moved, twice := w.moved()
	if moved != 2 || twice != 1 {
		t.Errorf("moved %d, twice %d; want 2 (a, b) and 1 (a)", moved, twice)
	}
	if len(w.orphaned) != 1 || !w.orphaned["d"] || w.longest != 7*time.Second {
		t.Errorf("orphaned %v, longest %v; want d, 7s", w.orphaned, w.longest)
	}
	if !balanced(map[string]int{"i1": 3, "i2": 2}, 2, 1) || balanced(map[string]int{"i1": 4, "i2": 1}, 2, 1) ||
		balanced(map[string]int{"i1": 2, "": 1}, 2, 1) {
		t.Error("balanced is wrong")
	}
	r := &Report{Scale: []*ScaleResult{{Store: "sqlite", Instances: 10, Locks: 1000, RoundTrips: []float64{1},
		Join: &ScaleJoin{Settled: 2 * time.Second, Share: 100, Slack: 5, Reached: 31 * time.Second, Bound: 150 * time.Second,
			Held: 100, Moved: 100, MovedTwice: 0}}}}
	var b strings.Builder
	r.scaleMarkdown(&b)
	if want := "| sqlite | 10 × 1000 | 2000 ms | 31000 ms (150000 ms) | 100 (100, 5) | 100 (0) | 0 (0.00 ms) |"; !strings.Contains(b.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, b.String())
	}
}

// An exit watch that wakes after the next child started is an overlap
// unless that child saw the old one exited as it started; then the look's
// time bounds the exit.
func TestExitBefore(t *testing.T) {
	ms := time.Millisecond
	old := probe.Event{Pid: 10, Token: 1}
	next := func(prevPid int, alive bool) probe.Event {
		return probe.Event{Pid: 11, Token: 2, Mono: 100 * ms, PrevPid: prevPid, PrevAlive: alive, PrevMono: 100*ms + 20*time.Microsecond}
	}
	for _, c := range []struct {
		name     string
		next     probe.Event
		gone     time.Duration
		want     time.Duration
		overlaps bool
	}{
		{"exit seen before the start", next(0, false), 99 * ms, 99 * ms, false},
		{"watch late, old child seen exited", next(10, false), 101 * ms, 100*ms + 20*time.Microsecond, false},
		{"watch late, old child seen running", next(10, true), 101 * ms, 0, true},
		{"watch late, no look at the old child", next(0, false), 101 * ms, 0, true},
		{"watch late, another process looked at", next(9, false), 101 * ms, 0, true},
	} {
		got, err := exitBefore(old, c.next, c.gone)
		if (err != nil) != c.overlaps || (!c.overlaps && got != c.want) {
			t.Errorf("%s: exitBefore = %v, %v; want %v, overlap %v", c.name, got, err, c.want, c.overlaps)
		}
	}
}

// Running tells a live process from a zombie and from a reaped one.
func TestRunning(t *testing.T) {
	if !probe.Running(os.Getpid()) {
		t.Fatal("this process does not run")
	}
	cmd := exec.Command("sleep", "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for probe.Running(pid) { // exited, not yet waited for: a zombie
		if time.Now().After(deadline) {
			t.Fatalf("sleep 0 (pid %d) still runs after 5s", pid)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("the zombie %d has no /proc entry: %v", pid, err)
	}
	_ = cmd.Wait()
	if probe.Running(pid) {
		t.Errorf("reaped process %d runs", pid)
	}
}
