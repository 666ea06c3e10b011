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
// name holding both the lease (holder, token, acquired/renewed/expires times,
// revoked) and the control (disabled, reason, changed_by, changed_at), and
// one sequence, <prefix>token_seq, that issues fencing tokens. The sequence
// is never reset, so tokens grow across deleted rows and server restarts.
// A second table, <prefix>history, holds the audit history (store.History).
//
// The DDL ships embedded as schema.sql, a template documented for DBAs,
// written as numbered migrations ("-- masterjob:version N" sections). The
// version a database has reached is recorded in a fourth object, the table
// <prefix>meta (a database made before that table existed is recognised by
// its objects: version 1 or 2). Open and New migrate forward unless
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
//     free/expired and not disabled in the statement's snapshot, with ON
//     CONFLICT (lock_name) DO UPDATE. Under READ COMMITTED, DO UPDATE locks
//     the latest committed version of the row and its SET expressions see
//     that version: there a CASE takes the row only if it is still
//     free/expired and not disabled, which makes the check of the control
//     atomic with the take (Disable upserts the same row). A candidate
//     that a concurrent caller won meanwhile is rewritten unchanged, so
//     that RETURNING reports the winner; only candidates are written, so a
//     follower's periodic check of locks held by others writes nothing.
//     The new token is drawn from the sequence after the row is locked, so
//     it exceeds every token the row ever had. UNION ALL adds the state of
//     the other names from the snapshot (unknown names as free and
//     enabled). A lease the holder already holds is returned unchanged.
//   - Renew is one UPDATE ... FROM unnest($locks, $tokens) fenced by holder,
//     token and expires_at > now(). A revoked lease still renews (its holder
//     keeps it while the job stops) and reports Revoked.
//   - Release is one UPDATE fenced by holder and token that clears the lease
//     but keeps the row (its control and its last token) and calls pg_notify
//     for each released lock in the same statement.
//   - Disable upserts the row: disabled, reason, changed_by, changed_at, and
//     revoked when a lease is held. Enable clears disabled and reason. Both
//     call pg_notify in the same statement; neither changes a lock that is
//     already in the requested state (Changed is false).
//   - AppendEvents is one INSERT ... SELECT over unnest of one array per
//     column, in a CTE, followed in the same statement by a DELETE of the
//     rows whose id is at or below the highest new id minus the retention:
//     one range delete on the primary key per batch. Entries are stamped
//     with now(). Events reads newest first by id, using the index on
//     (lock_name, id) when it filters by lock.
//
// Every call is one statement sent in one round trip (pgx's
// QueryExecModeExec, which needs no prepared statement and therefore also
// works behind PgBouncer in transaction mode). pgxpool adds a ping before
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
// Store implements store.Notifier. Release, Disable and Enable notify the
// channel "<schema>.<prefix>locks" (or "<prefix>locks" without a schema; a
// hash when that is longer than 63 bytes) with the lock name as payload, so
// stores in different schemas or with different prefixes do not wake each
// other. Subscribe opens a dedicated connection with the pool's connection
// configuration, outside the pool, and LISTENs on it. When the connection
// fails (or does not answer a ping after 30 seconds of silence) it
// reconnects with capped, jittered backoff. Notifications sent while it is
// disconnected are lost: subscribers must still check on their own schedule.
// The connection, its goroutines and the channel end when the subscription's
// context is done or the Store is closed.
//
// # Privileges
//
// At run time the application's role needs USAGE on the schema, SELECT,
// INSERT and UPDATE on the locks table, USAGE on the token sequence,
// SELECT, INSERT and DELETE on the history table and SELECT on the meta
// table (LISTEN and NOTIFY need no grant). To let the store create its objects on
// first start it also needs CREATE on the schema, and CREATE on the database
// if the schema does not exist yet; otherwise apply schema.sql as a DBA and
// open with WithoutMigrate.
package postgres
