// Package sqlitelock names the process that holds an SQLite database's
// write lock, so that an error can say who blocks every writer.
//
// In WAL mode SQLite serialises writers with a POSIX record lock on one
// byte of the database's "-shm" file. A process that holds it and is
// frozen (SIGSTOP, a terminal's Ctrl-Z, a debugger) or stuck in disk I/O
// blocks every other writer until it resumes or exits; its death releases
// the lock at once. Nothing another process does can break that lock, but
// it can name the holder.
package sqlitelock

import "strconv"

// Holder is a process holding a database's write lock.
type Holder struct {
	PID int
	// Command is the process's name (/proc/PID/comm), "" if unknown.
	Command string
	// State is the process's scheduling state in words: "stopped",
	// "stopped by a debugger", "waiting for disk I/O", "running",
	// "sleeping", or "" if unknown.
	State string
}

// Frozen reports whether the holder is stopped: it will not release the
// lock until someone resumes it.
func (h Holder) Frozen() bool {
	return h.State == "stopped" || h.State == "stopped by a debugger"
}

// String describes the holder for an error message.
func (h Holder) String() string {
	s := "process " + strconv.Itoa(h.PID)
	if h.Command != "" {
		s += " (" + h.Command + ")"
	}
	if h.State != "" {
		s += ", " + h.State
	}
	return s
}
