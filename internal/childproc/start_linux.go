package childproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/internal/childproc/supervisor"
)

// sysProcess is the runner's side of a supervisor.
type sysProcess struct {
	supPid int              // the supervisor's pid
	state  *os.ProcessState // the supervisor's end, set before exited is closed
	// exited is closed once the supervisor has exited and been reaped
	// (Process.gone may close before: at its "gone").
	exited   chan struct{}
	goneOnce sync.Once

	// The copies of the output to writers that are not files: each reads
	// a pipe until every process holding its write end has closed it.
	copies  sync.WaitGroup
	readers []*os.File
	copyErr error // the first copy error, set before copies is done
	errOnce sync.Once

	mu  sync.Mutex
	ctl *os.File // the runner's end of the socket pair; nil once closed
}

// start starts a supervisor that starts the command, and waits for the
// command to run.
func start(spec Spec, path string) (*Process, error) {
	p, r, err := spawn(spec, path)
	if err != nil {
		return nil, err
	}
	p.sys.send("go")
	return p.handshake(r)
}

// testHookSpawned, if set, runs in spawn between the supervisor's start
// and the sending of the last will: a test holds or kills the runner there.
var testHookSpawned atomic.Pointer[func(supervisor int)]

// spawn starts a supervisor and gives it the last will. The supervisor
// starts the command only at the runner's "go" (with the entries to add to
// the command's environment), which start sends at once and a Standby when
// it is used.
func spawn(spec Spec, path string) (*Process, *bufio.Reader, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find this program to run the supervisor: %w", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socket pair for the supervisor: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "childproc-control")
	theirs := os.NewFile(uintptr(fds[1]), "childproc-control")

	args := append([]string{supervisor.Arg, strconv.Itoa(os.Getpid()), path, "--", spec.Path}, spec.Args...)
	cmd := exec.Command(exe, args...)
	cmd.Env = spec.environ()
	cmd.Dir = spec.Dir
	p := &Process{done: make(chan struct{}), gone: make(chan struct{})}
	p.sys.exited = make(chan struct{})
	p.sys.ctl = mine
	var copyEnds []*os.File // write ends of the output pipes, closed once started
	if cmd.Stdout, err = p.sys.output(spec.Stdout, &copyEnds); err == nil {
		if spec.Stderr == spec.Stdout && cmd.Stdout != nil {
			cmd.Stderr = cmd.Stdout
		} else {
			cmd.Stderr, err = p.sys.output(spec.Stderr, &copyEnds)
		}
	}
	if err != nil {
		mine.Close()
		theirs.Close()
		p.sys.closeOutputs(copyEnds)
		return nil, nil, err
	}
	cmd.ExtraFiles = []*os.File{theirs} // descriptor 3 = supervisor.CtlFD
	// Its own process group: a Ctrl-C in the runner's terminal does not
	// reach it. Pdeathsig SIGTERM, caught by the supervisor, which then
	// kills every descendant.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}

	started := make(chan error, 1)
	go p.run(cmd, started)
	err = <-started
	theirs.Close()
	for _, f := range copyEnds {
		f.Close()
	}
	if err != nil {
		mine.Close()
		p.sys.closeOutputs(nil)
		return nil, nil, err
	}
	if hook := testHookSpawned.Load(); hook != nil {
		(*hook)(p.sys.supPid)
	}
	if len(spec.LastWill.Args) > 0 {
		// Before the "go" that lets the command start: a runner that dies
		// before this line leaves no command running, and one that dies
		// after it leaves the will in the socket for the supervisor.
		p.sys.send(willLines(spec.LastWill))
	}
	return p, bufio.NewReader(mine), nil
}

// handshake waits for the supervisor to report the command's start.
func (p *Process) handshake(r *bufio.Reader) (*Process, error) {
	line, rerr := r.ReadString('\n')
	verb, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if rerr == nil && verb == "pid" {
		var err error
		if p.pid, err = strconv.Atoi(arg); err == nil {
			go p.follow(r)
			return p, nil
		}
	}
	// The supervisor could not start the command: it exits.
	<-p.sys.exited
	p.sys.close()
	p.sys.finishOutputs()
	if verb == "err" {
		return nil, errors.New(arg)
	}
	return nil, fmt.Errorf("supervisor (pid %d) ended before starting the command: %v (read %q: %v)",
		p.sys.supPid, p.sys.state, line, rerr)
}

// output returns the file to give the supervisor (and so the command) for
// an output going to w: w itself if it is a file or nil, else the write end
// of a pipe copied to w (appended to ends, for the caller to close once the
// supervisor has started).
func (s *sysProcess) output(w io.Writer, ends *[]*os.File) (*os.File, error) {
	if w == nil {
		return nil, nil
	}
	if f, ok := w.(*os.File); ok {
		return f, nil
	}
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe for the output: %w", err)
	}
	*ends = append(*ends, wr)
	s.readers = append(s.readers, r)
	s.copies.Add(1)
	go func() {
		defer s.copies.Done()
		if _, err := io.Copy(w, r); err != nil {
			s.errOnce.Do(func() { s.copyErr = err })
		}
	}()
	return wr, nil
}

// waitOutputs waits up to waitDelay for the copies of the output, and
// reports whether they ended.
func (s *sysProcess) waitOutputs() bool {
	done := make(chan struct{})
	go func() {
		s.copies.Wait()
		close(done)
	}()
	t := time.NewTimer(waitDelay)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// finishOutputs lets the copies of the output end (at once when every
// process that wrote it is gone), then ends them.
func (s *sysProcess) finishOutputs() {
	s.waitOutputs()
	s.closeOutputs(nil)
}

// closeOutputs closes the read ends of the output pipes (ending their
// copies) and the given write ends, and waits for the copies.
func (s *sysProcess) closeOutputs(ends []*os.File) {
	for _, f := range ends {
		f.Close()
	}
	for _, r := range s.readers {
		r.Close()
	}
	s.copies.Wait()
}

// testHookBeforeWait, if set, runs before the wait for a supervisor: a test
// delays that wait so that a reaper that took the supervisor's exit status
// would be seen. Atomic: a test sets it while supervisors of earlier tests
// may still be waited for.
var testHookBeforeWait atomic.Pointer[func(supervisor int)]

// forkMu is held while a supervisor is forked and registered in
// supervisors, and by the PID 1 reaper while it decides whether to reap a
// child: it must never reap a supervisor, whose exec.Cmd waits for it.
var (
	forkMu      sync.Mutex
	supervisors = map[int]bool{}
)

// run forks the supervisor and waits for it on one locked OS thread, whose
// exit would fire the supervisor's Pdeathsig. It never calls
// runtime.UnlockOSThread: when it returns, the runtime terminates the
// thread, which is harmless then because the supervisor has been reaped.
func (p *Process) run(cmd *exec.Cmd, started chan<- error) {
	runtime.LockOSThread()
	forkMu.Lock()
	err := cmd.Start()
	if err == nil {
		supervisors[cmd.Process.Pid] = true
	}
	forkMu.Unlock()
	if err != nil {
		started <- err
		return
	}
	p.sys.supPid = cmd.Process.Pid
	started <- nil
	if hook := testHookBeforeWait.Load(); hook != nil {
		(*hook)(p.sys.supPid)
	}
	_ = cmd.Wait()
	forkMu.Lock()
	delete(supervisors, p.sys.supPid)
	forkMu.Unlock()
	p.sys.state = cmd.ProcessState
	close(p.sys.exited)
	p.setGone()
}

// setGone closes p.gone, once: at the supervisor's "gone" or at its exit,
// whichever comes first.
func (p *Process) setGone() { p.sys.goneOnce.Do(func() { close(p.gone) }) }

// follow reads the supervisor's reports until it ends.
func (p *Process) follow(r *bufio.Reader) {
	exited := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		verb, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if verb == "gone" {
			// Sent after "exit": the output the command wrote was
			// waited for then.
			p.setGone()
			continue
		}
		if verb == "exit" && !exited {
			if ws, err := strconv.ParseUint(arg, 10, 32); err == nil {
				p.res = resultOfStatus(p.pid, syscall.WaitStatus(ws))
				// Like exec.Cmd.Wait: the output written before the
				// exit is copied first, waiting at most waitDelay for a
				// process left behind that holds the pipe.
				if !p.sys.waitOutputs() {
					p.res.Err = exec.ErrWaitDelay
				} else if p.sys.copyErr != nil {
					p.res.Err = p.sys.copyErr
				}
				exited = true
				close(p.done)
			}
		}
	}
	<-p.sys.exited
	p.sys.close()
	p.sys.finishOutputs()
	if !exited {
		// The supervisor was killed (by someone else: it exits only when
		// it has no child left). What it started is reparented to the
		// nearest subreaper or init: kill the command's group at least.
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		p.res = Result{Pid: p.pid, ExitCode: -1,
			Err: fmt.Errorf("the supervisor (pid %d) ended before the command: %v", p.sys.supPid, p.sys.state)}
		close(p.done)
	}
}

// send writes one request to the supervisor. Once the supervisor is gone it
// does nothing: everything it supervised is gone too.
func (s *sysProcess) send(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl != nil {
		_, _ = s.ctl.WriteString(line + "\n")
	}
}

func (s *sysProcess) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl != nil {
		s.ctl.Close()
		s.ctl = nil
	}
}

// signal sends sig to the child and every descendant. While the child has
// not been reported reaped, the runner signals its process group itself, at
// once, and leaves the supervisor only the descendants that left the group:
// a hop through the supervisor costs milliseconds on a busy host, in the
// middle of a hand-off. (The supervisor reaps the child; a group id stays
// allocated while a member lives, and the pid of a reaped leader is reused
// only once the kernel's pid counter has wrapped.)
func (p *Process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
	default:
		if syscall.Kill(-p.pid, sig) == nil {
			p.sys.send("signal-rest " + strconv.Itoa(int(sig)))
			return nil
		}
	}
	p.sys.send("signal " + strconv.Itoa(int(sig)))
	return nil
}

// SetLastWill gives the supervisor w as the runner's last will, replacing
// any earlier one (Spec.LastWill too); a will with no Args clears it. Only
// Linux runs it: see LastWill. A runner that dies before it has written
// the will to the supervisor's socket leaves the one it had.
func (p *Process) SetLastWill(w LastWill) { p.sys.send(willLines(w)) }

// willLines is w in the supervisor's protocol, without the last newline.
func willLines(w LastWill) string {
	var b strings.Builder
	for _, a := range w.Args {
		b.WriteString("will-arg " + strconv.Quote(a) + "\n")
	}
	for _, kv := range w.Env {
		b.WriteString("will-env " + strconv.Quote(kv) + "\n")
	}
	b.WriteString("will")
	return b.String()
}

// kill has the supervisor SIGKILL every descendant until none is left, and
// exit.
func (p *Process) kill() { p.sys.send("kill") }

// Standby is a supervisor started ahead of time: it has done everything a
// start needs but fork the command (Go's runtime start, the subreaper, the
// files), so that Start runs the command at once. A runner keeps one ready
// while it follows, and the next mastership's command starts a few
// milliseconds sooner.
type Standby struct {
	p    *Process
	r    *bufio.Reader
	once sync.Once
}

// Prepare starts a standby supervisor for spec; Start starts the command,
// Close discards it.
func Prepare(spec Spec) (*Standby, error) {
	path, err := exec.LookPath(spec.Path)
	if err != nil {
		return nil, fmt.Errorf("childproc: prepare %s: %w", spec.Path, err)
	}
	p, r, err := spawn(spec, path)
	if err != nil {
		return nil, fmt.Errorf("childproc: prepare %s: %w", spec.Path, err)
	}
	return &Standby{p: p, r: r}, nil
}

// Start starts the command, with env added to the environment of the
// Spec it was prepared with. A Standby starts at most once.
func (s *Standby) Start(env []string) (*Process, error) {
	used := true
	s.once.Do(func() { used = false })
	if used {
		return nil, errors.New("childproc: standby already used")
	}
	var b strings.Builder
	for _, kv := range env {
		b.WriteString("env " + strconv.Quote(kv) + "\n")
	}
	b.WriteString("go\n")
	s.p.sys.send(strings.TrimSuffix(b.String(), "\n"))
	p, err := s.p.handshake(s.r)
	if err != nil {
		return nil, fmt.Errorf("childproc: start from standby: %w", err)
	}
	return p, nil
}

// Close discards the standby supervisor (when it was not used) and waits
// for it to exit.
func (s *Standby) Close() {
	s.once.Do(func() {
		s.p.sys.close() // end of file: the standby exits
		<-s.p.sys.exited
		s.p.sys.finishOutputs()
	})
}
