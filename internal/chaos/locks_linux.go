//go:build linux

package chaos

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// SQLite's unix VFS takes its WAL locks as POSIX byte-range locks on the
// -shm file; the writer lock (WAL_WRITE_LOCK) is the byte at this offset.
const sqliteWALWriteLockOffset = 120

// sqliteWriterLockHeld reports whether process pid holds SQLite's WAL
// writer lock on the database at dbPath, read from /proc/locks. A process
// paused while it holds it blocks every write transaction on the database,
// so every instance's store calls, until it resumes or dies.
func sqliteWriterLockHeld(pid int, dbPath string) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(dbPath+"-shm", &st); err != nil {
		return false
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return false
	}
	defer f.Close()
	return writerLockIn(bufio.NewScanner(f), pid, st.Ino)
}

// writerLockIn scans /proc/locks lines such as
//
//	3: POSIX  ADVISORY  WRITE 31393 fe:00:9978259 120 120
//
// for a granted WRITE lock of pid on inode ino covering the writer byte.
func writerLockIn(sc *bufio.Scanner, pid int, ino uint64) bool {
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 8 || f[1] != "POSIX" || f[3] != "WRITE" { // "->" marks a waiter
			continue
		}
		if p, err := strconv.Atoi(f[4]); err != nil || p != pid {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 || dev[2] != strconv.FormatUint(ino, 10) {
			continue
		}
		start, err1 := strconv.ParseInt(f[6], 10, 64)
		end := int64(1<<63 - 1)
		if f[7] != "EOF" {
			var err error
			if end, err = strconv.ParseInt(f[7], 10, 64); err != nil {
				continue
			}
		}
		if err1 == nil && start <= sqliteWALWriteLockOffset && sqliteWALWriteLockOffset <= end {
			return true
		}
	}
	return false
}
