// Package supervisor is the process that stands between a runner and its
// command (package childproc): a program that links it is re-executed as
// the supervisor of each command it starts. Its init takes over the process
// when the first argument is Arg, before most of the program's packages
// are initialized (Go initializes a package once its imports are, in the
// order of their paths): it imports little (no os/exec, no store, no gRPC),
// so that it starts sooner and stays smaller than the program it is part
// of.
//
// childproc.Start runs
//
//	os.Executable() Arg RUNNER_PID PATH -- ARGV0 ARGS...
//
// with one end of a socket pair as file descriptor 3, in the child's
// environment, working directory and standard files. The supervisor becomes
// a child subreaper and waits for the runner's "go"; then it starts PATH
// (with ARGV0 ARGS...) in a process group of its own. It speaks a line
// protocol on descriptor 3:
//
//	supervisor to runner:  "pid N"      the command runs as pid N
//	                       "err TEXT"   the command could not be started
//	                       "exit WS"    the command exited with wait status WS
//	                       "gone"       no descendant is left: the command and
//	                                    everything it started have exited and
//	                                    been reaped (the supervisor exits next)
//	runner to supervisor:  "signal N"   send signal N to every descendant
//	                       "kill"       SIGKILL every descendant until none is left
//	                       "will-arg Q" an argument of the last will (a quoted Go string)
//	                       "will-env Q" an environment entry of the last will (added
//	                                    to the command's environment)
//	                       "will"       the arguments and entries sent since the
//	                                    last "will" are the last will (none: no will)
//	                       "env Q"      before "go": an entry to add to the
//	                                    command's environment (a quoted Go string)
//	                       "go"         start the command (sent once; only the will's
//	                                    and "env" lines come before it)
//
// The runner sends its last will before its "go", so the command never
// runs before the supervisor holds the will. End of file before "go" means
// the runner is gone or discarded the supervisor: it exits, nothing started.
//
// End of file on descriptor 3 means the runner is gone: the supervisor
// SIGKILLs every descendant. It exits once it has no child left: the command
// has exited and every process it started has exited and been reaped (after
// ExitDelay, its standard files given back, when its runner lives). If the
// runner died (this process was reparented) and left a last will, the
// supervisor then executes the will instead of exiting (see childproc.LastWill).
package supervisor
