package cli

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/masterjob/masterjob"
)

// writeHolder is a store that can keep its process's writes from starting
// (sqlite.Store): one that holds a file lock while it writes.
type writeHolder interface {
	HoldWrites(ctx context.Context) (release func(), err error)
}

// holdWritesTimeout bounds the wait for a store write in flight before a
// suspension.
const holdWritesTimeout = 2 * time.Second

// watchSuspend makes a suspension of the runner (a terminal's Ctrl-Z,
// SIGTSTP) suspend the command with it. The command runs in a process
// group of its own, which the terminal does not stop: suspended alone, the
// runner could not stop the command when its lease expired, and the next
// master's command would run beside it for as long as the runner stayed
// suspended. Now the command is stopped (SIGSTOP to it and everything it
// started), then the runner stops itself; on SIGCONT (fg, bg, kill -CONT)
// the command continues, unless the lease's trust window closed meanwhile:
// then it is killed while still stopped, and never runs again beside the
// next master's. SIGSTOP itself cannot be caught: a
// runner stopped that way leaves its command running, and fencing tokens
// are what protect that case.
func (r *runner) watchSuspend(log *slog.Logger, quit <-chan struct{}) {
	tstp := make(chan os.Signal, 1)
	cont := make(chan os.Signal, 1)
	signal.Notify(tstp, syscall.SIGTSTP)
	signal.Notify(cont, syscall.SIGCONT)
	defer signal.Stop(tstp)
	defer signal.Stop(cont)
	for {
		select {
		case <-tstp:
		case <-quit:
			return
		}
		if !r.suspend(log, cont, quit) {
			return
		}
	}
}

// suspend stops the command and the runner until SIGCONT; it reports false
// if quit came first. r.starting and r.mu are held throughout: a command
// whose start is under way is stopped too, and none starts between the
// command's stop and the runner's.
func (r *runner) suspend(log *slog.Logger, cont <-chan os.Signal, quit <-chan struct{}) bool {
	r.starting.Lock()
	defer r.starting.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.child
	if p != nil {
		_ = p.Signal(syscall.SIGSTOP)
		log.Warn("suspended (SIGTSTP): the command is stopped with the runner; SIGCONT (fg) resumes both", "pid", p.Pid())
	} else {
		log.Warn("suspended (SIGTSTP); SIGCONT (fg) resumes the runner")
	}
	// SQLite's write lock must not be held while stopped: every other
	// process's writes, so every take-over, would wait for this one.
	if h, ok := r.st.(writeHolder); ok {
		ctx, cancel := context.WithTimeout(context.Background(), holdWritesTimeout)
		release, err := h.HoldWrites(ctx)
		cancel()
		if err != nil {
			log.Warn("suspending with a store write in flight", "err", err)
		} else {
			defer release()
		}
	}
	select { // a SIGCONT from before the stop says nothing
	case <-cont:
	default:
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	select {
	case <-cont:
	case <-quit:
		if p != nil {
			_ = p.Signal(syscall.SIGCONT)
		}
		return false
	}
	if p != nil {
		if r.ex != nil && errors.Is(r.ex.Ready(), masterjob.ErrPastTrustWindow) {
			// Suspended past the lease's trust window: the next master
			// may run already. Killed stopped, the command never runs
			// again beside it (the loop's kill time has passed too).
			p.Kill()
			log.Warn("resumed (SIGCONT) past the lease's trust window: the stopped command is killed", "pid", p.Pid())
			return true
		}
		_ = p.Signal(syscall.SIGCONT)
	}
	log.Info("resumed (SIGCONT)")
	return true
}
