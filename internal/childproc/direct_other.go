//go:build unix && !linux

package childproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// sysProcess is empty outside Linux: the child is the runner's own child.
type sysProcess struct{}

// StartReaper does nothing outside Linux.
func StartReaper() {}

// start runs the command as the runner's own child in its own process group.
// Outside Linux there is no Pdeathsig: a child survives a runner killed by
// SIGKILL.
func start(spec Spec, path string) (*Process, error) {
	cmd := exec.Command(path, spec.Args...)
	cmd.Args[0] = spec.Path
	cmd.Env = spec.environ()
	cmd.Dir = spec.Dir
	cmd.Stdout = spec.Stdout
	cmd.Stderr = spec.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{pid: cmd.Process.Pid, done: make(chan struct{}), gone: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.res = resultOf(p.pid, cmd.ProcessState, err)
		close(p.done)
		for groupAlive(p.pid) {
			time.Sleep(pollInterval)
		}
		close(p.gone)
	}()
	return p, nil
}

func resultOf(pid int, ps *os.ProcessState, err error) Result {
	if ps == nil {
		return Result{Pid: pid, ExitCode: -1, Err: err}
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	r := resultOfStatus(pid, ws)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && r.Err == nil {
		// The process exited but its output could not be copied in full
		// (exec.ErrWaitDelay or a write error): report it, keep the code.
		r.Err = err
	}
	return r
}

// signal sends sig to every process of the child's group.
func (p *Process) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("childproc: signal group %d: %w", p.pid, err)
	}
	return nil
}

func (p *Process) kill() { _ = p.signal(syscall.SIGKILL) }

// SetLastWill does nothing here: without a supervisor, nothing outlives the
// runner to run a will (see LastWill).
func (p *Process) SetLastWill(LastWill) {}

// groupAlive reports whether process group pgid has a member (zombies
// included: there is no portable way to tell them apart).
func groupAlive(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// Standby outside Linux holds the Spec only: Start starts the command then
// (there is no supervisor to prepare).
type Standby struct {
	spec Spec
	used bool
}

// Prepare returns a Standby for spec.
func Prepare(spec Spec) (*Standby, error) { return &Standby{spec: spec}, nil }

// Start starts the command with env added to the Spec's environment.
func (s *Standby) Start(env []string) (*Process, error) {
	if s.used {
		return nil, errors.New("childproc: standby already used")
	}
	s.used = true
	spec := s.spec
	spec.Env = append(append([]string(nil), spec.Env...), env...)
	return Start(spec)
}

// Close discards the standby.
func (s *Standby) Close() { s.used = true }
