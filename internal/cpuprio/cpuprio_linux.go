package cpuprio

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Lower adds Step to the nice value of every thread of this process (on
// Linux, a nice value belongs to a thread; threads started later inherit
// their creator's). It is best effort: errors are ignored, and a thread
// started while it runs may keep the old value. Each call lowers again, up
// to nice 19; it never raises a priority.
func Lower() {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		lower(0)
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			lower(tid)
		}
	}
}

// lower lowers one thread (0: the calling one).
func lower(tid int) {
	if nice, err := Nice(tid); err == nil {
		_ = unix.Setpriority(unix.PRIO_PROCESS, tid, min(nice+Step, 19))
	}
}

// Nice returns the nice value of thread tid of this process (0: the
// calling thread).
func Nice(tid int) (int, error) {
	// The system call returns 20 - nice (1 to 40).
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, err
	}
	return 20 - raw, nil
}
