//go:build linux

package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// handoffSteps takes the old runner's marks from its pid only, the new
// runner's from the pid whose job started, a supervisor's from any pid,
// each the first in the window [SIGTERM, new child running].
func TestHandoffSteps(t *testing.T) {
	const oldPid = 100 // the new runner (200) is found by its job start
	lines := []string{
		"900000000 100 child.signalled L",    // before the SIGTERM: ignored
		"1000500000 100 signal.received L",   // 0.5 ms
		"1001000000 300 child.signalled L",   // another runner's: ignored
		"1002000000 100 child.signalled L",   // 2 ms
		"1003000000 101 supervisor.reaped L", // 3 ms, any pid
		"1004000000 100 child.signalled X",   // another lock: ignored
		"1005000000 200 adopt.done L",        // 5 ms
		"1006000000 200 job.start L",         // 6 ms: the new runner
		"1007000000 201 supervisor.go L",     // 7 ms, any pid
		"1009000000 300 job.start L",         // after the end: ignored
		"garbage line",
	}
	path := filepath.Join(t.TempDir(), "trace.log")
	body := ""
	for _, l := range lines {
		body += l + "\n"
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t0, end := time.Second, time.Second+8*time.Millisecond
	steps, err := handoffSteps(path, "L", oldPid, t0, end)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{
		"signal.received":   500 * time.Microsecond,
		"child.signalled":   2 * time.Millisecond,
		"supervisor.reaped": 3 * time.Millisecond,
		"adopt.done":        5 * time.Millisecond,
		"job.start":         6 * time.Millisecond,
		"supervisor.go":     7 * time.Millisecond,
		"release.done":      -1, // no mark
	}
	for i, s := range handoffStepMarks {
		if w, ok := want[s.mark]; ok && steps[i] != w {
			t.Errorf("%s: %v, want %v", s.mark, steps[i], w)
		}
	}
	if got := steps[len(handoffStepMarks)]; got != 8*time.Millisecond {
		t.Errorf("child running: %v, want 8ms", got)
	}
	if _, err := handoffSteps(path, "X", oldPid, t0, end); err == nil {
		t.Error("no job start of lock X: want an error")
	}
}
