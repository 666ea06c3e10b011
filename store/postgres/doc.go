// Package postgres is the PostgreSQL backend of masterjob's store contract
// (package store), built on pgx v5.
//
// # Opening
//
// Open creates and owns a pgxpool.Pool; New uses a pool the application
// already has (Close then leaves that pool open). Options choose the schema
// (WithSchema), the prefix of object names (WithTablePrefix, default
// "masterjob_"), whether the store creates its objects (WithoutMigrate), the
// upper bound of every call (WithCallTimeout, default 5s) and the retention
// of the history (WithHistoryLimit, default store.DefaultHistoryLimit).
//
// # Schema
//
// The store uses one table, <schema>.<prefix>locks, with one row per lock
// name holding the lease (holder, token, acquired/renewed/expires times,
// revoked), the control (disabled, reason, changed_by, changed_at), the
// lease the current one replaced (prev_holder, prev_token), a pending
// hand-off request (handoff_to, handoff_token, handoff_by, handoff_at) and
// a reservation for a successor (reserved_for, reserved_until); and one
// sequence, <prefix>token_seq, that issues fencing tokens. The sequence is
// never reset, so tokens grow across deleted rows and server restarts. The
// table <prefix>history holds the audit history (store.History), and
// <prefix>members one row per live instance (store.Membership).
//
// A member's row holds the locks it takes part in as one sorted text[]
// column, not as rows of a separate table, for three reasons. The record
// is then one row, written by one INSERT ... ON CONFLICT DO UPDATE: the
// lock list and its set ID change together, with no multi-row difference
// to apply (whose DELETE, under READ COMMITTED, would not see rows a
// concurrent write of the same member just inserted). A heartbeat that
// leaves the list as it is updates a small row: the list of 10,000 names,
// 34 to 44 kB compressed for names of 7 to 22 bytes, lives out of line in
// TOAST, an UPDATE that sets it to itself keeps the same TOAST value, and
// with only the primary key indexed the update is HOT (50 of 50 renewals
// of a member of 10,000 locks were, in pg_stat_user_tables); a table
// would hold 10,000 rows per member and two indexes. Leaving and pruning delete one row. The
// price is the filter by lock: Members(Lock) reads the array of every live
// member (0.4 ms of server time for a member of 10,000 locks), where a
// table would use an index. Figures, and the commands that measured them,
// are in docs/benchmarks.md ("PostgreSQL: members in the same round
// trip").
//
// The DDL ships embedded as schema.sql, a template documented for DBAs,
// written as numbered migrations ("-- masterjob:version N" sections). The
// version a database has reached is recorded in the table <prefix>meta (a
// database made before that table existed is recognised by its objects:
// version 1 or 2). Version 4 added the columns of the cluster view to the
// locks table and the members table. A store of version 3 still works on a
// version 4 database (the new columns have defaults), but it knows nothing
// of them: during a rolling upgrade an older instance can take a lock
// reserved for another and writes no member record (a hand-off request
// made for an earlier lease does not count for the lease it takes: the
// request holds that lease's token). Open and New migrate forward unless
// WithoutMigrate is given: inside a transaction that holds a
// pg_advisory_xact_lock keyed by the table's name, they create the schema if
// missing, read the version again and apply each section above it, once, in
// order; a failed section rolls the whole migration back. Several processes
// may start at once. When the database is at this version or a newer one,
// no DDL runs, so the application's role needs DDL rights only for the
// first start (and the first start of a version that adds a migration).
// With WithoutMigrate, Open refuses a database at an older version, naming
// the sections of schema.sql to apply.
//
// # Protocol
//
// Every decision about time is taken by the server's clock: SQL compares
// with now(), durations travel as interval parameters and remaining TTLs come
// back computed in SQL (expires_at - now(), in microseconds). The Go clock is
// never consulted.
//
//   - Acquire is one statement for all names: an INSERT ... SELECT over
//     unnest($names) of the candidates, the names whose row is missing or
//     free/expired, not disabled and not reserved for another instance in
//     the statement's snapshot, with ON CONFLICT (lock_name) DO UPDATE.
//     Under READ COMMITTED, DO UPDATE locks the latest committed version of
//     the row and its SET expressions see that version: there a CASE takes
//     the row only if it is still free/expired, not disabled and not
//     reserved for another instance, which makes the check of the control
//     atomic with the take (Disable upserts the same row). A candidate
//     that a concurrent caller won meanwhile is rewritten unchanged, so
//     that RETURNING reports the winner; only candidates are written, so a
//     follower's periodic check of locks held by others (or reserved for
//     others) writes nothing. The new token is drawn from the sequence
//     after the row is locked, so it exceeds every token the row ever had.
//     Taking a row copies the lease it replaces into prev_holder and
//     prev_token (a holder is still set only when that lease expired:
//     released rows have none), which Acquire reports as PrevHolder,
//     PrevToken and PrevExpired, and clears a pending hand-off request and
//     any reservation. pg_notify announces each lock taken. UNION ALL adds
//     the state of the other names from the snapshot (unknown names as free
//     and enabled). A lease the holder already holds is returned unchanged.
//   - Renew is one UPDATE ... FROM unnest($locks, $tokens) fenced by holder,
//     token and expires_at > clock_timestamp() (the time the row is read:
//     a lease another writer ended while the renewal waited for the row
//     is not revived). A revoked lease still renews (its holder
//     keeps it while the job stops) and reports Revoked; a pending hand-off
//     request is reported as HandoffRequested and HandoffTo.
//   - Release is one UPDATE fenced by holder and token that clears the lease
//     and any hand-off request but keeps the row (its control and its last
//     token), reserves the lock for LeaseRef.Successor until now() +
//     LeaseRef.Reserve when both are set, and calls pg_notify for each
//     released lock in the same statement. Its commit is asynchronous
//     (see "Asynchronous commits").
//   - Transfer (store.Transfers) is one UPDATE ... FROM unnest($locks,
//     $tokens, $successors, $reserves), fenced like Renew by holder, token
//     and expires_at > clock_timestamp(): a lease that is not the caller's
//     current, unexpired one is left alone. Under READ COMMITTED the fence
//     and the SET expressions are evaluated again on the latest committed
//     version of a row that changed meanwhile, so in the same row version,
//     and so in one commit, the lease ends and, when the ref names a
//     successor that has an unexpired member record (read FOR SHARE
//     first, so that its Leave either commits before, and the lock is
//     released, or after this commit), the lease is not revoked and the
//     lock not disabled (a CASE on the locked row), the successor gets a
//     new lease of the TTL from now(), HolderInfo from that record,
//     and a token drawn from the token sequence inside that CASE, as
//     Acquire draws it: only for rows given, and after the row's latest
//     version, so it exceeds every token the lock ever had. The lease it
//     replaced is recorded as ended, not expired (prev_holder NULL,
//     prev_token its token); a hand-off request and any reservation end.
//     Other rows are released as Release releases them (reserved for the
//     successor when it has a positive Reserve). pg_notify, in the same
//     statement, announces a lock given as an acquisition (the successor
//     and its new token as hints) and a lock released as a release. Its
//     commit is synchronous: a transfer is the successor's acquisition.
//   - Disable upserts the row: disabled, reason, changed_by, changed_at, and
//     revoked when a lease is held; it clears a pending hand-off request.
//     Enable clears disabled and reason. Both call pg_notify in the same
//     statement; neither changes a lock that is already in the requested
//     state (Changed is false).
//   - Handoff is one UPDATE of the lock's row that marks the request only
//     while the row holds an unexpired lease and is enabled, with
//     pg_notify; otherwise the row as the statement saw it says why
//     (ErrLockDisabled, or ErrNotHeld). The request records the token of
//     the lease it was made for, and counts only while that lease is the
//     current one and unexpired.
//   - AppendEvents is one INSERT ... SELECT over unnest of one array per
//     column, in a CTE, followed in the same statement by a DELETE of the
//     rows whose id is at or below the highest new id minus the retention:
//     one range delete on the primary key per batch. Entries are stamped
//     with now(). Events reads newest first by id, using the index on
//     (lock_name, id) when it filters by lock.
//
// # Members
//
// Announce makes no call: it records, on the handle, the member's record
// and a number for this announcement. Every later Acquire and Renew for
// that member's id on the same handle sends, after its own statement and
// in the same round trip, one INSERT ... ON CONFLICT DO UPDATE of the
// member's row: a pgconn batch of the two statements (Parse, Bind,
// Describe, Execute each) ending with a single Sync, which the server runs
// as one implicit transaction, so the member's TTL is refreshed on the
// server's clock (expires_at = now() + ttl) by the very round trip that
// renews or checks the leases. The lock list is sent, and written, only
// while the handle does not know the row to hold the announced
// LockSetID's list: each write returns what the row holds, and the handle
// sends the list again after a new set, a failed write, a row rewritten
// without it (pruned after expiring, then written again) or written by
// another handle. Two calls of one handle in flight at once may land in
// either order: a write carrying an older announcement of the same handle
// refreshes the row's expiry but does not undo a newer one (the row keeps
// the writer and the number of the announcement it holds). A row written
// for the first time, or over an expired one, is announced with pg_notify.
//
// A follower's check used to write nothing; with its member's refresh it
// commits a write, and a synchronous commit waits for a WAL flush (about
// 5 ms on the test machine's disk, more than the rest of the check). When
// the write does not carry the lock list, a third statement between the
// two (still before the one Sync) makes the commit asynchronous, but only
// if the lease statement wrote nothing (txid_current_if_assigned() IS
// NULL): a crash of the server may then lose that refresh, which the next
// call makes again. Acquisitions, renewals and writes of the lock list
// keep their synchronous commit (see "Asynchronous commits").
//
// Each member's write also deletes the other members' expired rows (those
// no other call has locked: it never waits), a scan of a table of one row
// per instance. Members is one SELECT of the unexpired rows (for a lock:
// those whose array holds it), so it works with only SELECT on the table
// and on a read-only connection. Leave stops the handle
// from writing the record, waits, within its context, for the writes of
// it already in flight (so that none lands after the delete), then deletes
// the row with pg_notify in one statement.
//
// # Asynchronous commits
//
// Two kinds of transaction commit with synchronous_commit = off (set for
// the transaction only, by set_config(..., true)), so that they return
// without waiting for the WAL flush, which on a disk is most of their time:
// a follower's check that wrote nothing but its member's refresh (see
// Members), and every Release. Everything else (acquisitions, renewals,
// transfers, hand-off requests, disables, enables, history, member records
// that carry the lock list, Leave) commits synchronously: when the call
// returns, the change survives a crash of the server. The server still writes and
// flushes an asynchronous commit within about three times
// wal_writer_delay (200ms by default); only a crash of the server, or a
// fail-over to a standby, in that window loses it.
//
// What a lost release costs: the row still holds the lease of an instance
// that stopped its job before releasing, and nobody can take the lock
// until that lease expires. The next master then comes a lease later, as
// after a crash of the master, never early: no promise depends on a
// release being durable. And an instance that took the lock after a
// release cannot keep a lease whose release was lost: its acquisition
// commits synchronously, and flushing its commit record flushes all the
// WAL written before it, the release's included.
//
// A Transfer is not a release: it gives the lock to a successor that,
// once it has read its lease, runs the job. Were its commit lost, the row
// would come back holding the previous holder's lease, which expires
// while the successor still runs, and a third instance could then take
// the lock: two masters. So it commits synchronously, even for the rows
// of its batch it only releases.
// TestOnlyReleaseSkipsTheWALFlush checks which calls wait for a flush;
// docs/benchmarks.md ("The store's side of the graceful hand-off") has
// what it saves.
//
// # Round trips
//
// Every call is one statement sent in one round trip, except Acquire and
// Renew for an announced member, which send two statements in one round
// trip (one Sync: one implicit transaction).
//
// The statements of a lease's life are prepared on a connection, all in
// one more round trip, the first time it runs one that a connection runs
// again and again (a check's acquisition, a renewal, the member's record,
// the member list), when the pool's default query mode is pgx's default
// (QueryExecModeCacheStatement, with its statement cache on) and the
// server is PostgreSQL 12 or later: the server then neither parses nor,
// mostly, plans them at each call, which on the test machine took an
// acquisition from 3.8 to 1.1 ms and a renewal from 1.7 to 0.8 ms
// (BenchmarkQueryModes; docs/benchmarks.md). A hand-off's statements (the
// leaver's transfer or release, the successor's read of its lease) are
// prepared with them and run once with no lock, in the same round trip,
// so that the server keeps a generic plan for each, which the hand-off
// then uses (plan_cache_mode = force_generic_plan for its transaction,
// for up to 64 locks): it skips their parse and their planning, the first
// transfer and read on a runner's connection taking 0.5 and 0.2 ms
// instead of 1.5 and 0.5 (BenchmarkHandOffStatements). Those runs change
// nothing; on a read-only session the writes' are left out, and one that
// fails costs nothing but the plan. A connection that has not prepared (a
// new one) runs them unprepared rather than add a round trip to the
// hand-off. The other statements (a disable, the history, the cluster
// view) are parsed and planned at each call. A call with an array
// parameter of over 64 elements (a batch of over 64 locks) makes the server plan it for its parameters (plan_cache_mode =
// force_custom_plan for its transaction): a plan made without them
// assumes a short array, and with one a renewal of 10,000 leases did not
// end within the 5 s call timeout. Behind a pooler in transaction mode
// that cannot keep prepared statements (PgBouncer before 1.21, or without
// max_prepared_statements), add default_query_exec_mode=exec to the URL
// (or set the pool's DefaultQueryExecMode to QueryExecModeExec): every
// statement is then parsed and planned at each call, with no prepared
// statement, as before. An error that the server does not know a prepared
// statement says so, and the connection then forgets that it prepared
// them, to prepare them again at its next call. pgxpool adds a ping before
// handing out a connection that sat idle for over a second, unless the
// pool's ShouldPing says otherwise. Every call is bounded by the earlier of the caller's deadline
// and the call timeout, so renewals cannot wait without bound behind the
// application's own queries on a shared pool. Failures to reach the server
// (network errors, timeouts, server shutdown, a read-only server after a
// fail-over) are returned wrapping store.ErrUnavailable; deadlocks and
// serialization failures between concurrent callers are retried within the
// call.
//
// # Notifications
//
// Store implements store.Notifier. Every change is notified, at commit, on
// the channel "<schema>.<prefix>locks" (or "<prefix>locks" without a
// schema; a hash when that is longer than 63 bytes), so stores in different
// schemas or with different prefixes do not wake each other. The payload is
// the kind of change, the byte 0x1F (which no lock name may hold) and the
// lock name: "lease\x1fJOB" for an acquisition, a transfer or a release, "control\x1fJOB"
// for a disable, an enable or a hand-off request, "history\x1fJOB" once per
// lock of an AppendEvents batch, "member\x1f" for a member's first record
// (or one written over an expired record) and for Leave. With lock names of
// at most 200 bytes a payload stays under 210 bytes, far below NOTIFY's
// 8000. A payload without the separator, as stores before version 4 sent
// it for releases, disables and enables, is delivered as a ChangeLease of
// that lock name; stores before version 4 read the new payloads as names
// of locks they do not know, so during a rolling upgrade they miss the
// pushes of newer instances and rely on their own checks.
//
// A lease change carries its hints (store.Change) in the kind field,
// separated by the byte 0x1E: "lease\x1eHOLDER\x1eTOKEN\x1e\x1fJOB" for
// an acquisition or a lock given by a transfer (HOLDER the successor),
// "lease\x1e\x1e0\x1eSUCCESSOR\x1fJOB" for a release
// reserved for a successor, and "lease\x1e\x1e0\x1e\x1fJOB" for a release
// to anyone (at most 8 + 200 + 20 + 200 + 200 bytes). Instances of the
// versions before the hints read such a kind as one they do not know, which
// they deliver as a change of the lock: they still wake. An instance id
// holding 0x1E or 0x1F (which the executor refuses) is left out with its
// hint rather than cut short.
//
// A subscriber's queue holds each (kind, lock) once: a change notified
// while another of its kind and lock waits is merged into it, keeping the
// hints only when both say the same. A change notified while 10,000 wait
// drops them all for one store.ChangeResync. Subscribe opens a dedicated
// connection with the pool's connection configuration, outside the pool,
// and LISTENs on it. When the connection fails (or does not answer a ping
// after 30 seconds of silence) it reconnects with capped, jittered
// backoff. A connection quiet for 20 seconds is pinged as the next
// renewal, check or read of the member list begins, beside it, so that an
// idle process wakes once for both. Notifications sent while it is disconnected are lost: once it
// listens again, it delivers a store.ChangeResync, and subscribers read
// everything again. The connection, its goroutines and the channel end
// when the subscription's context is done or the Store is closed.
//
// # Privileges
//
// At run time the application's role needs USAGE on the schema, SELECT,
// INSERT and UPDATE on the locks table, USAGE on the token sequence,
// SELECT, INSERT and DELETE on the history table, SELECT on the meta
// table and SELECT, INSERT, UPDATE and DELETE on the members table (LISTEN
// and NOTIFY need no grant). To let the store create its objects on
// first start it also needs CREATE on the schema, and CREATE on the database
// if the schema does not exist yet; otherwise apply schema.sql as a DBA and
// open with WithoutMigrate.
package postgres
