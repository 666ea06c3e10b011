package cpuprio

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestLowerLowersEveryThread runs Lower in a child process (it cannot be
// undone without privileges) and reads the nice value of each of the
// child's threads from /proc.
func TestLowerLowersEveryThread(t *testing.T) {
	if os.Getenv("CPUPRIO_CHILD") == "1" {
		Lower()
		Lower() // again: capped at 19, never raised
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			n, err := Nice(tid)
			if err != nil {
				continue // the thread exited
			}
			os.Stdout.WriteString(strconv.Itoa(n) + "\n")
		}
		return
	}
	base, err := Nice(0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLowerLowersEveryThread$")
	cmd.Env = append(os.Environ(), "CPUPRIO_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	want := min(base+2*Step, 19)
	var threads int
	for _, line := range strings.Fields(string(out)) {
		if n, err := strconv.Atoi(line); err == nil {
			threads++
			if n != want {
				t.Errorf("a thread has nice %d, want %d (started at %d)", n, want, base)
			}
		}
	}
	if threads < 2 {
		t.Fatalf("read %d threads from the child's output %q; a Go process has several", threads, out)
	}
}
