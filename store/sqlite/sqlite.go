// Package sqlite is the embedded store.Store: leases and controls live in
// one SQLite database file, shared by the processes of one host. It is pure
// Go (modernc.org/sqlite, driver name "sqlite"); no cgo.
//
// # One host only
//
// SQLite's locking relies on the host's file locks, and its clock is the
// host's clock. Every process that opens the file must run on the same host:
// a database on a network filesystem (NFS, SMB, most cloud volumes shared
// between machines) can lose locks and corrupt itself, and processes on
// different hosts would not share a clock. For several hosts use a server
// backend (store/postgres).
//
// # Store time
//
// Lease arithmetic (expiry, TTLs, the expiry checks of Acquire, Renew,
// Disable and Locks, and the TTLs of hand-off reservations and member
// records) is on the host's CLOCK_BOOTTIME, read once per
// transaction after it has taken its lock: every process on the host reads
// the same clock, it never steps (an NTP step, date -s or a VM's clock
// catching up moves the wall clock only), and it counts the time the host
// spent suspended. It restarts at each boot, so each lease's expiry is
// stored with the boot id (/proc/sys/kernel/random/boot_id), and a lease
// stamped in another boot has expired. Tokens do not depend on any clock:
// the counter keeps growing across boots. Times are integer milliseconds;
// TTLs are rounded up to whole milliseconds. The caller's clock is never
// consulted.
//
// The wall clock is only shown: AcquiredAt, RenewedAt, ChangedAt and the
// history's At are wall-clock times of the change, and ExpiresAt is the wall
// clock at the call plus TTL. A wall-clock step moves what they show and
// nothing else.
//
// The wall clock decides expiry, with its caveat (a step forward expires
// leases early, a step backward delays failover by the step), in two cases:
// a lease taken by a version of masterjob older than schema version 4,
// which stored only a wall-clock expiry (a lease held when this version
// first opens the file, and leases older processes take during a rolling
// upgrade); and hosts where CLOCK_BOOTTIME or the boot id cannot be read:
// every system other than Linux, and a Linux without /proc. Processes in
// different time namespaces (unshare --time, checkpoint/restore) read
// different CLOCK_BOOTTIMEs and must not share a file.
//
// # Concurrency
//
// The database runs in WAL mode, so readers (Locks) never block writers.
// Every write transaction takes the write lock up front (BEGIN IMMEDIATE): a
// transaction that started as a reader and then wrote would fail with
// SQLITE_BUSY when another connection wrote in between, and the busy timeout
// does not help in that case. Contention between processes is waited out by
// the busy timeout (WithBusyTimeout, default 5s) and by the caller's context;
// within one process, writes queue on a semaphore that honours the context.
// Only a wait longer than the busy timeout fails, with an error wrapping
// store.ErrUnavailable. Commits are synchronous (PRAGMA synchronous=FULL) so
// that an issued fencing token survives power loss.
//
// A file lock has no lease: a process frozen while it holds the write lock
// (SIGSTOP, a debugger, a paused VM) blocks every other process's Acquire
// and Renew until it resumes or dies. Safety holds (no instance becomes
// master while it cannot write), but election on the whole host stalls for
// the pause, which the chaos harness observed in about 1-2% of its
// SIGSTOPs (docs/chaos.md). On Linux, a write that waited for it in vain
// names the process that holds the lock and its state ("process 4242
// (masterjob), stopped: no instance can write until it resumes or exits"),
// read from /proc/locks. PostgreSQL does not have this limitation.
//
// # Schema
//
// Eight tables, named with a prefix (WithTablePrefix, default
// "masterjob_"): <prefix>locks holds one row per lock (lease and control
// together, so that acquisition checks the control in the same
// transaction), <prefix>lease_clock each lease's expiry on CLOCK_BOOTTIME
// with the boot id, <prefix>meta holds the token counter, which is never
// deleted, so tokens keep growing even when an operator deletes lock rows,
// <prefix>history holds the audit history (store.History), <prefix>notify
// the change notifications (store.Notifier), <prefix>handoff the hand-off
// requests and reservations (store.Handoffs), and <prefix>members and
// <prefix>member_locks the member records (store.Membership). Open creates
// them if missing (schema.sql, embedded; every statement is idempotent, so
// opening a database made by an older version adds what is new; a
// database already at the current version is only read, so opening it
// takes no write lock). Version 5 also adds a kind column to the notify
// table of an older database, with an ALTER TABLE that Open runs in the
// migration's transaction (it cannot be written idempotently, so
// schema.sql names it in a comment). With WithoutMigrate a DBA applies
// Schema's output beforehand (and, to a database of version 4 or older,
// that ALTER TABLE) and Open only checks that the schema is there, naming
// the version it found when it is older.
//
// Processes of an older version can share a migrated file during a
// rolling upgrade: they ignore hand-off requests and reservations (they
// acquire a reserved lock as a free one), write no member record, and
// receive every notification as a change to wake up for; the
// notifications they write are read as lease changes.
//
// # Files
//
// Open creates the database file, if it does not exist, readable and
// writable by its owner only (mode 0600; the umask can only narrow it), and
// SQLite gives the -wal and -shm files beside it the database file's mode.
// A file that exists keeps its mode: to share the database with a group,
// create the file first with the mode wanted (an empty file is a new
// database). Open creates no directory: a missing one is an error at once,
// naming it, and not store.ErrUnavailable, which callers retry.
//
// ReadOnly opens a database without writing anything to it: no file, no
// table, no migration (a database of an older version is read as it is),
// and the calls that write fail with ErrReadOnly. The CLI's status and
// history commands open SQLite this way (URL parameter mode=ro), so they
// read a file their user may not write.
//
// # Notifications
//
// Store implements store.Notifier, so that followers wake as soon as a
// master releases its lease gracefully instead of waiting for the lease to
// run out, and learn of a new master at once. Every change
// store.ChangeKind lists appends a row (kind, lock name) to <prefix>notify
// in the transaction that makes it, pruning all but the newest 1000 rows:
// Acquire (a lease change per lock it acquired), Release (per lease it
// released) and Transfer (per lease it gave or released), Disable and
// Enable (a control change when they change the mark) and Handoff (a
// control change), AppendEvents (a history change per lock of the batch),
// and the first write of a member record, or its first after it expired,
// and Leave (a member change, with no lock). A
// batch of more than 1000 is written whole, pruning all rows before it. A
// subscriber that finds rows it had not read pruned (it read too late)
// sends store.ChangeResync before the rows it still finds. The kind column of a lease change
// holds its hints (store.Change) after the byte 0x1E: the holder and token
// of an acquisition, the successor of a release reserved for one. A reader
// of an earlier version takes such a kind for one it does not know, which
// it reads as a lease change of the lock: it still wakes.
//
// Subscribe opens a separate connection to the file (its own small pool,
// so it takes nothing from the store's) and, on Linux, watches the
// database file with inotify. A writer rings that file once a transaction
// that appended notifications has committed: it sets the file's times to
// now (utimensat; the write permission every writer has is enough), which
// is an IN_ATTRIB event for every watcher, sent when other connections
// can already see the commit. Woken, a subscription reads PRAGMA
// data_version on its connection, which changes only when another
// connection has committed, and then the new rows. Commits that append no
// notification (renewals, a follower's check that took nothing) ring
// nothing, so they wake no subscriber. The watch is on the database file
// rather than on the -wal file: the database file exists for the store's
// whole life in any journal mode (the -wal file is deleted when the last
// connection closes and created again by the next one, and a database in
// rollback-journal mode has none); a write to the -wal file comes before
// the commit's fsync, so a subscriber woken by it would not yet see the
// commit (a read of data_version just after the first write event missed
// the commit in 398 of 400 commits measured, which became visible a
// median of 1.1 ms later, at most 5.9 ms); and every renewal writes the
// -wal file, which would wake every subscriber of the host at every
// heartbeat of every master.
//
// A subscription that watches the file also polls every 5 seconds (or
// every WithNotifyPoll if longer): it stats the database and -wal files
// and reads PRAGMA data_version when either changed (and at least every
// 20 polls). That delivers commits that rang nothing, within 5 seconds:
// those of a version without the ring (during a rolling upgrade), of a
// writer that died between its commit and its ring, or whose ring failed.
// Where the file cannot be watched, a subscription polls that way every
// WithNotifyPoll (default 50ms) instead: on systems other than Linux, and
// when inotify refuses (fs.inotify.max_user_instances, 128 per user by
// default, counts one instance per subscription). A file system that
// accepts a watch but reports no change made elsewhere (a network file
// system, which must not hold a SQLite store anyway) is served by the
// 5-second poll.
//
// An idle subscription therefore costs one wake-up every 5 seconds, and
// one per notifying commit elsewhere (a few stats and PRAGMAs on the local
// file, no network, no write), plus a few MiB for its connection: an idle
// runner used 9 to 24 ms of CPU per minute with it, against 275 to 377 ms
// with the 50ms poll it replaced, and a follower heard of a release a
// median of 0.2 to 0.7 ms after the releasing call returned, against 19 to
// 31 ms (docs/benchmarks.md, "The store's side of the graceful hand-off").
// Delivery is best effort: a subscriber that falls more than 1000
// notifications behind misses some.
//
// # Hand-offs
//
// Store implements store.Handoffs. Handoff records the request in
// <prefix>handoff with the token of the lease it is about, in one
// IMMEDIATE transaction that checks the lock is held and enabled, and
// notifies it; the holder's next Renew reports it, and every read shows
// it while that lease is the lock's current, unexpired one. A new lease
// (the row is deleted by the Acquire that takes it), a Disable (which
// clears it) and the lease's expiry end it. A Release naming a Successor
// with a positive Reserve writes a reservation for the released lease:
// until it lapses, or a lease is taken, Acquire refuses the lock to every
// holder but the successor, and reads show ReservedFor and ReservedTTL. The
// reservation is measured on the lease clock (CLOCK_BOOTTIME with the boot
// id; a reservation of another boot has lapsed), as leases are. Locks
// without a hand-off row, nearly all of them, cost their reads one index
// probe.
//
// Store also implements store.Transfers. Transfer is a Release that gives
// each lock with a Successor to it in the same IMMEDIATE transaction: it
// reads the named rows under the write lock, and for each lease the caller
// holds with its token, unexpired, not revoked, of an enabled lock, to a
// successor with an unexpired member record (so never to one whose Leave
// committed: Leave writes the same file), writes
// the successor's lease with the statements Acquire takes a lease with (a
// token one more than the larger of the meta table's counter and the
// lock's last token, the counter written back; the expiry on the lease
// clock from the transaction's now; the handoff row deleted), with
// HolderInfo that record's Info. The other refs are released as by
// Release (a revoked lease, a disabled lock or a departed successor too,
// reserved for the successor if Reserve is positive);
// a ref that does not match, or whose lease expired, is ignored. Holding
// the file's write lock from the checks to the commit makes the end of the
// old lease and the start of the new one one atomic step, which no
// Acquire, Renew or Disable interleaves with, and the commit is
// synchronous (an fsync), as for every write, so the token survives power
// loss with its lease. The transaction appends a notification for each
// lock, as Acquire does for a transfer (a lease change with the successor
// and the new token as hints) and as Release does for a release, and rings
// the file once committed.
//
// # Members
//
// Store implements store.Membership. Announce records the member in the
// handle (no call; a handle holds one record per member id); every
// following Acquire and Renew for that id on the handle writes it in its
// own transaction, even with an empty list of locks: a row of
// <prefix>members with its TTL on the lease clock. Expired records are
// never returned, and the next member write prunes them. Leave deletes the
// record and stops the handle writing it.
//
// The lock list is not in the member's row: <prefix>member_locks holds one
// row per (lock set, lock), keyed by the member's LockSetID and lock
// count, and shared by every member announcing that set. It is written
// when a member announces a set no live member has (the first instance of
// a deployment, or one whose locks changed) and deleted with the last
// member that has it; a member whose LockSetID is unchanged writes one
// row per call, whatever the size of its set (TestMemberLockSetWrittenOnce
// counts the rows written: none for renewals with an unchanged set of
// 10,000 locks, none for a second instance with the same set). This and
// not a JSON column in the member's row, for 10,000 locks per member:
// instance ids change at every process start, so with a list per member
// each restart or new instance would write its 10,000 names (200 KB at 20
// bytes a name) while holding the file's only write lock; Members with a lock filter
// (the candidates of one lock) is an index lookup on member_locks, where a
// JSON column would parse every member's whole list; and WithLocks reads
// each distinct set once. The price is the trust in LockSetID that
// store.Member allows: members announcing one id (with one lock count)
// share the list of the first of them.
//
// # History
//
// Store implements store.History. AppendEvents inserts a batch in one
// IMMEDIATE transaction that also prunes the oldest entries beyond the
// retention (WithHistoryLimit, default store.DefaultHistoryLimit): one
// range delete on the primary key per batch. Entries are stamped with the
// wall clock.
//
// # Cost of the scheduled calls
//
// An instance makes two calls on its schedule: a Renew of every lease it
// holds per heartbeat, and an Acquire of every lock it follows per check.
// Each is one IMMEDIATE transaction; its statements are prepared once per
// connection, a Renew writes its leases with two statements whatever
// their number, and a transaction that writes commits synchronously (an
// fsync). A member record adds one row to that transaction, and to a
// follower's check, which otherwise writes nothing, the commit. Time per
// call (BenchmarkCalls; the fastest of 5 rounds of 1s, on a 2-core VM
// shared with other work at load average 5 to 12, so these are upper
// bounds):
//
//	locks    Renew    Renew+member   Acquire (follower)   Acquire+member
//	1        0.39 ms  0.75 ms        0.07 ms              0.79 ms
//	100      2.3 ms   3.5 ms         1.1 ms               2.3 ms
//	10,000   261 ms   211 ms         145 ms               133 ms
//
// At 10,000 locks the per-lock reads and writes dominate and the member
// row is lost in the noise of the machine. A change of a member's lock set
// writes the new set and deletes the old one in the call that follows
// (BenchmarkLockSetChange: 3.3 ms at 100 locks, 80 to 170 ms at 10,000 in
// two runs); a renewal with an unchanged set writes no lock list.
//
//	go test -run '^$' -bench 'BenchmarkCalls|BenchmarkLockSetChange' ./store/sqlite/
package sqlite

import (
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"

	"github.com/masterjob/masterjob/internal/sqlitelock"
	"github.com/masterjob/masterjob/store"
)

// Defaults.
const (
	// DefaultTablePrefix prefixes the names of the tables.
	DefaultTablePrefix = "masterjob_"
	// DefaultBusyTimeout is how long a call waits for another process's
	// write transaction before failing with store.ErrUnavailable.
	DefaultBusyTimeout = 5 * time.Second
	// DefaultNotifyPoll is how often a subscription that cannot watch the
	// file polls it for changes committed by other connections.
	DefaultNotifyPoll = 50 * time.Millisecond
)

// maxOpenConns bounds the connection pool of one Store. Writes are
// serialised anyway (one writer per database); the other connections let
// reads proceed beside a write.
const maxOpenConns = 4

// schemaSQL is the schema, with {{prefix}} standing for the table prefix.
//
//go:embed schema.sql
var schemaSQL string

// prefixPattern is what WithTablePrefix accepts.
var prefixPattern = regexp.MustCompile(`^[a-z0-9_]{0,40}$`)

// Store is a store.Store backed by a SQLite database file, and a
// store.Notifier, store.History, store.Handoffs, store.Transfers and
// store.Membership. It is safe for concurrent use; several Stores, in one
// process or several, may open the same file.
type Store struct {
	db           *sql.DB
	dsn          string
	path         string // absolute path of the database file
	q            queries
	features     features // of the database's schema
	historyLimit int
	notifyPoll   time.Duration
	safetyPoll   time.Duration // poll of a watched file (Subscribe)
	noWatch      bool          // never watch the file: poll (tests)
	clock        clock
	readOnly     bool
	write        chan struct{} // held by the one in-process write transaction
	rung         bool          // the write transaction wrote notifications: ring once committed; guarded by write
	closed       atomic.Bool
	notifyWakes  atomic.Int64 // wake-ups of this Store's subscriptions (tests)

	mu      sync.Mutex         // orders Subscribe against Close
	closing context.Context    // done once Close has begun
	stop    context.CancelFunc // cancels closing
	subs    sync.WaitGroup     // running subscriptions

	// announced holds, per member id, the record this handle's Acquire
	// and Renew calls write (Membership).
	annMu    sync.Mutex
	announce map[string]*announcement

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // see prep
}

var (
	_ store.Store      = (*Store)(nil)
	_ store.History    = (*Store)(nil)
	_ store.Notifier   = (*Store)(nil)
	_ store.Handoffs   = (*Store)(nil)
	_ store.Membership = (*Store)(nil)
	_ store.Transfers  = (*Store)(nil)
)

// Option configures Open.
type Option func(*options)

type options struct {
	prefix       string
	migrate      bool
	readOnly     bool
	busy         time.Duration
	historyLimit int
	notifyPoll   time.Duration
	safetyPoll   time.Duration
	noWatch      bool
	clock        clock
	err          error
}

// WithTablePrefix sets the prefix of the table names (default
// "masterjob_"). It must match [a-z0-9_]{0,40}; Open fails otherwise.
// Several prefixes can share one database file as independent namespaces.
func WithTablePrefix(p string) Option {
	return func(o *options) {
		if !prefixPattern.MatchString(p) {
			o.err = fmt.Errorf("sqlite: table prefix %q: must match [a-z0-9_]{0,40}", p)
			return
		}
		o.prefix = p
	}
}

// WithoutMigrate makes Open use the file and its tables as they are
// instead of creating missing ones; Open creates nothing and fails if they
// are absent. For databases whose schema a DBA applies (see Schema), and
// for a process that only acts on leases another one took (a last will).
func WithoutMigrate() Option {
	return func(o *options) { o.migrate = false }
}

// ReadOnly opens the database for reading only: Open creates nothing and
// changes nothing (no file, no table, no migration), the file must exist,
// and the calls that write (Acquire, Renew, Release, Disable, Enable,
// Handoff, Leave, AppendEvents) fail with an error wrapping ErrReadOnly.
// Locks, Members, Events and Subscribe work; of a database older than
// version 5 Members returns no member and notifications are all lease
// changes. Read-only commands (status, history) use it, so that they
// can read a file their user may not write. Reading a database in WAL mode
// needs its -wal and -shm files to exist (they do while a process has the
// database open) or write permission on the directory (SQLite creates
// them); a database from an older version is read as it is.
func ReadOnly() Option {
	return func(o *options) { o.readOnly = true }
}

// ErrReadOnly is returned (wrapped) by the calls that write, on a Store
// opened with ReadOnly.
var ErrReadOnly = errors.New("sqlite: store opened read-only")

// WithBusyTimeout sets how long a call waits for a write lock held by
// another process before failing with store.ErrUnavailable (default 5s). It
// must be at least a millisecond. The caller's context can end the wait
// sooner.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) {
		if d < time.Millisecond {
			o.err = fmt.Errorf("sqlite: busy timeout %v: must be at least 1ms", d)
			return
		}
		o.busy = d
	}
}

// WithHistoryLimit sets how many history entries the store keeps (default
// store.DefaultHistoryLimit); each append prunes the oldest beyond it. n
// must be at least 1. Stores sharing a file should use the same limit: the
// one that appends last decides.
func WithHistoryLimit(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.err = fmt.Errorf("sqlite: history limit %d: must be at least 1", n)
			return
		}
		o.historyLimit = n
	}
}

// WithNotifyPoll sets how often a subscription (Subscribe) polls the
// database for changes committed by other connections where it cannot
// watch the file (default 50ms; see Notifications in the package doc). A
// subscription that watches the file polls every 5 seconds, or every d if
// that is longer. d must be positive. A poll stats the database and -wal
// files, and reads a PRAGMA on the subscription's own connection when they
// changed.
func WithNotifyPoll(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.err = fmt.Errorf("sqlite: notify poll %v: must be positive", d)
			return
		}
		o.notifyPoll = d
	}
}

// Schema returns the SQL that creates the tables for prefix, for a DBA to
// apply before opening with WithoutMigrate. Every statement is idempotent.
func Schema(prefix string) (string, error) {
	if !prefixPattern.MatchString(prefix) {
		return "", fmt.Errorf("sqlite: table prefix %q: must match [a-z0-9_]{0,40}", prefix)
	}
	return strings.ReplaceAll(schemaSQL, "{{prefix}}", prefix), nil
}

// Open opens (creating if needed) the database file at path and, unless
// WithoutMigrate or ReadOnly is given, creates or upgrades the tables if
// they are missing or older. path is a file system path; ":memory:" is
// refused, as every pooled connection would get its own database (use
// store/memstore instead).
//
// A database file Open creates is readable and writable by its owner only
// (mode 0600; the umask can only narrow it), and SQLite gives its -wal and
// -shm files the same mode. A file that exists keeps its mode: to share
// the database with a group, create the file beforehand with the mode
// wanted (an empty file is a new database). A directory that does not
// exist is an error at once (not store.ErrUnavailable, which callers
// retry), naming it; Open creates no directory.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{prefix: DefaultTablePrefix, migrate: true, busy: DefaultBusyTimeout, historyLimit: store.DefaultHistoryLimit, notifyPoll: DefaultNotifyPoll,
		safetyPoll: notifySafetyPoll, clock: hostClock()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: path %q: need a database file (use store/memstore for an in-memory store)", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: path %q: %w", path, err)
	}
	if err := prepareFile(abs, o.readOnly, o.readOnly || !o.migrate); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	dsn := dsn(abs, o.busy, o.readOnly)
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns)

	s := &Store{db: db, dsn: dsn, path: abs, q: newQueries(o.prefix, current), features: current, historyLimit: o.historyLimit, notifyPoll: o.notifyPoll,
		safetyPoll: o.safetyPoll, noWatch: o.noWatch, clock: o.clock, readOnly: o.readOnly, write: make(chan struct{}, 1)}
	s.closing, s.stop = context.WithCancel(context.Background())
	ctx := context.Background()
	switch {
	case o.readOnly:
		err = s.checkReadable(ctx, o.prefix)
	case o.migrate:
		err = s.migrate(ctx, o.prefix)
	default:
		err = s.checkSchema(ctx)
	}
	if err != nil {
		s.stop()
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	return s, nil
}

// prepareFile makes sure the database file can be opened: when Open may
// create the tables, it creates the file (mode 0600) if it does not exist,
// so that SQLite does not create it with its default 0644; read-only or
// without migrating (existing), it checks that the file exists, so that an
// Open that then fails leaves no empty file behind. A missing directory or
// file is reported here, plainly, and not as SQLite's "unable to open"
// (which Store reports as unavailable).
func prepareFile(path string, readOnly, existing bool) error {
	var err error
	if existing {
		_, err = os.Stat(path)
	} else {
		var f *os.File
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f.Close()
		}
		if errors.Is(err, fs.ErrExist) {
			// The user's file, or another process's: its mode stays.
			if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
				return errors.New("is a directory, not a database file")
			}
			return nil
		}
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(path)
		if _, derr := os.Stat(dir); errors.Is(derr, fs.ErrNotExist) {
			if readOnly || existing {
				return fmt.Errorf("%w: directory %s does not exist", store.ErrNotInitialized, dir)
			}
			return fmt.Errorf("directory %s does not exist (create it first)", dir)
		}
		if readOnly {
			return fmt.Errorf("%w: no database file there (opened read-only: nothing is created)", store.ErrNotInitialized)
		}
		if existing {
			return fmt.Errorf("%w: no database file there (opened without migrating: nothing is created)", store.ErrNotInitialized)
		}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is in the caller's message already
	}
	if existing {
		return fmt.Errorf("cannot read the database file: %w", err)
	}
	return fmt.Errorf("cannot create the database file: %w", err)
}

// dsn builds the driver's data source name: a file: URI (so any path
// character is safe) with the connection settings every connection needs.
// A read-only connection (SQLite's mode=ro) sets nothing that writes.
func dsn(absPath string, busy time.Duration, readOnly bool) string {
	p := filepath.ToSlash(absPath)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: file:/C:/dir/x.db
	}
	p = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(busy.Milliseconds(), 10))
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "FULL")
		q.Set("_txlock", "immediate")
	}
	return "file:" + p + "?" + q.Encode()
}

// schemaVersion is the schema_version schema.sql ends with.
const schemaVersion = 5

// migrate brings the schema to schemaVersion, in one write transaction: it
// applies schema.sql (idempotent) and adds the notify table's kind column
// to a database made before version 5 (ALTER TABLE cannot be made
// idempotent, so it is not in schema.sql). A database already at the
// current version is only read: opening it takes no write lock.
func (s *Store) migrate(ctx context.Context, prefix string) error {
	ddl, err := Schema(prefix)
	if err != nil {
		return err
	}
	if v, err := s.version(ctx); err == nil && v >= schemaVersion && s.checkSchema(ctx) == nil {
		return nil
	}
	return s.writeTx(ctx, "migrate", func(tx *sql.Tx, _ stamp) error {
		if _, err := tx.ExecContext(ctx, ddl); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.q.hasKind).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, s.q.addKind); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q.setVersion5)
		return err
	})
}

// version returns the database's schema_version.
func (s *Store) version(ctx context.Context) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, s.q.version).Scan(&v)
	return v, err
}

// checkReadable checks, for a read-only Store, that the database has the
// tables a read needs, and reads an older one as it is. A database from
// before version 4 has no lease_clock table: its leases are all on the
// wall clock, and s reads them as such. One from before version 5 has no
// hand-off or member tables (s reads no hand-off and no member) and no
// notification kinds (s reads them all as leases).
func (s *Store) checkReadable(ctx context.Context, prefix string) error {
	f := current
	for _, c := range []struct {
		query string
		want  int
		has   *bool
	}{{s.q.hasClock, 1, &f.clock}, {s.q.hasKind, 1, &f.kind}, {s.q.hasCluster, 3, &f.cluster}} {
		var n int
		if err := s.db.QueryRowContext(ctx, c.query).Scan(&n); err != nil {
			return s.wrap(ctx, "open", err)
		}
		*c.has = n == c.want
	}
	if f != current {
		s.q, s.features = newQueries(prefix, f), f
	}
	var v int64
	if err := s.db.QueryRowContext(ctx, s.q.checkLocks).Scan(&v); err != nil {
		return fmt.Errorf("%w: schema not found (no masterjob tables with prefix %q in the file): %w",
			store.ErrNotInitialized, prefix, s.wrap(ctx, "open", err))
	}
	return nil
}

func (s *Store) checkSchema(ctx context.Context) error {
	var n int64
	err := s.db.QueryRowContext(ctx, s.q.checkSchema).Scan(&n)
	if err == nil {
		return nil
	}
	if v, verr := s.version(ctx); verr == nil && v < schemaVersion {
		return fmt.Errorf("schema version %d, this version needs %d (open once without WithoutMigrate, which migrates it; "+
			"or apply Schema's SQL and the ALTER TABLE its version 5 section names): %w", v, schemaVersion, err)
	}
	err = fmt.Errorf("schema not found (apply Schema's SQL or open without WithoutMigrate): %w", err)
	var v int64
	if s.db.QueryRowContext(ctx, s.q.checkLocks).Scan(&v) != nil { // not even the locks table
		err = fmt.Errorf("%w: %w", store.ErrNotInitialized, err)
	}
	return err
}

// queries holds the SQL for one table prefix.
type queries struct {
	checkSchema, checkLocks string
	version, hasClock       string
	hasKind, hasCluster     string
	addKind, setVersion5    string
	selectAll, selectNamed  string
	getCounter, setCounter  string
	acquire, renew, release string
	setClock, renewClock    string
	ensureRow, setControl   string

	deleteHandoff, clearRequest, setRequest, setReserve string

	appendEvent, pruneHistory string
	eventsAll, eventsLock     string

	notify, notifyMany, pruneNotify, notifyMax, notifySince string

	getMember, upsertMember, memberExpiries, deleteMember string
	memberInfo                                            string
	hasSet, insertSet, dropSet                            string
	membersAll, membersLock, setLocks                     string
}

// features says which parts of the schema a Store uses: all of them, but
// for a read-only Store of a database an older version made, which it
// reads as it is.
type features struct {
	clock   bool // the lease_clock table (version 4)
	kind    bool // the kind column of the notify table (version 5)
	cluster bool // the handoff, members and member_locks tables (version 5)
}

// current is the schema of schemaVersion.
var current = features{clock: true, kind: true, cluster: true}

const columns = `lock_name, holder, holder_info, token, acquired_at, renewed_at, expires_at,
	revoked, disabled, reason, changed_by, changed_at`

// clockColumns are the lease_clock columns a row is read with, as they
// come from a LEFT JOIN: zeros and an empty clock when there is no
// lease_clock row.
const clockColumns = `COALESCE(lease_token, 0), COALESCE(clock, ''), COALESCE(expires, 0)`

// handoffColumn is the handoff row a lock is read with, from a LEFT JOIN,
// in one column: ” when there is none (most locks), else a JSON array of
// its columns (see row.scan). One column, not seven: every column costs
// each of thousands of rows a call through the driver, and a lock seldom
// has a handoff row.
const handoffColumn = `CASE WHEN request_token IS NULL THEN '' ELSE json_array(request_token, request_to,
	reserved_for, reserved_token, reserved_clock, reserved_expires, reserved_wall) END`

const memberColumns = `member_id, info, lock_set_id, set_key, lock_count, masters, weight, seen_at, clock, expires, wall_expires`

const historyColumns = `id, lock_name, kind, instance, token, reason, remote, at`

// notifyKeep is how many rows of the notify table each insert keeps.
const notifyKeep = 1000

// newQueries returns the SQL for prefix and the features of its schema.
func newQueries(prefix string, f features) queries {
	locks := `"` + prefix + `locks"`
	meta := `"` + prefix + `meta"`
	history := `"` + prefix + `history"`
	notify := `"` + prefix + `notify"`
	leaseClock := `"` + prefix + `lease_clock"`
	handoff := `"` + prefix + `handoff"`
	members := `"` + prefix + `members"`
	memberLocks := `"` + prefix + `member_locks"`
	// Rows are read with their lease's CLOCK_BOOTTIME expiry and their
	// hand-off. USING makes lock_name unambiguous; the other names are
	// distinct across the three tables.
	fromLocks := locks
	clockCols, handoffCol := clockColumns, handoffColumn
	if f.clock {
		fromLocks += ` LEFT JOIN ` + leaseClock + ` USING (lock_name)`
	} else {
		clockCols = `0, '', 0`
	}
	if f.cluster {
		fromLocks += ` LEFT JOIN ` + handoff + ` USING (lock_name)`
	} else {
		handoffCol = `''`
	}
	kindCol := `kind`
	if !f.kind {
		kindCol = `'lease'`
	}
	return queries{
		checkLocks: `SELECT value FROM ` + meta + ` WHERE name = 'token'
			AND NOT EXISTS (SELECT ` + columns + ` FROM ` + locks + ` WHERE 0)`,
		version:     `SELECT value FROM ` + meta + ` WHERE name = 'schema_version'`,
		hasClock:    `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '` + prefix + `lease_clock'`,
		hasCluster:  `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('` + prefix + `handoff', '` + prefix + `members', '` + prefix + `member_locks')`,
		hasKind:     `SELECT count(*) FROM pragma_table_info('` + prefix + `notify') WHERE name = 'kind'`,
		addKind:     `ALTER TABLE ` + notify + ` ADD COLUMN kind TEXT NOT NULL DEFAULT 'lease'`,
		setVersion5: `UPDATE ` + meta + ` SET value = 5 WHERE name = 'schema_version' AND value < 5`,
		// Preparing this checks that every table and column exists; it
		// returns no row if the token counter is missing.
		checkSchema: `SELECT value FROM ` + meta + ` WHERE name = 'token'
			AND NOT EXISTS (SELECT ` + columns + ` FROM ` + locks + ` WHERE 0)
			AND NOT EXISTS (SELECT ` + historyColumns + ` FROM ` + history + ` WHERE 0)
			AND NOT EXISTS (SELECT id, lock_name, kind FROM ` + notify + ` WHERE 0)
			AND NOT EXISTS (SELECT lock_name, lease_token, clock, expires FROM ` + leaseClock + ` WHERE 0)
			AND NOT EXISTS (SELECT lock_name, ` + handoffColumn + `, request_by FROM ` + handoff + ` WHERE 0)
			AND NOT EXISTS (SELECT ` + memberColumns + ` FROM ` + members + ` WHERE 0)
			AND NOT EXISTS (SELECT set_key, lock_name FROM ` + memberLocks + ` WHERE 0)`,
		selectAll:   `SELECT ` + columns + `, ` + clockCols + `, ` + handoffCol + ` FROM ` + fromLocks + ` ORDER BY lock_name`,
		selectNamed: `SELECT ` + columns + `, ` + clockCols + `, ` + handoffCol + ` FROM ` + fromLocks + ` WHERE lock_name IN (SELECT value FROM json_each(?))`,
		getCounter:  `SELECT value FROM ` + meta + ` WHERE name = 'token'`,
		setCounter:  `UPDATE ` + meta + ` SET value = ? WHERE name = 'token'`,
		acquire: `INSERT INTO ` + locks + ` (lock_name, holder, holder_info, token, acquired_at, renewed_at, expires_at, revoked)
			VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 0)
			ON CONFLICT (lock_name) DO UPDATE SET holder = ?2, holder_info = ?3, token = ?4,
				acquired_at = ?5, renewed_at = ?5, expires_at = ?6, revoked = 0`,
		// The caller has checked, in the same write transaction, that the
		// lease is unexpired (row.held).
		// A batch of leases renewed at once: the names are a JSON array.
		renew: `UPDATE ` + locks + ` SET renewed_at = ?1, expires_at = ?2
			WHERE lock_name IN (SELECT value FROM json_each(?3))`,
		renewClock: `INSERT INTO ` + leaseClock + ` (lock_name, lease_token, clock, expires)
			SELECT lock_name, token, ?1, ?2 FROM ` + locks + ` WHERE lock_name IN (SELECT value FROM json_each(?3))
			ON CONFLICT (lock_name) DO UPDATE SET lease_token = excluded.lease_token, clock = excluded.clock,
				expires = excluded.expires`,
		setClock: `INSERT INTO ` + leaseClock + ` (lock_name, lease_token, clock, expires) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (lock_name) DO UPDATE SET lease_token = ?2, clock = ?3, expires = ?4`,
		release: `UPDATE ` + locks + ` SET holder = '', holder_info = '', acquired_at = 0, renewed_at = 0,
				expires_at = 0, revoked = 0
			WHERE lock_name = ?1 AND holder = ?2 AND token = ?3 AND holder <> ''`,
		ensureRow:  `INSERT INTO ` + locks + ` (lock_name) VALUES (?) ON CONFLICT (lock_name) DO NOTHING`,
		setControl: `UPDATE ` + locks + ` SET disabled = ?, reason = ?, changed_by = ?, changed_at = ?, revoked = ? WHERE lock_name = ?`,

		deleteHandoff: `DELETE FROM ` + handoff + ` WHERE lock_name = ?`,
		clearRequest:  `UPDATE ` + handoff + ` SET request_token = 0, request_to = '', request_by = '' WHERE lock_name = ?`,
		setRequest: `INSERT INTO ` + handoff + ` (lock_name, request_token, request_to, request_by) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (lock_name) DO UPDATE SET request_token = ?2, request_to = ?3, request_by = ?4,
				reserved_for = '', reserved_token = 0, reserved_clock = '', reserved_expires = 0, reserved_wall = 0`,
		setReserve: `INSERT INTO ` + handoff + ` (lock_name, reserved_for, reserved_token, reserved_clock, reserved_expires, reserved_wall)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6)
			ON CONFLICT (lock_name) DO UPDATE SET request_token = 0, request_to = '', request_by = '',
				reserved_for = ?2, reserved_token = ?3, reserved_clock = ?4, reserved_expires = ?5, reserved_wall = ?6`,

		appendEvent: `INSERT INTO ` + history + ` (lock_name, kind, instance, token, reason, remote, at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
		pruneHistory: `DELETE FROM ` + history + ` WHERE id <= ?`,
		eventsAll: `SELECT ` + historyColumns + ` FROM ` + history + `
			WHERE id < ?1 ORDER BY id DESC LIMIT ?2`,
		eventsLock: `SELECT ` + historyColumns + ` FROM ` + history + `
			WHERE lock_name = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3`,

		notify:      `INSERT INTO ` + notify + ` (kind, lock_name) VALUES (?, ?)`,
		notifyMany:  `INSERT INTO ` + notify + ` (kind, lock_name) SELECT value ->> 0, value ->> 1 FROM json_each(?)`,
		pruneNotify: `DELETE FROM ` + notify + ` WHERE id <= ?`,
		notifyMax:   `SELECT COALESCE(max(id), 0) FROM ` + notify,
		notifySince: `SELECT id, ` + kindCol + `, lock_name FROM ` + notify + ` WHERE id > ? ORDER BY id`,

		getMember:  `SELECT set_key, clock, expires, wall_expires FROM ` + members + ` WHERE member_id = ?`,
		memberInfo: `SELECT info, clock, expires, wall_expires FROM ` + members + ` WHERE member_id = ?`,
		upsertMember: `INSERT INTO ` + members + ` (` + memberColumns + `) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
			ON CONFLICT (member_id) DO UPDATE SET info = ?2, lock_set_id = ?3, set_key = ?4, lock_count = ?5,
				masters = ?6, weight = ?7, seen_at = ?8, clock = ?9, expires = ?10, wall_expires = ?11`,
		memberExpiries: `SELECT member_id, set_key, clock, expires, wall_expires FROM ` + members,
		deleteMember:   `DELETE FROM ` + members + ` WHERE member_id = ? RETURNING set_key`,
		hasSet:         `SELECT EXISTS (SELECT 1 FROM ` + memberLocks + ` WHERE set_key = ?)`,
		insertSet:      `INSERT OR IGNORE INTO ` + memberLocks + ` (set_key, lock_name) SELECT ?, value FROM json_each(?)`,
		// A set goes with the last member that has it.
		dropSet: `DELETE FROM ` + memberLocks + ` WHERE set_key = ?1
			AND NOT EXISTS (SELECT 1 FROM ` + members + ` WHERE set_key = ?1)`,
		membersAll: `SELECT ` + memberColumns + ` FROM ` + members + ` ORDER BY member_id`,
		membersLock: `SELECT ` + memberColumns + ` FROM ` + members + `
			WHERE set_key IN (SELECT set_key FROM ` + memberLocks + ` WHERE lock_name = ?) ORDER BY member_id`,
		setLocks: `SELECT lock_name FROM ` + memberLocks + ` WHERE set_key = ? ORDER BY lock_name`,
	}
}

// row is one record of the locks table with its lease's expiry on
// CLOCK_BOOTTIME (the lease_clock table). The *At fields are wall-clock
// times, for display; expiresAt decides only leases written by an older
// version (row.remaining).
type row struct {
	name, holder, holderInfo         string
	token                            int64
	acquiredAt, renewedAt, expiresAt int64
	revoked, disabled                bool
	reason, changedBy                string
	changedAt                        int64

	leaseToken   int64  // the token clockExpires belongs to
	clock        string // the clock of clockExpires (stamp.clock)
	clockExpires int64  // the lease's expiry on clock, in milliseconds

	// The handoff table's row, if any (hasHandoff).
	hasHandoff      bool
	requestToken    int64  // the lease a hand-off request is about; 0: none
	requestTo       string // the instance asked for; "" for any
	reservedFor     string // the successor a released lease is reserved for
	reservedToken   int64  // the released lease
	reservedClock   string // the clock of reservedExpires (stamp.clock)
	reservedExpires int64  // the reservation's end on reservedClock
	reservedWall    int64  // the reservation's end on the wall clock
}

func (r *row) scan(sc interface{ Scan(...any) error }) error {
	var handoff []byte
	if err := sc.Scan(&r.name, &r.holder, &r.holderInfo, &r.token, &r.acquiredAt, &r.renewedAt, &r.expiresAt,
		&r.revoked, &r.disabled, &r.reason, &r.changedBy, &r.changedAt,
		&r.leaseToken, &r.clock, &r.clockExpires, &handoff); err != nil {
		return err
	}
	if len(handoff) == 0 {
		return nil
	}
	var cols []json.RawMessage
	if err := json.Unmarshal(handoff, &cols); err != nil {
		return fmt.Errorf("handoff row of %q: %w", r.name, err)
	}
	fields := []any{&r.requestToken, &r.requestTo, &r.reservedFor, &r.reservedToken, &r.reservedClock, &r.reservedExpires, &r.reservedWall}
	if len(cols) != len(fields) {
		return fmt.Errorf("handoff row of %q: %d columns, want %d", r.name, len(cols), len(fields))
	}
	for i, c := range cols {
		if err := json.Unmarshal(c, fields[i]); err != nil {
			return fmt.Errorf("handoff row of %q: %w", r.name, err)
		}
	}
	r.hasHandoff = true
	return nil
}

// handoffRequested reports whether a hand-off of the row's current lease
// is pending at now: the request is about this lease, which has not
// expired.
func (r *row) handoffRequested(now stamp) bool {
	return r.requestToken != 0 && r.requestToken == r.token && r.held(now)
}

// reservation returns the instance the lock is reserved for at now and the
// time left, in milliseconds; "" when there is no reservation in force. A
// reservation holds while the released lease is the lock's last (no lease
// was taken since) and until it lapses.
func (r *row) reservation(now stamp) (string, int64) {
	if r.reservedFor == "" || r.holder != "" || r.reservedToken != r.token {
		return "", 0
	}
	if ms := remainingOn(r.reservedClock, r.reservedExpires, r.reservedWall, now); ms > 0 {
		return r.reservedFor, ms
	}
	return "", 0
}

// reservedAgainst reports whether a reservation keeps holder from
// acquiring the lock at now.
func (r *row) reservedAgainst(holder string, now stamp) bool {
	who, _ := r.reservation(now)
	return who != "" && who != holder
}

// setLease records a lease taken or renewed at now for ttlMs, in the row
// and, through setClock, in the database.
func (r *row) setLease(now stamp, ttlMs int64) {
	r.renewedAt, r.expiresAt = now.wall, now.wall+ttlMs
	r.leaseToken, r.clock, r.clockExpires = r.token, now.clock, now.at+ttlMs
}

// state is the row as the store package shows it at now. TTL is measured
// on the lease's clock; ExpiresAt is the wall clock at now plus TTL.
func (r *row) state(now stamp) store.LockState {
	st := store.LockState{
		Lock:      r.name,
		Token:     r.token,
		Disabled:  r.disabled,
		Reason:    r.reason,
		ChangedBy: r.changedBy,
		ChangedAt: msTime(r.changedAt),
	}
	if r.holder != "" {
		st.Holder, st.HolderInfo = r.holder, r.holderInfo
		ms := r.remaining(now)
		st.AcquiredAt, st.RenewedAt, st.ExpiresAt = msTime(r.acquiredAt), msTime(r.renewedAt), msTime(now.wall+ms)
		st.TTL = time.Duration(ms) * time.Millisecond
		st.Revoked = r.revoked
		if r.handoffRequested(now) {
			st.HandoffRequested, st.HandoffTo = true, r.requestTo
		}
	}
	if who, ms := r.reservation(now); who != "" {
		st.ReservedFor, st.ReservedTTL = who, time.Duration(ms)*time.Millisecond
	}
	return st
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// millis converts a TTL to whole milliseconds, rounding up.
func millis(d time.Duration) int64 { return int64((d + time.Millisecond - 1) / time.Millisecond) }

// prep returns the statement for query in tx, prepared once per
// connection: the statements every instance runs on its schedule are
// parsed and planned once, not in each call. (Preparing the three-table
// read of loadRows took a third of a one-lock Acquire.) The statement is
// closed with tx.
func (s *Store) prep(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	st := s.stmts[query]
	s.stmtMu.Unlock()
	if st == nil {
		p, err := s.db.PrepareContext(ctx, query)
		if err != nil {
			return nil, err
		}
		s.stmtMu.Lock()
		if s.stmts == nil {
			s.stmts = map[string]*sql.Stmt{}
		}
		if st = s.stmts[query]; st == nil {
			st, s.stmts[query] = p, p
		} else {
			_ = p.Close()
		}
		s.stmtMu.Unlock()
	}
	return tx.StmtContext(ctx, st), nil
}

// loadRows reads the records of names (all valid lock names) in one query.
func (s *Store) loadRows(ctx context.Context, tx *sql.Tx, names []string) (map[string]*row, error) {
	out := make(map[string]*row, len(names))
	if len(names) == 0 {
		return out, nil
	}
	list, err := json.Marshal(names)
	if err != nil {
		return nil, err
	}
	stmt, err := s.prep(ctx, tx, s.q.selectNamed)
	if err != nil {
		return nil, err
	}
	rows, err := stmt.QueryContext(ctx, string(list))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		r := new(row)
		if err := r.scan(rows); err != nil {
			return nil, err
		}
		out[r.name] = r
	}
	return out, rows.Err()
}

// validNames checks every name and returns them without duplicates, in
// order of first appearance.
func validNames(names []string) ([]string, error) {
	seen := make(map[string]bool, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if err := store.ValidateLockName(n); err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// begin checks the handle and the context before a call does anything.
func (s *Store) begin(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlite: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return nil
}

// writeTx runs fn in a write transaction, which holds the database's write
// lock from its start (BEGIN IMMEDIATE), with now read once the lock is
// held: a decision is never made on a time older than a commit it sees.
func (s *Store) writeTx(ctx context.Context, op string, fn func(tx *sql.Tx, now stamp) error) error {
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if s.readOnly {
		return fmt.Errorf("sqlite: %s: %w", op, ErrReadOnly)
	}
	select {
	case s.write <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("sqlite: %s: %w", op, ctx.Err())
	}
	defer func() { <-s.write }()
	s.rung = false
	if err := s.tx(ctx, op, nil, fn); err != nil {
		return blockedBy(s.path, err)
	}
	if s.rung {
		ring(s.path) // committed: wake the subscriptions watching the file
	}
	return nil
}

// blockedBy adds to a write that timed out or found the database busy the
// process holding the write lock, when another one does: one that is
// stopped (SIGSTOP, Ctrl-Z, a debugger) blocks every writer, and so every
// takeover, until it resumes or exits, which no timeout here can change.
func blockedBy(path string, err error) error {
	if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	h, ok := sqlitelock.Writer(path)
	switch {
	case !ok:
		return err
	case h.Frozen():
		return fmt.Errorf("%w (the database's write lock is held by %s: no instance can write until it resumes or exits)", err, h)
	default:
		return fmt.Errorf("%w (the database's write lock is held by %s)", err, h)
	}
}

// HoldWrites waits until no write of this Store is in flight, then keeps
// new ones waiting until release is called. A process about to stop itself
// (the command's runner on SIGTSTP, a terminal's Ctrl-Z) calls it first, so
// that it does not hold the database's write lock while stopped, which
// would block every other process's writes (see the package doc). It fails
// only when ctx ends first.
func (s *Store) HoldWrites(ctx context.Context) (release func(), err error) {
	select {
	case s.write <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-s.write }) }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sqlite: hold writes: %w", ctx.Err())
	}
}

// readTx runs fn in a read transaction: one consistent snapshot.
func (s *Store) readTx(ctx context.Context, op string, fn func(tx *sql.Tx, now stamp) error) error {
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	return s.tx(ctx, op, &sql.TxOptions{ReadOnly: true}, fn)
}

func (s *Store) tx(ctx context.Context, op string, opts *sql.TxOptions, fn func(tx *sql.Tx, now stamp) error) error {
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	now := s.clock.now()
	if err := fn(tx, now); err != nil {
		return s.wrap(ctx, op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(ctx, op, err)
	}
	return nil
}

// SQLite primary result codes that mean the database could not be reached
// or was busy: the caller should retry.
const (
	codeNoMem    = 7
	codeBusy     = 5
	codeLocked   = 6
	codeIOErr    = 10
	codeFull     = 13
	codeCantOpen = 14
	codeProtocol = 15
)

// wrap translates a database error: context errors stay recognisable,
// calls racing Close report store.ErrClosed, and contention or I/O failures
// wrap store.ErrUnavailable.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlite: %s: %w: %w", op, cerr, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if s.closed.Load() || errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("sqlite: %s: %w: %w", op, store.ErrClosed, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case codeBusy, codeLocked, codeIOErr, codeFull, codeCantOpen, codeProtocol, codeNoMem:
			return fmt.Errorf("sqlite: %s: %w: %w", op, store.ErrUnavailable, err)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// Acquire implements store.Store. All names are decided in one IMMEDIATE
// transaction, so the check of the control and the take are atomic. A
// lock reserved for another holder (Handoffs) is refused until the
// reservation lapses. The same transaction notifies the acquisitions and
// writes the holder's member record, if one was announced on this handle
// (then even for an empty list of locks).
func (s *Store) Acquire(ctx context.Context, holder store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	if err := s.begin(ctx, "acquire"); err != nil {
		return nil, err
	}
	names, err := validNames(locks)
	if err != nil {
		return nil, fmt.Errorf("sqlite: acquire: %w", err)
	}
	if len(names) == 0 && !s.announced(holder.ID) {
		return []store.LockState{}, nil
	}
	if holder.ID == "" {
		return nil, errors.New("sqlite: acquire: empty holder ID")
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("sqlite: acquire: ttl %v: must be at least 1ms", ttl)
	}
	ttlMs := millis(ttl)
	var out []store.LockState
	err = s.writeTx(ctx, "acquire", func(tx *sql.Tx, now stamp) error {
		out = make([]store.LockState, 0, len(names))
		rows, err := s.loadRows(ctx, tx, names)
		if err != nil {
			return err
		}
		lt := &leaseTx{s: s, tx: tx, now: now}
		defer lt.close()
		var acquired []store.Change
		for _, name := range names {
			r := rows[name]
			if r == nil {
				r = &row{name: name}
			}
			if r.disabled || r.held(now) || r.reservedAgainst(holder.ID, now) {
				out = append(out, r.state(now))
				continue
			}
			// An unexpired lease was refused above: a holder still set is
			// an expired lease taken over.
			prevHolder, prevToken := r.holder, r.token
			if err := lt.take(ctx, r, holder, ttlMs); err != nil {
				return err
			}
			st := r.state(now)
			st.Acquired = true
			if prevHolder != "" {
				st.PrevHolder, st.PrevToken, st.PrevExpired = prevHolder, prevToken, true
			}
			out = append(out, st)
			acquired = append(acquired, store.Change{Kind: store.ChangeLease, Lock: name, Holder: holder.ID, Token: r.token})
		}
		if err := lt.saveCounter(ctx); err != nil {
			return err
		}
		if err := s.notifyChanges(ctx, tx, acquired); err != nil {
			return err
		}
		return s.writeMember(ctx, tx, now, holder.ID)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Renew implements store.Store, in one IMMEDIATE transaction, which also
// writes the holder's member record if one was announced on this handle
// (then even for an empty list of leases).
func (s *Store) Renew(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	if err := s.begin(ctx, "renew"); err != nil {
		return nil, err
	}
	if len(leases) == 0 && !s.announced(holderID) {
		return []store.RenewResult{}, nil
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("sqlite: renew: ttl %v: must be at least 1ms", ttl)
	}
	ttlMs := millis(ttl)
	// A ref with an invalid name cannot name a lease this store issued.
	names := make([]string, 0, len(leases))
	for _, l := range leases {
		if store.ValidateLockName(l.Lock) == nil {
			names = append(names, l.Lock)
		}
	}
	var out []store.RenewResult
	err := s.writeTx(ctx, "renew", func(tx *sql.Tx, now stamp) error {
		out = make([]store.RenewResult, 0, len(leases))
		rows, err := s.loadRows(ctx, tx, names)
		if err != nil {
			return err
		}
		// Every lease is renewed to the same expiry: the renewed ones are
		// written by two statements, whatever their number.
		var renewed []string
		lease := row{}
		lease.setLease(now, ttlMs)
		for _, l := range leases {
			res := store.RenewResult{Lock: l.Lock, Token: l.Token}
			if r := rows[l.Lock]; r != nil {
				res.Disabled = r.disabled
				if holderID != "" && r.holder == holderID && r.token == l.Token && r.held(now) {
					renewed = append(renewed, l.Lock)
					res.Renewed, res.TTL, res.Revoked = true, time.Duration(ttlMs)*time.Millisecond, r.revoked
					if r.handoffRequested(now) {
						res.HandoffRequested, res.HandoffTo = true, r.requestTo
					}
				}
			}
			out = append(out, res)
		}
		if len(renewed) > 0 {
			list, err := json.Marshal(renewed)
			if err != nil {
				return err
			}
			if _, err := s.exec(ctx, tx, s.q.renew, lease.renewedAt, lease.expiresAt, string(list)); err != nil {
				return err
			}
			if _, err := s.exec(ctx, tx, s.q.renewClock, lease.clock, lease.clockExpires, string(list)); err != nil {
				return err
			}
		}
		return s.writeMember(ctx, tx, now, holderID)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Release implements store.Store, in one IMMEDIATE transaction. The released
// record keeps its token, so Locks still reports the most recent one. A ref
// naming a Successor with a positive Reserve reserves the lock for it
// (Handoffs), on the lease clock; every release ends a pending hand-off
// request.
func (s *Store) Release(ctx context.Context, holderID string, leases []store.LeaseRef) error {
	if err := s.begin(ctx, "release"); err != nil {
		return err
	}
	if len(leases) == 0 || holderID == "" {
		return nil
	}
	return s.writeTx(ctx, "release", func(tx *sql.Tx, now stamp) error {
		lt := &leaseTx{s: s, tx: tx, now: now}
		defer lt.close()
		var released []store.Change
		for _, l := range leases {
			if store.ValidateLockName(l.Lock) != nil {
				continue
			}
			c, ok, err := lt.release(ctx, holderID, l)
			if err != nil {
				return err
			}
			if ok {
				released = append(released, c)
			}
		}
		return s.notifyChanges(ctx, tx, released)
	})
}

// Transfer implements store.Transfers, in one IMMEDIATE transaction, as
// Release and Acquire are: each ref whose lease holderID holds with its
// token, unexpired, is released as by Release, or, when it names a
// Successor with an unexpired member record and the lease is not revoked
// nor the lock disabled, given to
// the successor with a new token issued as Acquire issues it (the
// counter, written back in the same transaction), a lease of ttl on the
// lease clock from the transaction's now, the successor's member record's
// Info, and neither hand-off request nor
// reservation (the lock's handoff row is deleted). A ref that does not
// match, or whose lease has expired, is ignored. The transaction notifies
// each transfer as Acquire notifies an acquisition (a lease change with
// the successor and the new token as hints) and each release as Release
// does. ttl must be at least a millisecond when a ref names a successor.
//
// Safety: the write lock is held from BEGIN IMMEDIATE to the commit, and
// now is read once it is held (writeTx), so the checks (holder, token,
// expiry, revoked, disabled) and the writes are one atomic step that no
// Disable, Acquire or Renew of another connection or process interleaves
// with: the old lease ends exactly when the new one begins, and no
// instance can acquire in between. The new token exceeds every token the
// lock ever had (leaseTx.take), so the old holder, fenced by its token, can
// no longer renew or release. The commit is synchronous (PRAGMA
// synchronous=FULL, as for every write), so the issued token and the
// counter survive power loss together with the lease that carries them.
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	const op = "transfer"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if len(leases) == 0 || holderID == "" {
		return nil
	}
	// A ref with an invalid name cannot name a lease this store issued.
	names := make([]string, 0, len(leases))
	give := false
	for _, l := range leases {
		if store.ValidateLockName(l.Lock) == nil {
			names = append(names, l.Lock)
			give = give || l.Successor != ""
		}
	}
	if len(names) == 0 {
		return nil
	}
	if give && ttl < time.Millisecond {
		return fmt.Errorf("sqlite: %s: ttl %v: must be at least 1ms", op, ttl)
	}
	ttlMs := millis(ttl)
	return s.writeTx(ctx, op, func(tx *sql.Tx, now stamp) error {
		rows, err := s.loadRows(ctx, tx, names)
		if err != nil {
			return err
		}
		lt := &leaseTx{s: s, tx: tx, now: now}
		defer lt.close()
		var changes []store.Change
		for _, l := range leases {
			// rows has no entry for an invalid name. The row is updated
			// below as it is written, so a ref repeated in the batch no
			// longer matches.
			r := rows[l.Lock]
			if r == nil || r.holder != holderID || r.token != l.Token || !r.held(now) {
				continue
			}
			var (
				info   string
				member bool
			)
			if l.Successor != "" && !r.revoked && !r.disabled {
				var err error
				if info, member, err = lt.memberInfo(ctx, l.Successor); err != nil {
					return err
				}
			}
			if !member {
				// Never give a revoked lease, a disabled lock, or a lock
				// to an instance without a member record (it left: its
				// Leave, a write of this file, came first): release it,
				// reserved for the successor as Release would.
				c, ok, err := lt.release(ctx, holderID, l)
				if err != nil {
					return err
				}
				if ok {
					changes = append(changes, c)
					r.holder, r.holderInfo, r.revoked = "", "", false
				}
				continue
			}
			if err := lt.take(ctx, r, store.Holder{ID: l.Successor, Info: info}, ttlMs); err != nil {
				return err
			}
			changes = append(changes, store.Change{Kind: store.ChangeLease, Lock: l.Lock, Holder: l.Successor, Token: r.token})
		}
		if err := lt.saveCounter(ctx); err != nil {
			return err
		}
		return s.notifyChanges(ctx, tx, changes)
	})
}

// leaseTx takes and ends leases in one write transaction, for Acquire,
// Release and Transfer: each of its statements is prepared on its first
// use, once per transaction, and the token counter is read before the
// first lease it issues. Close it with the transaction.
type leaseTx struct {
	s   *Store
	tx  *sql.Tx
	now stamp

	counter int64 // the token counter, once read: the last token issued
	read    bool  // counter was read; saveCounter writes it back

	takeStmt, setClock, releaseStmt, reserve, dropHandoff, memberInfoStmt *sql.Stmt
}

// stmt returns *p, preparing query into it on the first call.
func (lt *leaseTx) stmt(ctx context.Context, p **sql.Stmt, query string) (*sql.Stmt, error) {
	if *p == nil {
		st, err := lt.s.prep(ctx, lt.tx, query)
		if err != nil {
			return nil, err
		}
		*p = st
	}
	return *p, nil
}

func (lt *leaseTx) close() {
	for _, st := range []*sql.Stmt{lt.takeStmt, lt.setClock, lt.releaseStmt, lt.reserve, lt.dropHandoff, lt.memberInfoStmt} {
		if st != nil {
			_ = st.Close()
		}
	}
}

// take gives r (a lock without an unexpired lease, or one Transfer gives
// away) a new lease for holder, of ttlMs from the transaction's now, and
// writes it. Its token exceeds both the counter and the lock's own last
// token, so a counter restored from an old backup cannot repeat a token;
// saveCounter writes the counter back in the same transaction. The new
// lease ends the lock's hand-off request and reservation (the token check
// already ignores them): the handoff row is deleted.
func (lt *leaseTx) take(ctx context.Context, r *row, holder store.Holder, ttlMs int64) error {
	if !lt.read {
		err := lt.s.queryRow(ctx, lt.tx, lt.s.q.getCounter).Scan(&lt.counter)
		if errors.Is(err, sql.ErrNoRows) {
			return errors.New("token counter missing from the meta table")
		}
		if err != nil {
			return err
		}
		lt.read = true
	}
	take, err := lt.stmt(ctx, &lt.takeStmt, lt.s.q.acquire)
	if err != nil {
		return err
	}
	setClock, err := lt.stmt(ctx, &lt.setClock, lt.s.q.setClock)
	if err != nil {
		return err
	}
	lt.counter = max(lt.counter, r.token) + 1
	r.holder, r.holderInfo, r.token, r.revoked = holder.ID, holder.Info, lt.counter, false
	r.acquiredAt = lt.now.wall
	r.setLease(lt.now, ttlMs)
	if _, err := take.ExecContext(ctx, r.name, holder.ID, holder.Info, r.token, lt.now.wall, r.expiresAt); err != nil {
		return err
	}
	if _, err := setClock.ExecContext(ctx, r.name, r.token, r.clock, r.clockExpires); err != nil {
		return err
	}
	if r.hasHandoff {
		if err := lt.dropHandoffOf(ctx, r.name); err != nil {
			return err
		}
		r.hasHandoff, r.requestToken, r.requestTo, r.reservedFor = false, 0, "", ""
	}
	return nil
}

// saveCounter writes the token counter back if take issued tokens.
func (lt *leaseTx) saveCounter(ctx context.Context) error {
	if !lt.read {
		return nil
	}
	_, err := lt.s.exec(ctx, lt.tx, lt.s.q.setCounter, lt.counter)
	return err
}

// release ends l's lease if holderID holds it with l.Token (expired or
// not), reserving the lock for l.Successor if l.Reserve is positive and
// ending any hand-off request otherwise. It returns the change to notify
// and whether a lease was ended.
func (lt *leaseTx) release(ctx context.Context, holderID string, l store.LeaseRef) (store.Change, bool, error) {
	stmt, err := lt.stmt(ctx, &lt.releaseStmt, lt.s.q.release)
	if err != nil {
		return store.Change{}, false, err
	}
	res, err := stmt.ExecContext(ctx, l.Lock, holderID, l.Token)
	if err != nil {
		return store.Change{}, false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return store.Change{}, false, err
	}
	if l.Successor != "" && l.Reserve > 0 {
		reserve, err := lt.stmt(ctx, &lt.reserve, lt.s.q.setReserve)
		if err != nil {
			return store.Change{}, false, err
		}
		ms, now := millis(l.Reserve), lt.now
		if _, err := reserve.ExecContext(ctx, l.Lock, l.Successor, l.Token, now.clock, now.at+ms, now.wall+ms); err != nil {
			return store.Change{}, false, err
		}
		return store.Change{Kind: store.ChangeLease, Lock: l.Lock, ReservedFor: l.Successor}, true, nil
	}
	if err := lt.dropHandoffOf(ctx, l.Lock); err != nil {
		return store.Change{}, false, err
	}
	return store.Change{Kind: store.ChangeLease, Lock: l.Lock}, true, nil
}

// dropHandoffOf deletes lock's handoff row: its request and reservation.
func (lt *leaseTx) dropHandoffOf(ctx context.Context, lock string) error {
	stmt, err := lt.stmt(ctx, &lt.dropHandoff, lt.s.q.deleteHandoff)
	if err != nil {
		return err
	}
	_, err = stmt.ExecContext(ctx, lock)
	return err
}

// memberInfo returns the Info of id's member record (Membership), and
// whether it has one unexpired at the transaction's now.
func (lt *leaseTx) memberInfo(ctx context.Context, id string) (info string, ok bool, err error) {
	stmt, err := lt.stmt(ctx, &lt.memberInfoStmt, lt.s.q.memberInfo)
	if err != nil {
		return "", false, err
	}
	var (
		clk               string
		expires, wallExps int64
	)
	err = stmt.QueryRowContext(ctx, id).Scan(&info, &clk, &expires, &wallExps)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if remainingOn(clk, expires, wallExps, lt.now) <= 0 {
		return "", false, nil
	}
	return info, true, nil
}

// Disable implements store.Store. It creates the lock's record if needed
// and revokes an unexpired lease, in the transaction that sets the mark,
// which also ends a pending hand-off request. Disabling a disabled lock
// changes nothing (the first reason stays).
func (s *Store) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	return s.control(ctx, "disable", lock, true, reason, by)
}

// Enable implements store.Store. It clears the mark and the reason and
// records who enabled; a revoked lease stays revoked. Enabling an unknown
// lock creates no record.
func (s *Store) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	return s.control(ctx, "enable", lock, false, "", by)
}

func (s *Store) control(ctx context.Context, op, lock string, disable bool, reason, by string) (store.ControlChange, error) {
	if err := s.begin(ctx, op); err != nil {
		return store.ControlChange{}, err
	}
	if err := store.ValidateLockName(lock); err != nil {
		return store.ControlChange{}, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	var ch store.ControlChange
	err := s.writeTx(ctx, op, func(tx *sql.Tx, now stamp) error {
		if disable {
			if _, err := tx.ExecContext(ctx, s.q.ensureRow, lock); err != nil {
				return err
			}
		}
		rows, err := s.loadRows(ctx, tx, []string{lock})
		if err != nil {
			return err
		}
		r := rows[lock]
		if r == nil { // enabling an unknown lock
			ch = store.ControlChange{State: (&row{name: lock}).state(now)}
			return nil
		}
		ch.Changed = r.disabled != disable
		if ch.Changed {
			r.disabled, r.reason, r.changedBy, r.changedAt = disable, reason, by, now.wall
			c := store.Change{Kind: store.ChangeControl, Lock: lock}
			if disable && r.held(now) {
				c.Revoked = r.token // the lease this disable revokes, below
			}
			if err := s.notifyChanges(ctx, tx, []store.Change{c}); err != nil {
				return err
			}
			if disable && r.requestToken != 0 {
				// The holder stops for the disable instead.
				if _, err := tx.ExecContext(ctx, s.q.clearRequest, lock); err != nil {
					return err
				}
				r.requestToken, r.requestTo = 0, ""
			}
		}
		if disable && r.held(now) {
			r.revoked = true
		}
		if _, err := tx.ExecContext(ctx, s.q.setControl,
			r.disabled, r.reason, r.changedBy, r.changedAt, r.revoked, lock); err != nil {
			return err
		}
		ch.State = r.state(now)
		return nil
	})
	if err != nil {
		return store.ControlChange{}, err
	}
	return ch, nil
}

// Handoff implements store.Handoffs: it records, in one IMMEDIATE
// transaction, a request about the lock's current lease (replacing an
// earlier one), which the holder's next Renew reports, and notifies it.
// by is stored beside the request (the handoff table's request_by).
func (s *Store) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	const op = "handoff"
	if err := s.begin(ctx, op); err != nil {
		return store.LockState{}, err
	}
	if err := store.ValidateLockName(lock); err != nil {
		return store.LockState{}, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	var (
		st      store.LockState
		refused error
	)
	err := s.writeTx(ctx, op, func(tx *sql.Tx, now stamp) error {
		rows, err := s.loadRows(ctx, tx, []string{lock})
		if err != nil {
			return err
		}
		r := rows[lock]
		if r == nil {
			r = &row{name: lock}
		}
		switch {
		case r.disabled:
			st, refused = r.state(now), store.ErrLockDisabled
			return nil
		case !r.held(now):
			st, refused = r.state(now), store.ErrNotHeld
			return nil
		}
		if _, err := tx.ExecContext(ctx, s.q.setRequest, lock, r.token, to, by); err != nil {
			return err
		}
		r.hasHandoff, r.requestToken, r.requestTo, r.reservedFor = true, r.token, to, ""
		st = r.state(now)
		return s.notifyTx(ctx, tx, store.ChangeControl, lock)
	})
	if err != nil {
		return store.LockState{}, err
	}
	if refused != nil {
		return st, fmt.Errorf("sqlite: hand-off of %q: %w", lock, refused)
	}
	return st, nil
}

// Locks implements store.Store, reading one consistent snapshot.
func (s *Store) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	if err := s.begin(ctx, "locks"); err != nil {
		return nil, err
	}
	names, err := validNames(names)
	if err != nil {
		return nil, fmt.Errorf("sqlite: locks: %w", err)
	}
	var out []store.LockState
	err = s.readTx(ctx, "locks", func(tx *sql.Tx, now stamp) error {
		if len(names) == 0 {
			rows, err := tx.QueryContext(ctx, s.q.selectAll)
			if err != nil {
				return err
			}
			defer rows.Close()
			out = []store.LockState{}
			for rows.Next() {
				var r row
				if err := r.scan(rows); err != nil {
					return err
				}
				out = append(out, r.state(now))
			}
			return rows.Err()
		}
		rows, err := s.loadRows(ctx, tx, names)
		if err != nil {
			return err
		}
		out = make([]store.LockState, 0, len(names))
		for _, n := range names {
			r := rows[n]
			if r == nil {
				r = &row{name: n}
			}
			out = append(out, r.state(now))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// BINARY collation orders like Go strings; sort named results the same way.
	slices.SortFunc(out, func(a, b store.LockState) int { return strings.Compare(a.Lock, b.Lock) })
	return out, nil
}

// AppendEvents implements store.History: the batch is inserted, and the
// entries beyond the retention pruned, in one IMMEDIATE transaction.
func (s *Store) AppendEvents(ctx context.Context, events []store.Event) error {
	const op = "append events"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	for _, e := range events {
		if err := store.ValidateLockName(e.Lock); err != nil {
			return fmt.Errorf("sqlite: %s: %w", op, err)
		}
	}
	if len(events) == 0 {
		return nil
	}
	// Of a batch longer than the retention only the newest entries would
	// survive the pruning: insert only those.
	if over := len(events) - s.historyLimit; over > 0 {
		events = events[over:]
	}
	return s.writeTx(ctx, op, func(tx *sql.Tx, now stamp) error {
		stmt, err := tx.PrepareContext(ctx, s.q.appendEvent)
		if err != nil {
			return err
		}
		defer stmt.Close()
		var last int64
		for _, e := range events {
			res, err := stmt.ExecContext(ctx, e.Lock, store.CleanText(string(e.Kind)), store.CleanText(e.Instance),
				e.Token, store.CleanText(e.Reason), store.CleanText(e.Remote), now.wall)
			if err != nil {
				return err
			}
			if last, err = res.LastInsertId(); err != nil {
				return err
			}
		}
		if floor := last - int64(s.historyLimit); floor > 0 {
			if _, err := tx.ExecContext(ctx, s.q.pruneHistory, floor); err != nil {
				return err
			}
		}
		seen := make(map[string]bool, 1)
		locks := make([]string, 0, 1)
		for _, e := range events {
			if !seen[e.Lock] {
				seen[e.Lock] = true
				locks = append(locks, e.Lock)
			}
		}
		return s.notifyTx(ctx, tx, store.ChangeHistory, locks...)
	})
}

// Events implements store.History.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	const op = "events"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	before := f.BeforeID
	if before <= 0 {
		before = math.MaxInt64
	}
	limit := store.EventsLimit(f.Limit)
	query, args := s.q.eventsAll, []any{before, limit}
	if f.Lock != "" {
		if err := store.ValidateLockName(f.Lock); err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w", op, err)
		}
		query, args = s.q.eventsLock, []any{f.Lock, before, limit}
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	defer rows.Close()
	out := make([]store.Event, 0, min(limit, 64))
	for rows.Next() {
		var (
			e    store.Event
			kind string
			at   int64
		)
		if err := rows.Scan(&e.ID, &e.Lock, &kind, &e.Instance, &e.Token, &e.Reason, &e.Remote, &at); err != nil {
			return nil, s.wrap(ctx, op, err)
		}
		e.Kind, e.At = store.EventKind(kind), msTime(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	return out, nil
}

// queryRow runs a query returning one row with a prepared statement.
func (s *Store) queryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) scanner {
	stmt, err := s.prep(ctx, tx, query)
	if err != nil {
		return errRow{err}
	}
	return stmt.QueryRowContext(ctx, args...)
}

// exec runs a statement with a prepared statement.
func (s *Store) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	stmt, err := s.prep(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return stmt.ExecContext(ctx, args...)
}

type scanner interface{ Scan(...any) error }

// errRow is a row that fails to scan with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// Close closes the database handle. It does not release leases. Calls made
// after Close fail with store.ErrClosed; closing twice is a no-op.
// Subscriptions end (their channels close) before Close returns.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed.CompareAndSwap(false, true) {
		s.mu.Unlock()
		return nil
	}
	s.stop()
	s.mu.Unlock()
	s.subs.Wait()
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		_ = st.Close()
	}
	s.stmts = nil
	s.stmtMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}
