//go:build linux

// Package probe is the instrumented child that benchmarks run under
// `masterjob run`, and the clocks and process watches the benchmark uses to
// time it.
//
// The child (see Child) reports its start and its SIGTERM as datagrams on a
// Unix socket named by $MASTERJOB_BENCH_SOCK. Each report carries the
// child's CLOCK_MONOTONIC reading, taken as the first thing main does, so
// the benchmark can subtract it from its own CLOCK_MONOTONIC reading taken
// just before it sent a signal: both come from the same system-wide clock.
// The package imports only the standard library, so that the child binary
// is small and starts fast.
package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// EnvSocket names the Unix datagram socket a child reports to.
const EnvSocket = "MASTERJOB_BENCH_SOCK"

// EnvMasterFile names a file that holds the pid of the child the
// benchmark last saw start (the master's, as far as it knows): a child
// looks at that process as it starts (Event.Prev).
const EnvMasterFile = "MASTERJOB_BENCH_MASTER_FILE"

// Event kinds.
const (
	KindStart = "start" // the child began to run
	KindTerm  = "term"  // the child received SIGTERM and is exiting
)

// Event is one report of a child.
type Event struct {
	Kind string `json:"kind"`
	// Pid is the child's pid (and process group); PPid the pid of the
	// runner that started it ($MASTERJOB_RUNNER_PID).
	Pid  int `json:"pid"`
	PPid int `json:"ppid"`
	// Token and Instance come from the lease environment the runner set.
	Token    int64  `json:"token"`
	Instance string `json:"instance"`
	// Mono is CLOCK_MONOTONIC and Real CLOCK_REALTIME (Unix nanoseconds)
	// when the event happened in the child.
	Mono time.Duration `json:"mono"`
	Real int64         `json:"real"`
	// Prev is what a starting child saw of the process named by
	// $MASTERJOB_BENCH_MASTER_FILE, right after it read Mono: its pid,
	// whether it was alive (running, not a zombie), and CLOCK_MONOTONIC
	// when it looked. Alive proves that the two ran at once; not alive
	// proves that the earlier one exited before PrevMono, however late a
	// watch of its exit wakes up on a busy host.
	PrevPid   int           `json:"prev_pid,omitempty"`
	PrevAlive bool          `json:"prev_alive,omitempty"`
	PrevMono  time.Duration `json:"prev_mono,omitempty"`
}

// RealTime returns Real as a time.Time.
func (e Event) RealTime() time.Time { return time.Unix(0, e.Real) }

// Mono returns CLOCK_MONOTONIC: the system-wide monotonic clock that every
// process on the host shares (unlike the monotonic reading of time.Now,
// which counts from an unspecified per-process origin).
func Mono() time.Duration { return clock(1) } // CLOCK_MONOTONIC

func clock(id uintptr) time.Duration {
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, id, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		panic(fmt.Sprintf("clock_gettime(%d): %v", id, e))
	}
	return time.Duration(ts.Nano())
}

// Child is the main function of the benchmark's child: it reports its
// start, runs until SIGTERM or SIGINT, reports that, and returns the exit
// code.
func Child() int {
	mono := Mono()
	real := time.Now().UnixNano()
	// The runner is not the parent (its supervisor is): it says its pid.
	ppid, err := strconv.Atoi(os.Getenv("MASTERJOB_RUNNER_PID"))
	if err != nil {
		ppid = os.Getppid()
	}
	ev := Event{Kind: KindStart, Pid: os.Getpid(), PPid: ppid, Mono: mono, Real: real,
		Instance: os.Getenv("MASTERJOB_INSTANCE")}
	ev.Token, _ = strconv.ParseInt(os.Getenv("MASTERJOB_TOKEN"), 10, 64)
	if f := os.Getenv(EnvMasterFile); f != "" {
		if b, err := os.ReadFile(f); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != ev.Pid {
				ev.PrevPid, ev.PrevAlive, ev.PrevMono = pid, Running(pid), Mono()
			}
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	conn, err := net.Dial("unixgram", os.Getenv(EnvSocket))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench child: %v\n", err)
		return 1
	}
	defer conn.Close()
	send(conn, ev)
	<-sigs
	ev.Kind, ev.Mono, ev.Real = KindTerm, Mono(), time.Now().UnixNano()
	send(conn, ev)
	return 0
}

func send(conn net.Conn, ev Event) {
	b, _ := json.Marshal(ev)
	if _, err := conn.Write(b); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: report %s: %v\n", ev.Kind, err)
	}
}

// Listener receives the events of children on a Unix datagram socket.
type Listener struct {
	conn *net.UnixConn
	path string
}

// Listen opens the socket at path.
func Listen(path string) (*Listener, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	return &Listener{conn: conn, path: path}, nil
}

// Path returns the socket's path, for EnvSocket.
func (l *Listener) Path() string { return l.path }

// ReadTimeout is Read that gives up after d.
func (l *Listener) ReadTimeout(d time.Duration) (Event, error) {
	if err := l.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return Event{}, err
	}
	defer l.conn.SetReadDeadline(time.Time{})
	return l.Read()
}

// Read returns the next event. It fails once Close was called.
func (l *Listener) Read() (Event, error) {
	buf := make([]byte, 4096)
	for {
		n, err := l.conn.Read(buf)
		if err != nil {
			return Event{}, err
		}
		var ev Event
		if err := json.Unmarshal(buf[:n], &ev); err == nil {
			return ev, nil
		}
	}
}

// Close closes the socket and removes its file.
func (l *Listener) Close() error {
	err := l.conn.Close()
	_ = os.Remove(l.path)
	return err
}

// Running reports whether process pid exists and has not exited: a
// zombie (exited, not yet reaped) or a dead process does not run.
func Running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and
	// may hold any character: look after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X' && state != 'x'
}

// ExitWatch observes the exit of a process that need not be a child of the
// caller, through a pidfd (Linux 5.3+). A goroutine waits on the pidfd from
// the start, so the exit time it records is when the process exited, not
// when somebody asked.
type ExitWatch struct {
	done chan struct{}
	at   time.Duration // CLOCK_MONOTONIC when the exit was seen; set before done is closed
	stop chan struct{}
	once sync.Once
}

// ErrTimeout is returned by ExitWatch.Wait when the process still runs.
var ErrTimeout = errors.New("probe: process still running")

const sysPidfdOpen = 434 // the same number on every Linux architecture

// WatchExit starts watching pid. A pid that no longer exists counts as
// exited at once.
func WatchExit(pid int) (*ExitWatch, error) {
	w := &ExitWatch{done: make(chan struct{}), stop: make(chan struct{})}
	fd, _, e := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if e == syscall.ESRCH {
		w.at = Mono()
		close(w.done)
		return w, nil
	}
	if e != 0 {
		return nil, fmt.Errorf("pidfd_open(%d): %w", pid, e)
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		syscall.Close(int(fd))
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		syscall.Close(int(fd))
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	go w.watch(int(fd), epfd)
	return w, nil
}

// watch blocks its OS thread in epoll_wait, waking every pollStop to see
// whether Close was called.
func (w *ExitWatch) watch(fd, epfd int) {
	defer syscall.Close(fd)
	defer syscall.Close(epfd)
	const pollStop = 100 // ms
	events := make([]syscall.EpollEvent, 1)
	for {
		n, err := syscall.EpollWait(epfd, events, pollStop)
		if n > 0 {
			w.at = Mono()
			close(w.done)
			return
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return // cannot tell; Wait times out
		}
		select {
		case <-w.stop:
			return
		default:
		}
	}
}

// Done is closed when the process has exited.
func (w *ExitWatch) Done() <-chan struct{} { return w.done }

// Wait waits up to timeout for the process to exit and returns the
// CLOCK_MONOTONIC time at which it was seen to exit.
func (w *ExitWatch) Wait(timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return w.at, nil
	case <-t.C:
		return 0, ErrTimeout
	}
}

// Exited reports whether the process has exited.
func (w *ExitWatch) Exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Close ends the watch.
func (w *ExitWatch) Close() { w.once.Do(func() { close(w.stop) }) }
