// Package trace records timestamped marks for profiling one hand-off
// across processes: the runner that lets go, the store, the runner that
// takes over, the child. Each mark is a line "<CLOCK_MONOTONIC ns> <pid>
// <event> <lock>" appended to the file named by $MASTERJOB_TRACE; every
// process of the host reads the same clock, so marks from several
// processes sort into one timeline (bench's -trace mode does that).
//
// Without $MASTERJOB_TRACE at process start, Mark costs one atomic load.
package trace

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// EnvFile names the file marks are appended to.
const EnvFile = "MASTERJOB_TRACE"

var (
	on   atomic.Bool
	mu   sync.Mutex
	file *os.File
	pid  = os.Getpid()
)

func init() {
	path := os.Getenv(EnvFile)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "masterjob: cannot open trace file %s: %v\n", path, err)
		return
	}
	file = f
	on.Store(true)
}

// Sink receives every mark of this process as it is made: its
// CLOCK_MONOTONIC time in nanoseconds, the event and the lock.
type Sink func(mono int64, event, lock string)

// sink is the process's Sink, if any (SetSink).
var sink atomic.Pointer[Sink]

// SetSink makes Mark call fn as well (nil: no more), so that a program
// that runs the runner in its own process (the chaos harness's runner
// mode) sees its marks without a file. fn must be quick and safe for
// concurrent use.
func SetSink(fn Sink) {
	if fn == nil {
		sink.Store(nil)
		return
	}
	sink.Store(&fn)
}

// Enabled reports whether marks are recorded.
func Enabled() bool { return on.Load() || sink.Load() != nil }

// Mark records event about lock, now.
func Mark(event, lock string) {
	toFile, fn := on.Load(), sink.Load()
	if !toFile && fn == nil {
		return
	}
	ns := mono()
	if fn != nil {
		(*fn)(ns, event, lock)
	}
	if !toFile {
		return
	}
	line := fmt.Sprintf("%d %d %s %s\n", ns, pid, event, lock)
	mu.Lock()
	// One write per line, with O_APPEND: lines of several processes do
	// not interleave.
	_, _ = file.WriteString(line)
	mu.Unlock()
}
