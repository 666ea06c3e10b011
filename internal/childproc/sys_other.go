//go:build unix && !linux

package childproc

import (
	"errors"
	"syscall"
)

// sysProcAttr puts the child in its own process group. Outside Linux there is
// no Pdeathsig: a child survives a runner killed by SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether process group pgid has a member (zombies
// included: there is no portable way to tell them apart).
func groupAlive(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}
