package proctree

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Info is what /proc/PID/stat says of a process.
type Info struct {
	State byte // R, S, D, Z, ...
	PPID  int
	PGRP  int
}

// Live reports whether the process can still run (it is not a zombie).
func (i Info) Live() bool { return i.State != 'Z' && i.State != 'X' }

// Stat reads /proc/PID/stat.
func Stat(pid int) (Info, bool) {
	var buf [512]byte
	return statBuf(pid, buf[:])
}

// statBuf is Stat with the caller's buffer. It uses bare system
// calls: the supervisor reads every /proc/PID/stat of the host on each pass
// of a kill, so each saved call counts.
func statBuf(pid int, buf []byte) (Info, bool) {
	fd, err := syscall.Open("/proc/"+strconv.Itoa(pid)+"/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return Info{}, false
	}
	n, err := syscall.Read(fd, buf)
	syscall.Close(fd)
	if err != nil || n <= 0 {
		return Info{}, false
	}
	b := buf[:n]
	// "pid (comm) state ppid pgrp ...": comm may contain spaces and ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Info{}, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return Info{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	if err1 != nil || err2 != nil {
		return Info{}, false
	}
	return Info{State: f[0][0], PPID: ppid, PGRP: pgrp}, true
}

// Descendants returns every descendant of root with what /proc says of it,
// from one pass over /proc. (/proc/PID/task/TID/children would be cheaper,
// but not every kernel has it: CONFIG_PROC_CHILDREN.)
func Descendants(root int) map[int]Info {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, err := d.Readdirnames(-1) // unsorted, unlike os.ReadDir
	d.Close()
	if err != nil {
		return nil
	}
	all := make(map[int]Info, len(names))
	children := make(map[int][]int)
	var buf [512]byte
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if info, ok := statBuf(pid, buf[:]); ok {
			all[pid] = info
			children[info.PPID] = append(children[info.PPID], pid)
		}
	}
	out := make(map[int]Info)
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if _, seen := out[c]; !seen && c != root {
				out[c] = all[c]
				queue = append(queue, c)
			}
		}
	}
	return out
}

// SignalDescendants sends sig to every live descendant of root and returns
// the pids it signalled. Each target is pinned with a pidfd and checked
// again (still a child of root or of a descendant) before the signal, so
// that a pid reused between the scan and the signal is never hit. Members
// of process group skipGroup (not 0) are left out: the caller signalled
// that group already, and a second SIGTERM may mean "now" to a program.
func SignalDescendants(root int, sig syscall.Signal, skipGroup int) []int {
	ds := Descendants(root)
	var sent []int
	for pid, info := range ds {
		if !info.Live() || (skipGroup != 0 && info.PGRP == skipGroup) {
			continue
		}
		sent = append(sent, pid)
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, syscall.ENOSYS) {
			_ = syscall.Kill(pid, sig) // kernels before 5.3
			continue
		}
		if err != nil {
			continue // gone
		}
		if now, ok := Stat(pid); ok && now.Live() {
			if _, inTree := ds[now.PPID]; inTree || now.PPID == root {
				_ = unix.PidfdSendSignal(fd, sig, nil, 0)
			}
		}
		_ = syscall.Close(fd)
	}
	return sent
}

// AwaitDeath waits, at most for within, until none of pids is alive (zombies
// are dead), checking only them: cheaper than a scan of /proc.
func AwaitDeath(pids []int, within time.Duration) {
	deadline := time.Now().Add(within)
	pause := 100 * time.Microsecond
	for {
		pids = slices.DeleteFunc(pids, func(pid int) bool {
			info, ok := Stat(pid)
			return !ok || !info.Live()
		})
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, 2*time.Millisecond)
	}
}
