//go:build unix

// Package childproc runs a command as the child of a master so that neither
// it nor anything it starts outlives its mastership.
//
// On Linux the command does not run as the runner's own child: Start
// re-executes the running program (os.Executable) as a small supervisor,
// which starts the command and stays between the two. The supervisor mode
// is run by this package's initialization, before main (and before TestMain
// in a test binary), so every program that links the package can be
// re-executed that way with no call to make.
//
// The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): whatever the
// command starts, including processes that leave its process group, call
// setsid or double-fork, stays among its descendants, and the supervisor
// reaps every orphan among them. It finds them all by walking /proc. When
// the runner dies, by any signal, the supervisor learns it at once (its end
// of a socket pair with the runner reads end-of-file, and its Pdeathsig
// fires) and SIGKILLs every descendant, repeating until none is left, before
// it exits. Pdeathsig fires when the OS thread that forked the supervisor
// exits, not the process (golang/go#27505), and the Go runtime retires
// threads: so Start forks and waits for the supervisor from one goroutine
// that locks its OS thread for the supervisor's whole life (and the
// supervisor ignores a Pdeathsig while its parent is still the runner).
// The command itself gets Pdeathsig SIGKILL from the supervisor's main
// thread, so that it dies even if the supervisor is SIGKILLed.
//
// The command runs in its own process group, so that a Ctrl-C in the
// runner's terminal is left to the runner, which decides how to stop it.
// Stop stops every descendant: SIGTERM first, SIGKILL at a kill time chosen
// by the caller (the moment after which the lease may belong to another
// instance); it returns once every descendant has been reaped. The runner
// sends a signal to the command's process group itself, and the supervisor
// only to the descendants that left the group (its scan of /proc runs
// beside its loop, so that it never delays the report of the command's
// exit): a graceful hand-off waits for that report.
//
// In a process that is PID 1 (a container's init), StartReaper reaps the
// orphans that the kernel reparents to it, without taking the exit status
// of the supervisors from their waiters.
//
// Elsewhere (other Unix systems) the command is the runner's own child in
// its own process group, signals go to that group, and nothing kills it
// when the runner is SIGKILLed.
package childproc

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/internal/childproc/supervisor"
)

// Environment variables set for the child.
const (
	// EnvLock, EnvToken and EnvInstance describe the lease (LeaseEnv).
	EnvLock     = supervisor.EnvLock
	EnvToken    = "MASTERJOB_TOKEN"
	EnvInstance = "MASTERJOB_INSTANCE"
	// EnvRunnerPID is the pid of the process that called Start (the
	// runner), set by Start. On Linux the runner is not the child's parent
	// (the supervisor is): this is the pid to signal to stop or crash the
	// runner.
	EnvRunnerPID = "MASTERJOB_RUNNER_PID"
)

// LeaseEnv returns the environment entries (KEY=value) that tell the child
// which lease it runs under.
func LeaseEnv(lock string, token int64, instance string) []string {
	return []string{
		EnvLock + "=" + lock,
		EnvToken + "=" + strconv.FormatInt(token, 10),
		EnvInstance + "=" + instance,
	}
}

// Tunables. Variables so that tests of other packages need not wait.
var (
	// pollInterval is how often Stop checks whether the child's
	// descendants have gone, where it has to poll.
	pollInterval = 10 * time.Millisecond
	// reapTimeout bounds the wait for the descendants to disappear after
	// SIGKILL (processes in uninterruptible sleep die only when they wake).
	reapTimeout = 2 * time.Second
)

// waitDelay bounds how long Wait waits, after the child exited, for its
// output to be copied when Stdout or Stderr is not an *os.File and a process
// left behind keeps the pipe open.
const waitDelay = 500 * time.Millisecond

// Spec describes the command to run.
type Spec struct {
	// Path is the program: a path, or a name looked up in $PATH.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// DropEnv names variables of the runner's environment that the child
	// must not see (secrets of the runner).
	DropEnv []string
	// Env is added to the runner's environment, after DropEnv is applied
	// (later entries win).
	Env []string
	// Dir is the working directory; empty for the runner's.
	Dir string
	// Stdout and Stderr receive the child's output; nil discards it. Pass
	// os.Stdout and os.Stderr to pass the output through unbuffered. The
	// child's standard input is /dev/null.
	Stdout, Stderr io.Writer
	// LastWill is the runner's last will (none when it has no Args). The
	// supervisor starts the command only once it has the will, so a
	// runner that dies at any moment leaves either no command or its
	// will; Process.SetLastWill replaces it later.
	LastWill LastWill
}

// environ returns the child's environment: the runner's, without DropEnv,
// plus EnvRunnerPID and Env.
func (s Spec) environ() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(s.DropEnv, name)
	})
	return supervisor.WithEnv(env, append([]string{EnvRunnerPID + "=" + strconv.Itoa(os.Getpid())}, s.Env...)...)
}

// LastWill is what a supervisor runs when its runner dies while the
// command runs: once the command and everything it started are gone, the
// supervisor replaces itself with this program (os.Executable) run with
// Args, in the command's environment (the runner's without Spec.DropEnv,
// with the lease's entries and EnvRunnerPID) with Env added, replacing
// entries of the same names. A program that sets a last will must
// recognize Args (a test binary in its TestMain, as tests re-execute it).
// The will runs only when the runner is dead (the supervisor has been
// reparented), never when the runner stops the command or closes its end;
// it is the place to announce, at once, what the runner can no longer say
// itself.
type LastWill struct {
	Args []string
	Env  []string
}

// Result is how the child ended.
type Result struct {
	// Pid is the child's process id.
	Pid int
	// ExitCode is the child's exit code, or 128+N when it was killed by
	// signal N (the shell's convention); -1 when unknown (see Err).
	ExitCode int
	// Signal is the signal that killed the child, or 0.
	Signal syscall.Signal
	// Err is set when the child could not be waited for.
	Err error
}

// String describes the result: "exit status 3", "killed by signal terminated".
func (r Result) String() string {
	switch {
	case r.Err != nil:
		return "wait failed: " + r.Err.Error()
	case r.Signal != 0:
		return "killed by signal " + r.Signal.String()
	default:
		return "exit status " + strconv.Itoa(r.ExitCode)
	}
}

// resultOfStatus turns a wait status into a Result.
func resultOfStatus(pid int, ws syscall.WaitStatus) Result {
	r := Result{Pid: pid, ExitCode: -1}
	switch {
	case ws.Signaled():
		r.Signal = ws.Signal()
		r.ExitCode = 128 + int(r.Signal)
	case ws.Exited():
		r.ExitCode = ws.ExitStatus()
	default:
		r.Err = fmt.Errorf("unexpected wait status %#x", uint32(ws))
	}
	return r
}

// Process is a running (or finished) child. Its methods are safe for
// concurrent use.
type Process struct {
	pid  int
	done chan struct{} // closed when the child has exited
	res  Result        // written before done is closed
	// gone is closed when the child and every process it started have
	// exited and been reaped (on Linux: when the supervisor says so, or
	// has exited).
	gone chan struct{}
	sys  sysProcess
}

// Start starts the child and returns once it is running. Done is closed when
// it has exited.
func Start(spec Spec) (*Process, error) {
	path, err := exec.LookPath(spec.Path)
	if err != nil {
		return nil, fmt.Errorf("childproc: start %s: %w", spec.Path, err)
	}
	p, err := start(spec, path)
	if err != nil {
		return nil, fmt.Errorf("childproc: start %s: %w", spec.Path, err)
	}
	return p, nil
}

// Pid returns the child's process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed when the child has exited and been reaped. Processes it
// started may still be running: Stop or Kill them.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the child to exit and returns how it ended.
func (p *Process) Wait() Result {
	<-p.done
	return p.res
}

// Kill sends SIGKILL to the child and every process it started, at once. It
// does not wait; Stop and Wait do.
func (p *Process) Kill() { p.kill() }

// Signal sends sig to the child and to every process it started (on Linux
// every descendant, wherever its process group or session; elsewhere the
// child's process group).
func (p *Process) Signal(sig syscall.Signal) error { return p.signal(sig) }

// Stop stops the child and every process it started, and returns how the
// child ended. It sends SIGTERM to them all, then SIGKILL at killAt if any
// is still running; if killAt is not in the future, it sends SIGKILL at
// once. It returns when the child has been reaped and no process it started
// runs any more (after SIGKILL, it waits at most a short while for the
// kernel to finish them).
//
// Stop may be called after the child exited by itself, to stop what it left
// behind, and more than once.
func (p *Process) Stop(killAt time.Time) Result {
	return p.StopBy(func() time.Time { return killAt })
}

// StopBy is Stop with a kill time that may move: killAt is called when Stop
// starts and again whenever the time it returned last arrives (and at least
// every recheckInterval), so a deadline that moves forward (a lease that is
// still being renewed) gives the child more time, and one that moves back
// is noticed promptly.
func (p *Process) StopBy(killAt func() time.Time) Result {
	killed := false
	if time.Until(killAt()) <= 0 {
		p.Kill()
		killed = true
	} else if p.running() {
		_ = p.Signal(syscall.SIGTERM)
	}
	if !killed {
		killed = p.waitGone(killAt)
	}
	res := p.Wait() // after SIGKILL the child exits promptly
	if killed {
		t := time.NewTimer(reapTimeout)
		defer t.Stop()
		select {
		case <-p.gone:
		case <-t.C:
		}
	}
	return res
}

// recheckInterval bounds how long StopBy trusts a kill time.
const recheckInterval = 50 * time.Millisecond

// waitGone waits until the child and everything it started are gone, or
// until killAt, when it kills them and reports true.
func (p *Process) waitGone(killAt func() time.Time) (killed bool) {
	timer := time.NewTimer(0)
	timer.Stop() // no stale tick after Stop (Go 1.23 timers)
	defer timer.Stop()
	for {
		left := time.Until(killAt())
		if left <= 0 {
			p.Kill()
			return true
		}
		timer.Reset(min(left, recheckInterval))
		select {
		case <-p.gone:
			return false
		case <-timer.C:
		}
	}
}

// running reports whether the child or a process it started may still run.
func (p *Process) running() bool {
	select {
	case <-p.gone:
		return false
	default:
		return true
	}
}
