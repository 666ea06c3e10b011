// Package proctree reads the process tree from /proc: what a process's
// stat says, every descendant of a process, and signals to them that a
// reused pid cannot misdirect. The supervisor of a command
// (internal/childproc/supervisor) uses it to find and kill everything the
// command started; it imports little, so that the supervisor, which starts
// from package initialization, starts early.
package proctree
