//go:build linux

// Package chaos is masterjob's chaos harness: a driver that runs several
// instances of a masterjob.Executor as separate processes on one store,
// injects faults on a seeded random schedule, and checks the promises of the
// design against what every instance reported.
//
// # Processes
//
// The driver re-executes its own binary with the "instance" subcommand (see
// Main) once per instance slot; a SIGKILLed instance is restarted in its slot
// with the next generation. Each instance runs an executor with short timings
// for a few lock names; every job reports its mastership (start and stop,
// with the stop reason) and, while master, writes every few milliseconds to
// the driver's fenced Sink, over the driver's unix socket. Timestamps come
// from CLOCK_MONOTONIC (Mono), which every process on the host shares, so
// intervals of different processes compare directly.
//
// Instances are started and waited for from goroutines locked to their OS
// threads, with Pdeathsig SIGKILL, so that they die with the driver; every
// instance also shuts down when the driver's socket closes, and carries an
// environment tag that lets the driver find any survivor at the end.
//
// # Faults
//
// SIGKILL (then restart), SIGSTOP for longer than the lease (then SIGCONT),
// a cut between one instance and the store and added latency (PostgreSQL:
// through a per-instance TCP Proxy run by the driver; SQLite: a store-level
// outage or delay injected into the instance's store calls, as there is no
// network), a store restart (PostgreSQL: pg_terminate_backend of the
// instance's backends; SQLite: close and reopen of the instance's handle), a
// jump of the instance's view of wall time, and disable/enable of a lock
// through the store.
//
// # Checks
//
// Check reads the Timeline: overlapping masterships (except when the older
// master was SIGSTOPped, in which case it must stop promptly after SIGCONT
// and the sink must refuse its late writes), writes accepted with a stale
// token, tokens that do not grow, periods with no master beyond the bound
// while the lock was enabled and an instance healthy, masters that ran on
// after a disable, acquisitions while disabled, crashed instances, and
// processes, jobs or leases that outlived the run.
package chaos
