package cli

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/masterjob/masterjob/internal/sqlitelock"
)

// waitStopped waits until pid is stopped (state T).
func waitStopped(t *testing.T, what string, pid int, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); procState(pid) != 'T'; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s %d in state %q %v after SIGTSTP; want stopped", what, pid, procState(pid), within)
		}
	}
}

// A terminal's Ctrl-Z (SIGTSTP) of the master's runner stops its command
// too, and the runner does not stay stopped with SQLite's write lock: the
// other runner takes over when the lease expires, and the old command
// never runs beside the new one. Before, the command (in a process group
// of its own, which the terminal does not stop) ran on, unpoliced, for as
// long as the runner stayed suspended. On SIGCONT the old command, whose
// lease is gone, is killed before it can run again.
func TestProcessSuspendStopsTheCommand(t *testing.T) {
	if !procAvailable() {
		t.Skip("needs /proc")
	}
	db := filepath.Join(t.TempDir(), "mj.db")
	c := newProcCluster(t, "sqlite:"+db)
	c.script = quickScript
	c.start()
	old, oldRunner := c.waitMaster(15 * time.Second)
	c.start()
	time.Sleep(3 * procCheckInterval)

	if err := oldRunner.cmd.Process.Signal(syscall.SIGTSTP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, "the command", old, 2*time.Second)
	waitStopped(t, "the runner", oldRunner.pid(), 2*time.Second)
	if h, ok := sqlitelock.Writer(db); ok && h.PID == oldRunner.pid() {
		t.Fatalf("the suspended runner holds SQLite's write lock (%v)", h)
	}

	var next int
	for end := time.Now().Add(procTolerance + 5*time.Second); next == 0; time.Sleep(5 * time.Millisecond) {
		for _, pid := range c.aliveChildren() {
			if pid != old {
				next = pid
			}
		}
		if next == 0 && time.Now().After(end) {
			c.dumpLogs()
			t.Fatalf("no new master's command while the old runner is suspended")
		}
	}
	if st := procState(old); st != 'T' {
		t.Fatalf("the old command is in state %q while the new master's %d runs; want stopped", st, next)
	}

	resumed := time.Now()
	if err := oldRunner.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	dead := waitDead(t, old, 3*time.Second)
	t.Logf("old command gone %v after SIGCONT", dead.Sub(resumed).Round(time.Millisecond))
	if !alive(next) {
		t.Fatalf("the new master's command %d died", next)
	}
	time.Sleep(3 * procCheckInterval)
	if st := procState(oldRunner.pid()); st == 'T' || st == 0 {
		t.Fatalf("the resumed runner is in state %q; want it running on as a follower:\n%s", st, oldRunner.log())
	}
	if pids := c.aliveChildren(); len(pids) != 1 || pids[0] != next {
		t.Fatalf("alive commands %v after the resume; want only the new master's %d", pids, next)
	}
	// Past its trust window, the command was killed while still stopped:
	// it never ran again beside the new master's.
	if log := oldRunner.log(); !strings.Contains(log, "suspended (SIGTSTP)") ||
		!strings.Contains(log, "resumed (SIGCONT) past the lease's trust window: the stopped command is killed") {
		t.Fatalf("the runner's log does not tell of its suspension and the kill:\n%s", log)
	}
}

// A suspension shorter than the lease's trust window leaves the mastership
// in place: on SIGCONT the same command continues.
func TestProcessShortSuspendKeepsTheCommand(t *testing.T) {
	if !procAvailable() {
		t.Skip("needs /proc")
	}
	c := newProcCluster(t, "sqlite:"+filepath.Join(t.TempDir(), "mj.db"))
	c.script = quickScript
	c.flags = []string{"--init-delay", "0", "--heartbeat-interval", "500ms", "--tolerance", "10s", "--check-master-interval", "1s"}
	c.start()
	child, runner := c.waitMaster(15 * time.Second)
	c.start()
	if err := runner.cmd.Process.Signal(syscall.SIGTSTP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, "the command", child, 2*time.Second)
	waitStopped(t, "the runner", runner.pid(), 2*time.Second)
	if err := runner.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Second); procState(child) == 'T'; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the command %d still stopped 2s after SIGCONT", child)
		}
	}
	time.Sleep(2 * time.Second) // renewals and checks go on
	if pids := c.aliveChildren(); len(pids) != 1 || pids[0] != child {
		t.Fatalf("alive commands %v after a short suspension; want only the same %d:\n%s", pids, child, runner.log())
	}
	if !strings.Contains(runner.log(), "resumed (SIGCONT)") {
		t.Fatalf("the runner's log does not tell of its resumption:\n%s", runner.log())
	}
}
