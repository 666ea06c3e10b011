//go:build linux

// Package chaos is masterjob's chaos harness: a driver that runs several
// instances of a masterjob.Executor (or, in runner mode, of `masterjob run`
// with a child command) as separate processes on one store, injects faults
// on a seeded random schedule, and checks masterjob's promises (the root
// package's documentation; the README's "Guarantees and their limits")
// against what every instance reported.
//
// # Processes
//
// The driver re-executes its own binary with the "instance" subcommand (see
// Main) once per instance slot; a SIGKILLed or SIGTERMed instance is
// restarted in its slot with the next generation. Each instance runs an
// executor with short timings for a few lock names; every job reports its
// mastership (start, when it was told to stop, and its return, with the
// stop reason) and, while master, writes every few milliseconds to the
// driver's fenced Sink, over the driver's unix socket. Timestamps come from
// CLOCK_MONOTONIC (Mono), which every process on the host shares, so
// intervals of different processes compare directly.
//
// Half the jobs are slow to stop: told to stop, they go on writing for a
// random time up to past the lease, bounded only by what the executor tells
// them (masterjob.StopDeadline; for half of them also masterjob.StopReason,
// the CLI's rule), so that faults land while a mastership is stopping.
//
// In runner mode (Config.Runner) the "runner" subcommand runs the CLI's
// `masterjob run` in the instance process, and its command is the
// "child" subcommand, by default under sh -c 'CHILD & wait': the child
// reports its mastership itself, ignores SIGTERM for its planned stop time,
// and must be killed by the runner in time; it must also die with the
// runner, with everything it started.
//
// Instances are started and waited for from goroutines locked to their OS
// threads, with Pdeathsig SIGKILL, so that they die with the driver; every
// instance also shuts down when the driver's socket closes, and carries an
// environment tag that lets the driver find any survivor at the end (and,
// per generation, any process a dead runner left behind).
//
// # Faults
//
// SIGKILL (then restart), SIGSTOP for longer than the lease (then SIGCONT),
// SIGTERM (graceful shutdown, then restart), a cut between one instance and
// the store and added latency (PostgreSQL: through a per-instance TCP Proxy
// run by the driver; SQLite: a store-level outage or delay injected into the
// instance's store calls, subscriptions included, as there is no network),
// a store restart (PostgreSQL: pg_terminate_backend of the instance's
// backends; SQLite: close and reopen of the instance's handle), a jump of
// the instance's view of wall time, disable/enable of a lock through the
// store, a store-side loss (the driver deletes the lock's record, or sets
// its lease's expiry in the past, through its own connection, as an
// operator or a failover would), and combinations: a planned stop of a
// master (disable, or SIGTERM) and, while its job stops, a store-side loss,
// a cut or a SIGSTOP. In runner mode a quarter of the SIGKILLs also kill
// the lock's next master the moment its command reports its start, the
// first milliseconds of a mastership.
//
// # Checks
//
// Check reads the Timeline: overlapping masterships (except when the older
// master was SIGSTOPped, in which case it must stop promptly after SIGCONT
// and the sink must refuse its late writes, or its lease was ended by a
// store-side loss, in which case the next rule bounds it), jobs that ran on
// more than a heartbeat after the store refused their lease (after a
// store-side loss, or after their instance reported the loss), writes
// accepted with a stale token, tokens that do not grow, periods with no
// master beyond the bound while the lock was enabled and an instance
// healthy, masters not told to stop within a heartbeat of a disable,
// acquisitions while disabled, crashed instances, processes a runner
// started that outlived it, a runner SIGKILLed while its command ran that
// left no last will (each will records its start in a file the driver
// names), and processes, jobs or leases that outlived the run.
package chaos
