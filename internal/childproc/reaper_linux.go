package childproc

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The PID 1 reaper. The kernel reparents every orphan of a PID namespace to
// its PID 1 (unless a subreaper is nearer); a PID 1 that never waits for
// them collects zombies. The runner's own children are the supervisors,
// each waited for by its exec.Cmd: the reaper must not take their exit
// status (waitpid(-1) would race with exec.Cmd.Wait). So it peeks at the
// next zombie child without reaping it (waitid WNOWAIT) and reaps it only if
// it is not a supervisor, under forkMu, which Start holds from the fork of
// a supervisor until it is registered.
//
// Orphans of the command never come here while its supervisor runs (the
// supervisor is their subreaper); they come from processes that PID 1 did
// not start itself (docker exec) or from a supervisor killed from outside.

// reapInterval is how often the reaper looks for zombies without a SIGCHLD.
const reapInterval = time.Second

// reaperOnce guards StartReaper.
var reaperOnce sync.Once

// StartReaper, in a process that is PID 1 (a container's init), starts
// reaping the orphans that the kernel reparents to it: on every SIGCHLD and
// every reapInterval, every zombie child that is not a supervisor of Start.
// Elsewhere it does nothing. The reaper runs until the process exits.
//
// Call it only in a program whose children are all started by Start: it
// reaps any other child, and would take its exit status from a Wait.
func StartReaper() {
	if os.Getpid() != 1 {
		return
	}
	reaperOnce.Do(startReaper)
}

func startReaper() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		t := time.NewTicker(reapInterval)
		defer t.Stop()
		for {
			select {
			case <-sigs:
			case <-t.C:
			}
			reapOrphans()
		}
	}()
}

// reapOrphans reaps the zombie children that are not supervisors and
// returns how many it reaped. A supervisor's zombie hides the zombies behind
// it until its exec.Cmd has reaped it, which happens at once: reapOrphans
// waits a little for that.
func reapOrphans() int {
	n := 0
	for blocked := 0; blocked < 50; {
		pid, ok := nextZombie()
		if !ok {
			return n
		}
		if pid < 0 { // a supervisor's zombie
			blocked++
			time.Sleep(time.Millisecond)
			continue
		}
		n++
	}
	return n
}

// nextZombie reaps the first zombie child if it is not a supervisor and
// returns its pid; it returns -1 if that zombie is a supervisor's, and
// false if there is no zombie child.
func nextZombie() (int, bool) {
	forkMu.Lock()
	defer forkMu.Unlock()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		return 0, false
	}
	pid := siginfoPid(&info)
	if pid == 0 {
		return 0, false
	}
	if supervisors[pid] {
		return -1, true
	}
	var ws syscall.WaitStatus
	if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err != nil || got != pid {
		return 0, false
	}
	return pid, true
}

// siginfoPid returns si_pid: after si_signo, si_errno and si_code (and, on
// 64-bit systems, padding to align the union).
func siginfoPid(info *unix.Siginfo) int {
	off := uintptr(12)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), off)))
}
