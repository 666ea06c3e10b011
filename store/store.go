// Package store defines the contract between the masterjob elector and the
// databases that hold leases and controls.
//
// A Store keeps one record per lock name. The record holds the current lease
// (holder, fencing token, expiry computed on the store's clock) and the
// lock's control (disabled, reason). Keeping both in one record is what makes
// acquisition check the control atomically: a Disable and an Acquire of the
// same lock serialise on the same row or key.
//
// Every method that touches leases takes many locks at once, so that an
// instance pays one round trip per heartbeat and one per check however many
// locks it holds or follows. All expiry arithmetic happens in the store: the
// caller passes durations, never timestamps, and receives remaining
// time-to-live measured by the store.
//
// Backends live in sub-packages (sqlite, postgres, memstore); every backend
// must pass the conformance suite in package storetest against a real server.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on lock names.
const (
	// MaxLockNameLen is the longest lock name, in bytes, every backend accepts.
	MaxLockNameLen = 200
)

// Sentinel errors returned (possibly wrapped) by every backend.
var (
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("store: closed")
	// ErrInvalidLockName is returned for an empty, over-long or non-UTF-8 lock name.
	ErrInvalidLockName = errors.New("store: invalid lock name")
	// ErrUnavailable wraps failures to reach the store (network, server down,
	// timeouts). Callers retry with backoff.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrNotInitialized is returned (wrapped) by an open that was asked to
	// create nothing (no migration, or read-only) when none of the store's
	// tables, or not its file, exist: nothing has used the store yet, or
	// the caller named another one (another prefix, schema or path).
	// Engines that create nothing to open never return it.
	ErrNotInitialized = errors.New("store: not initialized")
)

// Holder identifies the instance that asks for leases.
type Holder struct {
	// ID is unique per process start.
	ID string
	// Info is a short, free-form description (JSON by convention: host, pid,
	// address, version) that status displays. Backends store it verbatim.
	Info string
}

// LeaseRef names one lease an instance believes it holds: renew and release
// succeed only when both the lock's current holder and token match.
type LeaseRef struct {
	Lock  string
	Token int64

	// Successor and Reserve matter only to Release on a store that
	// implements Handoffs: a non-empty Successor reserves the released lock
	// for that instance for Reserve (measured by the store's clock), during
	// which Acquire refuses it to every other holder. Other stores ignore
	// them: the lock is released to anyone.
	Successor string
	Reserve   time.Duration
}

// LockState is the store's view of one lock at the moment of a call.
type LockState struct {
	Lock string

	// Lease. Holder is empty when nobody holds the lock (never acquired, or
	// released). A lease whose TTL is not positive has expired even if Holder
	// is set.
	Holder     string
	HolderInfo string
	Token      int64     // token of the current or most recent lease; 0 if never acquired
	AcquiredAt time.Time // store clock; zero when free
	RenewedAt  time.Time // store clock; zero when free
	ExpiresAt  time.Time // store clock; zero when free
	// TTL is ExpiresAt minus the store's now at the time of the call. Callers
	// use it, not ExpiresAt, to schedule: it needs no agreement between clocks.
	TTL time.Duration

	// Acquired is set by Acquire on the locks this call acquired.
	Acquired bool
	// Revoked is set when the current lease was revoked by Disable: its holder
	// must stop the job and release. It can still renew (to keep the lease
	// while the job stops) but nobody else can acquire until it is released
	// or expires.
	Revoked bool

	// Control.
	Disabled  bool
	Reason    string
	ChangedBy string
	ChangedAt time.Time // store clock; zero if the control was never changed

	// The lease before this one, set by Acquire on the locks it acquired:
	// its holder and token, and whether it had expired (or was revoked and
	// expired) rather than been released. An expired predecessor is a
	// takeover: its holder crashed, hung or lost the store. PrevHolder is
	// empty when the lock was free (released, never held, or its record
	// deleted).
	PrevHolder  string
	PrevToken   int64
	PrevExpired bool

	// Hand-off (stores that implement Handoffs). HandoffRequested is set
	// while an operator's request to move the current lease is pending,
	// HandoffTo naming the instance asked for ("" for any other). After a
	// release with a successor, ReservedFor names the only instance that
	// may acquire the lock until ReservedTTL runs out (by the store's
	// clock); a reservation whose TTL is not positive has lapsed.
	HandoffRequested bool
	HandoffTo        string
	ReservedFor      string
	ReservedTTL      time.Duration
}

// Held reports whether the lock has an unexpired lease.
func (s LockState) Held() bool { return s.Holder != "" && s.TTL > 0 }

// RenewResult says what happened to one lease in a Renew call.
type RenewResult struct {
	Lock  string
	Token int64
	// Renewed is true when the lease was extended: the holder and token
	// matched and the lease had not expired.
	Renewed bool
	// TTL is the remaining lease after renewal, measured by the store.
	TTL time.Duration
	// Revoked and Disabled report the lock's control as seen by the renewal.
	// A renewed but revoked lease must be stopped and released.
	Revoked  bool
	Disabled bool
	// HandoffRequested reports a pending hand-off request (Handoffs): the
	// holder should stop its job and release the lock with HandoffTo as
	// its successor ("" for any other instance).
	HandoffRequested bool
	HandoffTo        string
}

// ControlChange is the result of Disable or Enable.
type ControlChange struct {
	// Changed is false when the lock was already in the requested state.
	Changed bool
	// State is the lock's state after the change.
	State LockState
}

// Store is the contract every backend implements. All methods are safe for
// concurrent use. Methods taking a slice perform one round trip (or one
// transaction for an embedded store) whatever its length; a nil or empty
// slice is a no-op.
type Store interface {
	// Acquire tries to take every named lock that has no unexpired lease and
	// is not disabled, for holder, with a lease of ttl measured by the store's
	// clock. Each new lease gets a token greater than every token ever issued
	// for that lock, even across deleted records and store restarts. The
	// check of the control and the take are one atomic step.
	//
	// It returns the state of every named lock (in any order); those taken by
	// this call have Acquired set. A lock the holder already holds is returned
	// unchanged, not re-acquired.
	Acquire(ctx context.Context, holder Holder, locks []string, ttl time.Duration) ([]LockState, error)

	// Renew extends, to ttl from the store's now, each lease that holderID
	// still holds with the given token and that has not expired. It returns
	// one result per ref.
	Renew(ctx context.Context, holderID string, leases []LeaseRef, ttl time.Duration) ([]RenewResult, error)

	// Release ends the named leases held by holderID with the given tokens, so
	// that another instance can acquire at once. A ref that does not match the
	// current holder and token is ignored. Backends that can push (Notifier)
	// announce the release.
	Release(ctx context.Context, holderID string, leases []LeaseRef) error

	// Disable marks the lock disabled with reason, creating its record if
	// needed, and revokes its current lease. by names who asked (for audit).
	Disable(ctx context.Context, lock, reason, by string) (ControlChange, error)

	// Enable clears the disabled mark. The lease, if any, is untouched: a
	// revoked lease stays revoked until released or expired.
	Enable(ctx context.Context, lock, by string) (ControlChange, error)

	// Locks returns the state of the named locks, or of every known lock when
	// names is empty, ordered by lock name. Unknown names are returned as free
	// and enabled.
	Locks(ctx context.Context, names ...string) ([]LockState, error)

	// Close releases the backend's resources. It does not release leases.
	Close() error
}

// ChangeKind says what a Change is about.
type ChangeKind string

// Kinds of changes a Notifier pushes.
const (
	// ChangeLease: a lease of Lock was acquired or released (including a
	// release reserved for a successor).
	ChangeLease ChangeKind = "lease"
	// ChangeControl: Lock was disabled or enabled, or a hand-off of its
	// lease was requested.
	ChangeControl ChangeKind = "control"
	// ChangeHistory: entries about Lock were appended to the history
	// (stores that implement History).
	ChangeHistory ChangeKind = "history"
	// ChangeMember: a member record was written for the first time, or
	// removed by Leave (stores that implement Membership). Lock is empty.
	ChangeMember ChangeKind = "member"
	// ChangeResync: the backend has lost, or may have lost, changes it
	// should have delivered since the subscription began: a burst larger
	// than it buffers, a subscriber that fell behind what the store
	// retains, a reconnect, a compacted watch. Lock is empty. A receiver
	// reads again everything it follows, as it did when it subscribed.
	ChangeResync ChangeKind = "resync"
)

// Change is one notification: something about Lock changed. Beyond its
// hints it carries no state: the receiver reads what it needs.
type Change struct {
	Kind ChangeKind
	Lock string

	// Hints about a ChangeLease, which a store may set so that receivers
	// skip a call they do not need in the busiest moment of a hand-off.
	// Zero values say nothing, and the receiver reads the lock as it would
	// without them; a hint that is set must be true of the commit it
	// announces. Holder and Token, set together, say that the change was
	// an acquisition by Holder of the lease with Token. ReservedFor says
	// that it was a release reserved for that instance (LeaseRef.Successor
	// with a positive Reserve).
	Holder      string
	Token       int64
	ReservedFor string

	// Revoked, on a ChangeControl, says that the change was a Disable
	// that revoked the lease with that token: its holder may stop the job
	// at once, without the renewal that would tell it. Zero says nothing.
	Revoked int64
}

// Acquisition reports whether c says it announces an acquisition, and by
// whom with which token.
func (c Change) Acquisition() (holder string, token int64, ok bool) {
	if c.Kind != ChangeLease || c.Holder == "" || c.Token <= 0 {
		return "", 0, false
	}
	return c.Holder, c.Token, true
}

// Notifier is an optional capability of stores that can push changes
// (PostgreSQL LISTEN/NOTIFY, Redis pub/sub, etcd watch, SQLite's notify
// table).
//
// Subscribe is called beside the executor's loops, never on them, with a
// context that lives as long as the subscription; the caller bounds the
// call itself with a timeout by cancelling that context, so Subscribe must
// return promptly once ctx is done. It must return only once it is
// listening: a change committed by any handle after it returned is
// delivered. Every change listed with ChangeKind is pushed, at or after
// its commit, or its loss is announced: where a backend drops or skips
// changes (a full buffer, rows pruned before they were read, a reconnect,
// a compaction), it sends one ChangeResync once it can, after which the
// changes flow again. A receiver acts on a resync as on a new
// subscription, so a loss costs one read of everything rather than a wait
// for the receiver's own schedule; followers still check on that
// schedule, for what no backend can see (a subscription that hangs, say).
// The channel is closed once ctx is done and the backend has let go of
// everything the subscription used, or earlier if the subscription fails
// for good; the caller then subscribes again.
type Notifier interface {
	Subscribe(ctx context.Context) (<-chan Change, error)
}

// LeaseHinter is an optional capability of Notifiers that set the hints of
// every lease change they push: Holder and Token on each acquisition and
// transfer, ReservedFor on each release reserved for a successor. From
// such a store, a lease change without hints announces a lease that ended
// with no successor (a release, an expiry), or several changes of the lock
// merged into one, never a lease given to the receiver alone; so a
// receiver may treat it as a lock that may be free. The executor then lets
// one member of the group, the first in line, try to take it at once, and
// the others a moment later. LeaseHints reports whether the handle sends
// them (a store may be configured not to, and a wrapper answers for the
// store it wraps).
type LeaseHinter interface {
	LeaseHints() bool
}

// HintsLeases reports whether v (a store, or a wrapper of one that passes
// the question on) declares with LeaseHinter that it hints every lease
// change.
func HintsLeases(v any) bool {
	h, ok := v.(LeaseHinter)
	return ok && h.LeaseHints()
}

// Handoffs is an optional capability of stores that can move a lease from
// one instance to another without disabling the lock: an operator's request
// that the holder sees in its renewal, and a release that reserves the lock
// for a named successor for a short time.
//
// A store that implements Handoffs also honours LeaseRef.Successor and
// LeaseRef.Reserve in Release, reports HandoffRequested and HandoffTo in
// RenewResult and LockState, and in Acquire refuses a lock reserved for
// another holder until the reservation lapses. A new lease, a Disable or
// the expiry of the lease clears a pending request.
type Handoffs interface {
	// Handoff asks the current holder of lock to hand it over to the
	// instance to ("" for any other instance), recording by for audit. It
	// returns the lock's state after the request. It fails with an error
	// wrapping ErrNotHeld when the lock has no unexpired lease, and
	// ErrLockDisabled when it is disabled. Stores that push (Notifier)
	// announce the request, so that the holder renews at once.
	Handoff(ctx context.Context, lock, to, by string) (LockState, error)
}

// Transfers is an optional capability of stores that implement Handoffs:
// a release that gives the lock to its successor in the same commit, so
// that a planned hand-off costs one durable write instead of two (the
// release, then the successor's acquisition), as in etcd's own election,
// where the next candidate only watches.
//
// Transfer ends each lease that holderID holds with the given token and,
// in the same atomic step, gives the lock to ref.Successor when the lease
// is unexpired and not revoked, the lock enabled, and, on a store that
// implements Membership, the successor has an unexpired member record.
// The successor gets a new lease of ttl (measured by the store's clock
// from the commit), a token greater than every token the lock ever had,
// HolderInfo its member record's Info (or "" on a store without
// Membership), and no pending hand-off request or reservation. A ref
// whose lease is revoked, whose lock is disabled, or whose successor has
// no member record (it left, or never announced itself) is released as
// Release would release it (reserved for the successor for ref.Reserve,
// if positive; a store that learns of the change only within its atomic
// step, as etcd's transaction does, may release it without the
// reservation). A ref without a Successor is released as by Release; a
// ref that does not match the current holder and token, or whose lease
// expired, is ignored.
//
// The member check is what lets an instance that shuts down find every
// lease given to it: once its Leave has committed, no transfer can give
// it another, so one read of its locks after Leave sees them all (the
// executor then releases them).
//
// The successor learns of its lease from the store's push (Notifier): the
// transfer is announced as a ChangeLease carrying the acquisition hints
// (Holder the successor, Token the new token) on stores that send hints.
// It did not ask for the lease, so it cannot count its trust window from
// a call of its own that preceded the commit: it reads the lock (Locks)
// after the push, and counts from the start of that read, with the TTL
// the read returned, as it would for any lease it saw.
type Transfers interface {
	Transfer(ctx context.Context, holderID string, leases []LeaseRef, ttl time.Duration) error
}

// Errors of Handoff.
var (
	// ErrNotHeld: the lock has no unexpired lease to hand over.
	ErrNotHeld = errors.New("store: lock has no master")
	// ErrLockDisabled: the lock is disabled.
	ErrLockDisabled = errors.New("store: lock is disabled")
)

// LeaseLimits is an optional capability of stores that cannot grant
// every lease duration (etcd grants whole seconds, at least its cluster's
// minimum TTL). The executor asks it at start and refuses a
// masterJobTolerance the store cannot honour.
type LeaseLimits interface {
	// CheckTTL returns an error wrapping ErrLeaseTooShort, naming the
	// store's rule, when it cannot grant leases of ttl. It may make a call
	// to learn the server's limit; other errors mean it could not tell.
	CheckTTL(ctx context.Context, ttl time.Duration) error
}

// ErrLeaseTooShort is returned (wrapped) by stores that cannot grant a
// lease as short as asked (LeaseLimits).
var ErrLeaseTooShort = errors.New("store: lease shorter than the store can grant")

// Member is one instance's announcement of itself (Membership).
type Member struct {
	// ID is the instance id, as Holder.ID.
	ID string
	// Info is the instance's description (JSON by convention: host, pid,
	// version, HTTP address, start time), as Holder.Info.
	Info string
	// Locks lists the locks the instance takes part in, sorted. Members
	// returns it only when asked (MemberFilter.WithLocks).
	Locks []string
	// LockCount is len(Locks), always returned.
	LockCount int
	// LockSetID identifies the set of Locks (a hash the caller computes):
	// instances with equal ids take part in the same locks. A backend may
	// rewrite the lock list only when it changes.
	LockSetID string
	// Masters is how many masterships the instance held when it last
	// announced itself.
	Masters int
	// Weight is the instance's share of the work relative to others
	// (1 when not set), for balancing.
	Weight float64
	// SeenAt is when the store last wrote the record (store clock), and TTL
	// the time left before it expires. Members never returns an expired
	// record.
	SeenAt time.Time
	TTL    time.Duration
	// RefreshLag is how long after SeenAt the member may have gone on
	// calling without the record being refreshed: zero where every
	// Acquire and Renew rewrites it; on a store where a refresh is a call
	// of its own (etcd's lease keepalive), the time a refresh waits for
	// since the one before. A reader judging whether the member is alive
	// counts its last call as up to RefreshLag after SeenAt.
	RefreshLag time.Duration
}

// MemberFilter selects what Members returns.
type MemberFilter struct {
	// Lock, if not empty, selects the members taking part in that lock.
	Lock string
	// WithLocks fills each Member's Locks.
	WithLocks bool
}

// Membership is an optional capability of stores that keep the list of live
// instances. An instance announces itself in the round trips it makes
// anyway: Announce records what to write, and every later Acquire and Renew
// made for that member's id through the same handle writes it in the same
// round trip (transaction, script or request), refreshing its TTL. A store
// whose refresh costs a call of its own may skip it while less than a
// third of the TTL has passed since the last; Members then says by how
// much a record may lag its member's calls (Member.RefreshLag). A record
// that is not refreshed expires by itself.
type Membership interface {
	// Announce sets the record that every later Acquire and Renew for m.ID
	// on this handle writes, with a TTL of ttl on the store's clock. It
	// makes no call itself and never blocks.
	Announce(m Member, ttl time.Duration)
	// Members returns the unexpired members matching f, sorted by ID.
	Members(ctx context.Context, f MemberFilter) ([]Member, error)
	// Leave deletes member id's record (on shutdown), so that others see
	// it gone at once, and stops this handle from writing it again.
	Leave(ctx context.Context, id string) error
}

// ValidateLockName returns an error wrapping ErrInvalidLockName when name is
// empty, longer than MaxLockNameLen bytes, not valid UTF-8, or contains
// control characters (Unicode category Cc) or format characters (category
// Cf: bidirectional overrides such as U+202E, zero-width characters, the
// byte order mark), which would make a name display as another.
func ValidateLockName(name string) error {
	if name == "" {
		return errInvalid(name, "empty")
	}
	if len(name) > MaxLockNameLen {
		return errInvalid(name, "longer than 200 bytes")
	}
	if !utf8.ValidString(name) {
		return errInvalid(name, "not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return errInvalid(name, "contains a control character")
		}
		if unicode.Is(unicode.Cf, r) {
			return errInvalid(name, fmt.Sprintf("contains the format character %U (Unicode category Cf: it changes how text displays)", r))
		}
	}
	return nil
}

func errInvalid(name, why string) error {
	if len(name) > 40 {
		name = string([]rune(name[:40])) + "..."
	}
	return &lockNameError{name: name, why: why}
}

type lockNameError struct{ name, why string }

func (e *lockNameError) Error() string {
	return "store: invalid lock name " + strconv.Quote(e.name) + ": " + e.why
}
func (e *lockNameError) Unwrap() error { return ErrInvalidLockName }

// EventKind names an entry of the history.
type EventKind string

// Event kinds: control changes and mastership transitions.
const (
	EventDisabled EventKind = "disabled"
	EventEnabled  EventKind = "enabled"
	EventAcquired EventKind = "acquired"
	EventReleased EventKind = "released"
	EventLost     EventKind = "lost"
	EventDemoted  EventKind = "demoted"
	// EventTakeover: an instance acquired a lock whose previous lease had
	// expired instead of being released (its holder crashed, hung or lost
	// the store). Reason names the previous holder and token.
	EventTakeover EventKind = "takeover"
	// EventHandoff: a hand-off was requested (Reason names from and to).
	EventHandoff EventKind = "handoff"
	// EventJoined and EventLeft: an instance started or stopped taking part
	// in a lock.
	EventJoined EventKind = "joined"
	EventLeft   EventKind = "left"
)

// Event is one entry of the audit history.
type Event struct {
	// ID is assigned by the store, increasing in insertion order.
	ID       int64
	Lock     string
	Kind     EventKind
	Instance string // the instance the event is about or that made the change
	Token    int64  // for mastership transitions
	Reason   string
	Remote   string    // remote address of a control request, if any
	At       time.Time // store clock, assigned by the store
}

// EventFilter selects history entries, newest first.
type EventFilter struct {
	Lock     string // "" for every lock
	BeforeID int64  // 0 (or less) for the newest; else entries with ID < BeforeID
	Limit    int    // at most this many (backends cap it; 0 means a default)
}

// Limits of the history.
const (
	// DefaultEventsLimit is how many entries Events returns when the
	// filter's Limit is not positive.
	DefaultEventsLimit = 100
	// MaxEventsLimit caps the filter's Limit: Events never returns more.
	MaxEventsLimit = 1000
	// DefaultHistoryLimit is how many entries a backend keeps unless told
	// otherwise (each backend's WithHistoryLimit option).
	DefaultHistoryLimit = 10000
)

// EventsLimit returns how many entries Events returns at most for a
// filter's Limit: DefaultEventsLimit when limit is not positive, limit
// capped at MaxEventsLimit otherwise.
func EventsLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultEventsLimit
	case limit > MaxEventsLimit:
		return MaxEventsLimit
	}
	return limit
}

// CleanText returns s unchanged when it is valid UTF-8 without NUL bytes;
// otherwise each invalid byte sequence and each NUL is replaced with U+FFFD.
// Backends pass the text fields of events through it before storing them
// (PostgreSQL text can hold neither), so that an entry is never refused for
// its content and every backend stores the same text.
func CleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// History is an optional capability of stores that keep an audit history of
// control changes and mastership transitions, with bounded retention.
//
// Entries are kept in insertion order under increasing IDs. Text fields are
// stored verbatim, after CleanText. Each backend keeps at most a configured
// number of entries (DefaultHistoryLimit unless its WithHistoryLimit option
// says otherwise), pruning the oldest as it appends; concurrent appends from
// several processes may exceed the bound briefly, until the next append.
type History interface {
	// AppendEvents records events in one round trip, in order; ID and At
	// are assigned by the store (At on the store's clock), whatever the
	// events carry. Every event must name a valid lock (ValidateLockName):
	// otherwise the call fails with an error wrapping ErrInvalidLockName
	// and appends nothing. Old entries beyond the retention are pruned. A
	// nil or empty slice is a no-op.
	AppendEvents(ctx context.Context, events []Event) error
	// Events returns entries matching f, newest first: at most
	// EventsLimit(f.Limit) of them. A non-empty f.Lock must be a valid lock
	// name.
	Events(ctx context.Context, f EventFilter) ([]Event, error)
}
