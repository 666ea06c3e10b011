package sqlitelock

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// walWriteLock is the byte of the "-shm" file that SQLite's unix VFS
// locks for a WAL database's writer: its shared-memory locks start at
// offset (22+8)*4 = 120, and the write lock is the first of them.
const walWriteLock = 120

// Writer returns the process, other than this one, that holds the write
// lock of the WAL database at dbPath, if any. It never waits and never
// opens the database's files: it looks the lock up in /proc/locks (closing
// any descriptor of the "-shm" file would drop this process's own POSIX
// locks on it, which SQLite relies on). A database not in WAL mode, or one
// this process holds, reports none.
func Writer(dbPath string) (Holder, bool) {
	var st unix.Stat_t
	if err := unix.Stat(dbPath+"-shm", &st); err != nil {
		return Holder{}, false
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return Holder{}, false
	}
	file := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if pid, ok := writeLocker(string(b), file, walWriteLock); ok && pid != os.Getpid() {
		return describe(pid), true
	}
	return Holder{}, false
}

// writeLocker finds, in the text of /proc/locks, the process holding a
// write lock over byte off of file ("major:minor:inode", as /proc/locks
// writes it); waiters ("->" lines) do not hold.
func writeLocker(locks, file string, off int64) (int, bool) {
	for line := range strings.Lines(locks) {
		// "1: POSIX  ADVISORY  WRITE 321 08:01:1234 120 120"
		f := strings.Fields(line)
		if len(f) != 8 || f[3] != "WRITE" || f[5] != file {
			continue
		}
		pid, err1 := strconv.Atoi(f[4])
		start, err2 := strconv.ParseInt(f[6], 10, 64)
		end, err3 := strconv.ParseInt(f[7], 10, 64)
		if f[7] == "EOF" {
			end, err3 = math.MaxInt64, nil
		}
		if err1 != nil || err2 != nil || err3 != nil || pid <= 0 || off < start || off > end {
			continue
		}
		return pid, true
	}
	return 0, false
}

// describe reads what /proc says of pid.
func describe(pid int) Holder {
	h := Holder{PID: pid}
	dir := "/proc/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(dir + "/comm"); err == nil {
		h.Command = strings.TrimSpace(string(b))
	}
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return h
	}
	// "pid (comm) S ...": the state follows the last ')', as comm may
	// hold one.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		h.State = stateWords(s[i+2])
	}
	return h
}

func stateWords(c byte) string {
	switch c {
	case 'T':
		return "stopped"
	case 't':
		return "stopped by a debugger"
	case 'D':
		return "waiting for disk I/O"
	case 'R':
		return "running"
	case 'S', 'I':
		return "sleeping"
	case 'Z':
		return "exiting"
	}
	return ""
}
