package supervisor

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/masterjob/masterjob/internal/cpuprio"
	"github.com/masterjob/masterjob/internal/proctree"
	"github.com/masterjob/masterjob/internal/trace"
)

// Arg is the first argument of a supervisor. Every supervisor reads the
// runner's start request
//
//	will-arg, will-env, will   (the last will, if any; see doc.go)
//	env "KEY=value"            (quoted as Go strings; any number of them)
//	go
//
// before it starts the command with those entries added to its
// environment, so that the command never runs before the supervisor holds
// the runner's last will. End of file instead of "go" discards it, will
// and all: a standby supervisor waits there until its runner needs it, a
// fresh one only until the runner's "go" follows its will.
const Arg = "__childproc-supervisor"

// CtlFD is the supervisor's end of the socket pair.
const CtlFD = 3

// init runs the supervisor when this program was started as one: package
// initialization runs before main (and before TestMain in a test binary),
// so every program that links this package can be re-executed as the
// supervisor of its commands, with no call to make in main.
func init() {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		// syscall.Exit, not os.Exit: nothing to flush, and a binary built
		// with -race would linger a second at exit (GORACE atexit_sleep_ms)
		// while the runner waits for it.
		syscall.Exit(supervise(os.Args[2:]))
	}
}

// supervise is the supervisor's main function; it returns the exit code.
func supervise(args []string) int {
	// The command gets Pdeathsig SIGKILL: fork it from a thread that lives
	// as long as this process (this goroutine never unlocks it and never
	// returns: os.Exit).
	runtime.LockOSThread()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "masterjob: supervisor: "+format+"\n", a...)
		return 125
	}
	if len(args) < 4 || args[2] != "--" {
		return fail("bad arguments %q (this mode is only for the runner's use)", args)
	}
	runner, err := strconv.Atoi(args[0])
	if err != nil {
		return fail("bad runner pid %q", args[0])
	}
	path, argv := args[1], args[3:]
	var st syscall.Stat_t
	if err := syscall.Fstat(CtlFD, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return fail("descriptor %d is not the runner's socket (this mode is only for the runner's use)", CtlFD)
	}
	syscall.CloseOnExec(CtlFD)
	s := &supervisor{self: os.Getpid(), runner: runner, ctl: os.NewFile(CtlFD, "childproc-control"),
		lock: os.Getenv(EnvLock)}

	// The Pdeathsig of the supervisor is SIGTERM; any SIGTERM is checked
	// against the parent's pid.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if os.Getppid() != runner {
		return 0 // the runner died before the command started
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		s.send("err become a child subreaper: %v", err)
		return 125
	}
	// What the command's start will need is set up now, while this
	// supervisor waits (as a standby, for seconds or hours): the reader of
	// the runner's socket and the reaper, each a goroutine with an OS
	// thread of its own once it blocks in its system call. Set up after
	// the fork, their threads, stacks and first page faults took CPU from
	// the command's own start on a small host.
	cmds := s.readLines()
	var pidPipe [2]int // the command's pid, from this goroutine to the reaper
	if err := syscall.Pipe2(pidPipe[:], syscall.O_CLOEXEC); err != nil {
		s.send("err pipe: %v", err)
		return 125
	}
	empty := make(chan struct{})
	go s.reap(pidPipe[0], empty)
	extra, ok := s.readStart(cmds)
	if !ok {
		return 0 // discarded, or the runner is gone
	}
	env := WithEnv(os.Environ(), extra...)
	if lock := lockOf(extra); lock != "" {
		s.lock = lock
	}
	trace.Mark("supervisor.go", s.lock)
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		s.send("err %v", err)
		return 127
	}
	s.cmdPid = pid
	s.env = env
	trace.Mark("supervisor.forked", s.lock)
	s.send("pid %d", pid) // before the reaper can say "exit"
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], uint64(pid))
	if _, err := syscall.Write(pidPipe[1], b[:]); err != nil {
		s.killAll()
		return 125
	}
	return s.loop(sigs, cmds, empty)
}

// readStart reads the start request (see Arg) from cmds: the environment
// entries to add, then "go"; the runner's last will may come before. ok is
// false at end of file or on a malformed request.
func (s *supervisor) readStart(cmds <-chan string) (env []string, ok bool) {
	for line := range cmds {
		verb, arg, _ := strings.Cut(line, " ")
		switch verb {
		case "go":
			return env, true
		case "will-arg", "will-env", "will":
			s.readWill(verb, arg)
		case "env":
			kv, err := strconv.Unquote(arg)
			if err != nil {
				return nil, false
			}
			env = append(env, kv)
		default:
			return nil, false
		}
	}
	return nil, false
}

// readLines reads the runner's socket, a line at a time, into the returned
// channel, which is closed at end of file (the runner is gone).
func (s *supervisor) readLines() <-chan string {
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(s.ctl)
		// A last will's entry (a store URL) may be long, up to the
		// kernel's 128 KiB (MAX_ARG_STRLEN), quoted: a line too long
		// for the scanner would read as the runner's death.
		sc.Buffer(nil, maxLine)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	return cmds
}

// lockOf returns the lock that env's EnvLock entry names, or "".
func lockOf(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, EnvLock+"="); ok {
			return v
		}
	}
	return ""
}

// lastWill is a last will as the runner sent it (childproc.LastWill).
type lastWill struct {
	args, env []string
}

// supervisor is the state of a supervisor process.
type supervisor struct {
	self, runner int
	lock         string // the command's EnvLock, for trace marks
	cmdPid       int
	// cmdReaped is set once the command has been reaped: from then on its
	// pid, which is also its process group's id, may be reused.
	cmdReaped atomic.Bool
	mu        sync.Mutex // serializes writes on ctl
	ctl       *os.File

	// The last will: will is what the runner's last "will" committed
	// (nil: none), pending what it has sent since; env is the command's
	// environment, which the will's entries are added to.
	will, pending *lastWill
	env           []string

	// restScan is the scan signalAll put off by restScanDelay, if any.
	// Only the loop's goroutine touches it.
	restScan *time.Timer
}

// send writes one line to the runner; errors (the runner is gone) are
// ignored.
func (s *supervisor) send(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = fmt.Fprintf(s.ctl, format+"\n", a...)
}

// reap is the only waiter of this process: once the command is forked
// (its pid is read from the pipe pidPipe), it reaps the command and every
// orphan reparented here, and tells the runner itself, with no hop to
// another goroutine on a hand-off's path. It closes empty once no child is
// left. It waits for the pid in a blocking read, so that its thread
// exists before the fork and the kernel wakes it at once, with no new
// thread for the Go scheduler to start while the command starts.
func (s *supervisor) reap(pidPipe int, empty chan<- struct{}) {
	var b [8]byte
	n, err := syscall.Read(pidPipe, b[:])
	for err == syscall.EINTR {
		n, err = syscall.Read(pidPipe, b[:])
	}
	if err != nil || n != len(b) {
		return
	}
	cmdPid := int(binary.NativeEndian.Uint64(b[:]))
	gone := func(exit string) {
		trace.Mark("supervisor.empty", s.lock)
		// Said before this process's exit, which takes the runner a
		// few milliseconds more to see: a hand-off waits for this.
		s.send("%sgone", exit)
		close(empty)
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: no child left, and none can come
			gone("")
			return
		}
		if pid != cmdPid {
			continue
		}
		trace.Mark("supervisor.reaped", s.lock)
		s.cmdReaped.Store(true)
		exit := fmt.Sprintf("exit %d", uint32(ws))
		// Most often the command was the last child: its exit and
		// "gone" then go to the runner in one write.
		if _, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); err == syscall.ECHILD {
			gone(exit + "\n")
			return
		}
		s.send("%s", exit)
	}
}

// loop serves the runner's requests (cmds) until the reaper says that no
// child is left (empty).
func (s *supervisor) loop(sigs <-chan os.Signal, cmds <-chan string, empty <-chan struct{}) int {
	runnerGone := false // its socket's end of file, or its death signal
	for {
		select {
		case <-empty: // the reaper has said "gone"
			if runnerGone {
				// The end of file may still be on its way (the
				// Pdeathsig came first), behind the will's last lines.
				s.drain(cmds)
				if s.will != nil && s.runnerDied() {
					return s.execWill()
				}
			}
			// No descendant is left for the scan put off to look for.
			if s.restScan != nil {
				s.restScan.Stop()
			}
			// Only the exit is left, whose teardown takes a few
			// milliseconds of CPU that the runner's release and a
			// successor's start on this host need more: it comes
			// ExitDelay later, at a low priority, once they are done.
			cpuprio.Lower()
			if !runnerGone {
				releaseStdio()
				time.Sleep(ExitDelay)
			}
			return 0
		case line, ok := <-cmds:
			if !ok { // the runner is gone
				cmds, runnerGone = nil, true
				s.killAll()
				continue
			}
			s.request(line)
		case <-sigs:
			if os.Getppid() != s.runner { // Pdeathsig: the runner is gone
				runnerGone = true
				s.killAll()
			}
		}
	}
}

// drain serves what is left to read from the dead runner, up to the end
// of file (at most reparentWait: only the runner held the other end).
func (s *supervisor) drain(cmds <-chan string) {
	if cmds == nil {
		return
	}
	t := time.NewTimer(reparentWait)
	defer t.Stop()
	for {
		select {
		case line, ok := <-cmds:
			if !ok {
				return
			}
			s.request(line)
		case <-t.C:
			return
		}
	}
}

// request serves one line from the runner.
func (s *supervisor) request(line string) {
	verb, arg, _ := strings.Cut(line, " ")
	switch verb {
	case "kill":
		s.killAll()
	case "signal", "signal-rest":
		if n, err := strconv.Atoi(arg); err == nil {
			s.signalAll(syscall.Signal(n), verb == "signal-rest")
		}
	case "will-arg", "will-env", "will":
		s.readWill(verb, arg)
	}
}

// signalAll sends sig once to every descendant: first to the command's
// process group in one call, which reaches every member at once (also one
// that its shell forked while a scan of /proc was under way, which the scan
// misses: a shell that then dies of the signal leaves it running,
// unsignalled, with no deadline but the lease's), then to the descendants
// that left the group. groupDone says the runner has signalled the group
// already.
//
// The scan of /proc (every process of the host) runs beside the loop, so
// that it never delays the report of the command's exit, which a hand-off
// waits for. When the runner signalled the group, the scan waits
// restScanDelay first: a command that exits with its group leaves the
// supervisor with no child, and it exits without a scan, which on a small
// host took CPU from the very exit the hand-off waits for. Whatever left
// the group gets the signal that much later; its kill time is unchanged.
func (s *supervisor) signalAll(sig syscall.Signal, groupDone bool) {
	trace.Mark("supervisor.signal", s.lock)
	scan := func(group int) {
		proctree.SignalDescendants(s.self, sig, group)
		trace.Mark("supervisor.scanned", s.lock)
	}
	switch {
	case groupDone:
		if s.restScan != nil {
			s.restScan.Stop()
		}
		s.restScan = time.AfterFunc(restScanDelay, func() { scan(s.cmdPid) })
	case !s.cmdReaped.Load() && syscall.Kill(-s.cmdPid, sig) == nil:
		go scan(s.cmdPid)
	default:
		go scan(0)
	}
}

// restScanDelay is how long a supervisor waits, after the runner signalled
// the command's group, before it looks for descendants outside the group.
const restScanDelay = 10 * time.Millisecond

// releaseStdio points this process's standard files at /dev/null, so
// that the runner's copies of the command's output, whose pipes this
// process holds as the command's standard files, end now, not at its
// exit.
func releaseStdio() {
	null, err := syscall.Open(os.DevNull, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	for fd := range 3 {
		_ = syscall.Dup3(null, fd, 0)
	}
	_ = syscall.Close(null)
}

// ExitDelay is how long a supervisor with no child left, whose runner
// lives, waits before it exits: the teardown of its address space (a
// couple of milliseconds of CPU) then comes after a hand-off's release
// and the successor's start, not during them. Nothing waits for the exit:
// the runner has its "gone".
const ExitDelay = 100 * time.Millisecond

// killAll SIGKILLs every descendant, again and again until none is left
// alive (each pass also finds what the previous victims forked, or what was
// reparented here meanwhile). Between passes it waits for the victims of
// the last pass to die, watching only them: a pass reads every
// /proc/PID/stat of the host. Zombies are left to the reaper.
func (s *supervisor) killAll() {
	// The command's process group first, in one call: most descendants
	// are there. A group id stays allocated while the group has a member.
	if !s.cmdReaped.Load() {
		_ = syscall.Kill(-s.cmdPid, syscall.SIGKILL)
	}
	for {
		victims := proctree.SignalDescendants(s.self, syscall.SIGKILL, 0)
		if len(victims) == 0 {
			return
		}
		proctree.AwaitDeath(victims, 50*time.Millisecond)
	}
}

// readWill takes one line of the runner's last will.
func (s *supervisor) readWill(verb, arg string) {
	if verb == "will" {
		s.will, s.pending = s.pending, nil
		if s.will != nil && len(s.will.args) == 0 {
			s.will = nil
		}
		return
	}
	v, err := strconv.Unquote(arg)
	if err != nil {
		return
	}
	if s.pending == nil {
		s.pending = &lastWill{}
	}
	if verb == "will-arg" {
		s.pending.args = append(s.pending.args, v)
	} else {
		s.pending.env = append(s.pending.env, v)
	}
}

// runnerDied reports whether the runner has exited, not merely closed its
// end of the socket: this process has been reparented. The socket reads end
// of file when the dying runner's files are closed, a moment before the
// kernel reparents its children, so it waits for that a little.
func (s *supervisor) runnerDied() bool {
	deadline := time.Now().Add(reparentWait)
	for os.Getppid() == s.runner {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// maxLine bounds a line from the runner.
const maxLine = 1 << 20

// reparentWait bounds how long a supervisor whose runner's socket closed
// waits to be reparented before it concludes that the runner lives on.
const reparentWait = time.Second

// execWill replaces the supervisor with its runner's last will: this
// program again, with the will's arguments and nothing but its
// environment. It returns only when the exec failed.
func (s *supervisor) execWill() int {
	exe, err := os.Executable()
	if err == nil {
		trace.Mark("supervisor.will", s.lock)
		// The will must not die with the supervisor's new parent.
		_ = unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0)
		signal.Reset()
		err = syscall.Exec(exe, append([]string{exe}, s.will.args...), WithEnv(s.env, s.will.env...))
	}
	fmt.Fprintf(os.Stderr, "masterjob: supervisor: cannot run the runner's last will: %v\n", err)
	return 125
}
