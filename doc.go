// Package masterjob runs a job on exactly one instance of a clustered
// application, fails over to another instance when that one dies, and lets
// operators disable and enable each job cluster-wide.
//
// Every instance creates an Executor on a shared store (see package store:
// SQLite for one host, PostgreSQL beyond), registers jobs under lock names
// with StartMaster, and calls Run. For each lock name the instances elect
// one master; only the master runs the job.
//
//	st, _ := sqlite.Open("masterjob.db")
//	ex, _ := masterjob.New(st, masterjob.WithLogger(logger))
//	ex.StartMaster("JOB-SCHEDULER", masterjob.StartStop(start, stop))
//	go ex.Run(ctx) // on ctx cancellation: stop jobs, release leases, return
//
// # Leases, tokens and the store's clock
//
// A lock's master holds a lease: a record in the store saying "instance X
// holds lock L with token T until time E". E is computed by the store from
// its own clock (now() + lease duration); instances only ever send
// durations and read back remaining time-to-live, so their wall clocks
// play no part. T, the fencing token, grows strictly with every
// acquisition of a lock, across releases, expiries, deleted records and
// store restarts. The job sees T (Lease.Token) and can pass it to
// downstream systems, which refuse writes carrying a token lower than the
// highest they have seen: that is what keeps a paused, stale master from
// doing harm in the moments before it notices it is no longer master.
//
// # States of one lock on one instance
//
//	follower ──acquire committed──▶ master ──loss / demotion──▶ stopping ──job returned──▶ follower
//	                                  │                           ▲
//	                                  └─disable / shutdown ───────┘ (lease kept and renewed until the job returns, then released)
//
// Follower: the instance checks all the locks it follows in one store round
// trip (Store.Acquire), which atomically takes any lock that is free and
// enabled. It then sleeps until the earlier of CheckMasterInterval and the
// moment the current lease expires (the store reports its remaining TTL),
// or until the store pushes a release (PostgreSQL LISTEN/NOTIFY; SQLite by
// watching the file for a notification row). A free
// lock is taken at once on start: no cold-start wait. On a push that a
// lock may be free (an Enable; a release or an expiry, from a store that
// hints every lease change, store.LeaseHinter), one member of the group
// (the first in line by the member records: of those under their share,
// the one that ranks the lock highest) checks at once and the others
// later (100 ms after an Enable, 5 ms after a release or an expiry), so
// that one acquisition goes out first instead of one per follower.
//
// Master: the job starts only after the acquisition committed. All leases an
// instance holds are renewed together, one round trip per
// HeartbeatInterval. A lease whose acquisition answered late joins that
// schedule no later than a heartbeat after its acquisition began.
//
// Timings belong to the executor, and StartMaster may override them for a
// lock (the seed's per-call settings). Locks with equal timings form a
// timing class served by one loop goroutine: an instance pays one renewal
// per heartbeat and one check per check interval for each class, whatever
// the number of locks in it.
//
// # The trust window
//
// A renewal that began at local monotonic time t makes the master trust its
// lease until t + Tolerance - SafetyMargin: the store extended the lease to
// at least t + Tolerance on its own clock, since it processed the renewal
// after t. When that deadline passes without a newer successful renewal,
// whatever the reason (store down, slow, partitioned, process paused), the
// master demotes itself: it cancels the job's context (cause
// ErrTrustWindowPassed, or ErrLeaseExpired if even the lease itself must
// have run out, as after a SIGSTOP longer than the lease) and calls stop.
// The deadline is checked on every wake of the executor's loop, so a
// renewal that returns after a pause can never revive a mastership whose
// window closed. Store calls run beside the loop and are bounded by the
// deadline, so a hung store cannot hold the loop; so does the subscription
// to the store's notifications (one per executor, with its own timeout and
// backoff), and the loop's log lines go through a bounded queue, so that a
// blocked log output cannot hold it either.
//
// The clock of trust windows is the monotonic clock plus the time the host
// spent suspended (Linux CLOCK_BOOTTIME; elsewhere the monotonic clock
// alone). Go's monotonic clock stops during a host suspend while the
// store's clock runs on: measured on it alone, a window would stay open
// after a resume although the lease expired in the store long ago. With the
// suspend counted, the master stops its job at the first wake of its loop
// after resuming (its next scheduled renewal or deadline, at most a
// heartbeat later, since Go's timers do not count the suspend) without
// waiting for a store answer. What no clock can prevent: a process frozen
// as a whole (SIGSTOP, a paused VM whose clocks stop with it, a debugger)
// runs no code while frozen, and a write it had in flight may land after
// another master started. That window is what the fencing token is for.
//
// A failed renewal is retried up to MaxHeartbeatRetryCount times, spread
// over what is left of the window; if all fail, the master demotes itself
// at once rather than wait for the deadline.
//
// # Stop, then release
//
// On a planned step-down (shutdown, disable, the job returning) the executor
// cancels the job, keeps renewing the lease while the job stops, and only
// when the job has returned releases the lease (fenced by holder and token)
// so a follower takes over at once. Releasing first would let the next
// master start beside a job that is still stopping. On a loss (the store
// says the lease is gone, or the trust window closed) there is nothing to
// keep: the job is stopped as fast as it will go, and a release is only
// attempted afterwards, fenced, in case the lease was still ours.
//
// A loss during a planned stop is still a loss. While a job stops for a
// planned reason its lease is renewed; if the store then refuses a renewal
// (an operator deleted the record, a failover to a replica that missed the
// last renewals) or the trust window closes, another instance may already
// be master. The job's context was cancelled already and its cause cannot
// change, so StopReason turns to the loss, StopDeadline moves to now and a
// StartStop job's stop context is cancelled: the CLI kills its child at
// once instead of at the old expiry.
//
// # Disable and enable
//
// Disable is stored in the lock's own record, so acquisition checks it in
// the same atomic step as the take. Disable also revokes the current lease:
// its holder learns at its next renewal (at once where the store pushes;
// where the push names the revoked lease, as on SQLite, PostgreSQL and
// etcd, from the push itself, without that renewal), stops the job, then
// releases. Nobody can acquire a revoked or disabled
// lock. Enable clears the mark; the next check elects one master.
//
// # Members, leaders and hand-offs
//
// On stores that keep a member list (store.Membership) every instance
// announces itself (host, pid, version, address, start time, the locks it
// takes part in, how many it masters) in the checks and renewals it makes
// anyway: no round trip of its own. The record expires when they stop, and
// Run removes it on shutdown: 100 ms after the shutdown handed a lease to a
// successor, if it did, so that the successor's start has the host and the
// store to itself.
//
// Every instance knows the master of each lock it takes part in
// (Executor.Leader), from its own checks and renewals; stores that push
// report acquisitions too, so a follower hears of a new master within 100
// ms and one round trip (it reads the lock once the new master's start,
// which its read would compete with, is under way). An Observer that implements LeaderObserver is told of each
// change, as client-go's OnNewLeader callback is.
//
// A hand-off (Executor.Handoff, the API, the CLI) moves a mastership without
// disabling the lock: the store records the request in the lock's record,
// the master sees it at its next renewal (at once where the store pushes),
// stops its job, and releases the lease: on a store that implements
// store.Transfers, to a successor alive in its member list, by giving it
// the lock in the releasing commit (the successor starts its job after
// one read of the lease, which bounds its trust window); otherwise
// reserved for the successor named in the request, or for anyone. A
// shutdown hands over the same way; a balancing move always releases
// reserved for the receiver. Stop, then release, as
// always; a reservation lapses after min(Tolerance, 5s) if the successor
// does not come, and the old master waits a check interval before
// competing for the lock again unless no other instance takes part in it.
//
// # Balancing
//
// With a member list, instances that take part in the same locks share the
// masterships: each takes at most its share (ceil(L × weight / Σ weight))
// of the free locks in a check, preferring other locks than its peers
// (rendezvous hashing), and leaves the rest for half a check interval to
// instances under their share; after that anyone takes them, so a lock
// never waits long for a master. An instance holding more than its share
// plus a slack hands the extra masterships to peers under their share, by
// hand-offs, once the member list has been the same for two reads (one
// read per check interval is the only round trip balancing adds). A lease
// that expired without a release marks its holder as probably dead, so its
// locks spread over the survivors at once; a graceful shutdown hands its
// masterships to the live peers. See WithBalance to weight an instance or
// switch balancing off.
//
// # Failures
//
// Store errors never end Run: checks back off exponentially with jitter up
// to CheckMasterInterval, renewals are retried inside the trust window, and
// everything recovers without a restart when the store returns. An
// acquisition whose answer was lost is not adopted (its job might have run
// already): the instance releases it and acquires afresh with a new token.
//
// # Jobs
//
// A Job's Run is called once per mastership with a context cancelled when
// mastership ends (context.Cause, or StopReason, says why). StartStop adapts
// the seed's start/stop shape; stop runs only for a start that succeeded.
// StopDeadline tells a job by when it must have stopped. A job that returns
// by itself ends the mastership: the lease is released and this instance
// waits one CheckMasterInterval before competing for the lock again.
package masterjob
