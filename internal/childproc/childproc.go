//go:build unix

// Package childproc runs a command as the child of a master so that it never
// outlives its mastership.
//
// The child gets its own process group, so that signals reach every process
// it started and a Ctrl-C in the runner's terminal is left to the runner,
// which decides how to stop the child.
//
// On Linux the child also gets Pdeathsig SIGKILL: the kernel kills it when the
// runner dies, even by SIGKILL. Pdeathsig fires when the OS thread that forked
// the child exits, not the process (golang/go#27505), and the Go runtime
// retires threads; so Start forks and waits for the child from one goroutine
// that locks its OS thread for the child's whole life and never unlocks it: the
// thread exits only after the child has been reaped. Pdeathsig reaches only
// the child itself; its own children (the rest of its process group) are
// stopped by Stop and Kill but survive a SIGKILLed runner. The kernel also
// clears Pdeathsig when the child executes a set-user-ID or set-group-ID
// program.
//
// Stop stops the whole process group: SIGTERM first, SIGKILL at a kill time
// chosen by the caller (the moment after which the lease may belong to another
// instance).
package childproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// Environment variables describing the lease, set for the child.
const (
	EnvLock     = "MASTERJOB_LOCK"
	EnvToken    = "MASTERJOB_TOKEN"
	EnvInstance = "MASTERJOB_INSTANCE"
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
	// pollInterval is how often Stop checks whether the group has emptied.
	pollInterval = 10 * time.Millisecond
	// reapTimeout bounds the wait for the group to disappear after SIGKILL
	// (processes in uninterruptible sleep die only when they wake).
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
	// Env is added to the runner's environment (later entries win).
	Env []string
	// Dir is the working directory; empty for the runner's.
	Dir string
	// Stdout and Stderr receive the child's output; nil discards it. Pass
	// os.Stdout and os.Stderr to pass the output through unbuffered. The
	// child's standard input is /dev/null.
	Stdout, Stderr io.Writer
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

// Process is a running (or finished) child. Its methods are safe for
// concurrent use.
type Process struct {
	pid  int
	done chan struct{}
	res  Result // written before done is closed
}

// Start starts the child in its own process group and returns once it is
// running. The child is reaped by a goroutine locked to the OS thread that
// forked it; Done is closed when it has exited.
func Start(spec Spec) (*Process, error) {
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	cmd.Stdout = spec.Stdout
	cmd.Stderr = spec.Stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = waitDelay

	p := &Process{done: make(chan struct{})}
	started := make(chan error, 1)
	go p.run(cmd, started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("childproc: start %s: %w", spec.Path, err)
	}
	return p, nil
}

// run forks the child and waits for it on one locked OS thread. It never
// calls runtime.UnlockOSThread: when it returns, the runtime terminates the
// thread, which is harmless then because the child has been reaped.
func (p *Process) run(cmd *exec.Cmd, started chan<- error) {
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	p.pid = cmd.Process.Pid
	started <- nil
	err := cmd.Wait()
	p.res = resultOf(p.pid, cmd.ProcessState, err)
	close(p.done)
}

func resultOf(pid int, ps *os.ProcessState, err error) Result {
	r := Result{Pid: pid, ExitCode: -1}
	if ps == nil {
		r.Err = err
		return r
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		r.Signal = ws.Signal()
		r.ExitCode = 128 + int(r.Signal)
		return r
	}
	r.ExitCode = ps.ExitCode()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		// The process exited but its output could not be copied in full
		// (exec.ErrWaitDelay or a write error): report it, keep the code.
		r.Err = err
	}
	return r
}

// Pid returns the child's process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed when the child has exited and been reaped. Other processes
// of its group may still be running: Stop or Kill them.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the child to exit and returns how it ended.
func (p *Process) Wait() Result {
	<-p.done
	return p.res
}

// Signal sends sig to every process of the child's group.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("childproc: signal group %d: %w", p.pid, err)
	}
	return nil
}

// Kill sends SIGKILL to every process of the child's group at once. It does
// not wait; Stop and Wait do.
func (p *Process) Kill() { _ = p.Signal(syscall.SIGKILL) }

// Stop stops the child's process group and returns how the child ended. It
// sends SIGTERM to the group, then SIGKILL at killAt if the child or any
// other process of its group is still running; if killAt is not in the
// future, it sends SIGKILL at once. It returns when the child has been reaped
// and no process of its group runs any more (after SIGKILL, it waits at most
// a short while for the kernel to finish them).
//
// Stop may be called after the child exited by itself, to stop what it left
// behind in its group, and more than once.
func (p *Process) Stop(killAt time.Time) Result {
	return p.StopBy(func() time.Time { return killAt })
}

// StopBy is Stop with a kill time that may move: killAt is called when Stop
// starts and again whenever the time it returned last arrives (and at least
// every recheckInterval), so a deadline that moves forward (a lease that is
// still being renewed) gives the group more time, and one that moves back
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
		killed = p.waitGroup(killAt)
	}
	res := p.Wait() // after SIGKILL the child exits promptly
	if killed {
		deadline := time.Now().Add(reapTimeout)
		for groupAlive(p.pid) && time.Now().Before(deadline) {
			time.Sleep(pollInterval)
		}
	}
	return res
}

// recheckInterval bounds how long StopBy trusts a kill time.
const recheckInterval = 50 * time.Millisecond

// waitGroup waits until the child has exited and its group is empty, or
// until killAt, when it sends SIGKILL to the group and reports true.
func (p *Process) waitGroup(killAt func() time.Time) (killed bool) {
	timer := time.NewTimer(0)
	timer.Stop() // no stale tick after Stop (Go 1.23 timers)
	defer timer.Stop()
	arm := func() bool {
		left := time.Until(killAt())
		if left <= 0 {
			p.Kill()
			return false
		}
		timer.Reset(min(left, recheckInterval))
		return true
	}
	if !arm() {
		return true
	}
	// Wait for the child, then poll for the rest of its group.
	ticker := time.NewTicker(pollInterval)
	ticker.Stop()
	defer ticker.Stop()
	var poll <-chan time.Time
	done := p.done
	for {
		select {
		case <-done:
			done = nil
			if !groupAlive(p.pid) {
				return false
			}
			ticker.Reset(pollInterval)
			poll = ticker.C
		case <-poll:
			if !groupAlive(p.pid) {
				return false
			}
		case <-timer.C:
			if !arm() {
				return true
			}
		}
	}
}

// running reports whether the child or another process of its group runs.
func (p *Process) running() bool {
	select {
	case <-p.done:
		return groupAlive(p.pid)
	default:
		return true
	}
}
