package masterjob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/fnv"
	"slices"
	"time"

	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store"
)

// Leader is what an instance knows of the master of a lock it takes part
// in: learnt from its own checks and renewals and from the store's pushes,
// with no round trip of its own.
type Leader struct {
	// Lock is the lock name.
	Lock string
	// Instance is the master's instance id; empty when the lock has no
	// master (free, expired, or disabled).
	Instance string
	// Info describes the master (host, pid, address, version), as it
	// announced itself.
	Info InstanceInfo
	// Token is the master's fencing token (0 without a master).
	Token int64
	// Self is true when this instance is the master.
	Self bool
	// Disabled reports that the lock is disabled.
	Disabled bool
	// TTL is the master's lease time left when observed, by the store's
	// clock; 0 when unknown or without a master.
	TTL time.Duration
	// ObservedAt is when this instance learnt it (time.Now): how fresh the
	// knowledge is.
	ObservedAt time.Time
}

// same reports whether l and o name the same mastership.
func (l Leader) same(o Leader) bool {
	return l.Instance == o.Instance && l.Token == o.Token && l.Disabled == o.Disabled
}

// LeaderObserver is an optional interface of an Observer (WithObserver):
// an observer that implements it is told, from the executor's goroutine,
// each time the master of a lock this instance takes part in changes, as
// client-go's OnNewLeader callback and etcd's Election.Observe do. The
// change is seen within one store round trip after it happened on stores
// that push (PostgreSQL, SQLite, etcd, memstore), 100 ms later when the push
// says that another instance took the lock (the read then waits for the
// new master's start), and at the next check otherwise. LeaderChanged must
// not block.
type LeaderObserver interface {
	LeaderChanged(l Leader)
}

// Leader returns the latest known master of lock, which must be registered
// with StartMaster; ok is false for a lock that is not registered or not
// yet observed (Run has not checked it yet).
func (e *Executor) Leader(lock string) (l Leader, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l, ok = e.leaders[lock]
	return l, ok
}

// setLeader records the master of a lock and tells the observers when it
// changed. Called from loops.
func (e *Executor) setLeader(l Leader) {
	l.ObservedAt = time.Now()
	e.mu.Lock()
	prev, seen := e.leaders[l.Lock]
	e.leaders[l.Lock] = l
	e.mu.Unlock()
	if seen && prev.same(l) {
		return
	}
	if lo, ok := e.obs.(LeaderObserver); ok {
		lo.LeaderChanged(l)
	}
}

// leaderOf turns a lock's state into a Leader, parsing its holder's
// description with infos.
func leaderOf(s store.LockState, self string, infos infoCache) Leader {
	l := Leader{Lock: s.Lock, Disabled: s.Disabled}
	if s.Held() {
		l.Instance, l.Token, l.TTL = s.Holder, s.Token, s.TTL
		l.Info, _ = infos.parse(s.HolderInfo)
		l.Self = s.Holder == self
	}
	return l
}

// infoCache remembers parsed instance descriptions (InstanceInfo) by their
// text. A check of 10,000 locks held by a handful of instances parsed the
// same few JSON objects 10,000 times, a fifth of an instance's CPU at that
// scale. Used by one goroutine; a nil cache parses every time.
type infoCache map[string]parsedInfo

type parsedInfo struct {
	info InstanceInfo
	ok   bool
}

// maxCachedInfos bounds the cache: descriptions change only when an
// instance restarts, so it is cleared when full rather than evicted.
const maxCachedInfos = 1024

// parse returns parseInstanceInfo(raw), from the cache when it can.
func (c infoCache) parse(raw string) (InstanceInfo, bool) {
	if c == nil {
		return parseInstanceInfo(raw)
	}
	if p, ok := c[raw]; ok {
		return p.info, p.ok
	}
	if len(c) >= maxCachedInfos {
		clear(c)
	}
	info, ok := parseInstanceInfo(raw)
	c[raw] = parsedInfo{info, ok}
	return info, ok
}

// ErrHandoffUnsupported is returned by Handoff when the store cannot hand
// a lease over (it does not implement store.Handoffs).
var ErrHandoffUnsupported = errors.New("masterjob: the store does not support hand-offs")

// Handoff asks the master of lock, on whichever instance it runs, to hand
// the lock over without disabling it: the master stops its job, then
// releases the lease reserved for the instance to (for a short while; ""
// for any other instance), and does not take the lock back soon unless no
// other instance takes part in it. The request is recorded as made by
// this instance. It fails with an error wrapping store.ErrNotHeld when the
// lock has no master, store.ErrLockDisabled when it is disabled, and
// ErrHandoffUnsupported when the store cannot do it.
func (e *Executor) Handoff(ctx context.Context, lock, to string) (store.LockState, error) {
	ho, ok := e.st.(store.Handoffs)
	if !ok {
		return store.LockState{}, ErrHandoffUnsupported
	}
	return ho.Handoff(ctx, lock, to, e.holder.ID)
}

// handoffReserve is how long a lock released to a named successor stays
// reserved for it: long enough for a live successor, woken by the store's
// push, to acquire it even when its checks carry thousands of locks; short
// enough that a dead one keeps the lock without a master no longer than a
// lease (or 5 s).
func handoffReserve(cfg Config) time.Duration {
	return min(cfg.Tolerance, 5*time.Second)
}

// memberStaleAfter is how long a live member's record can go unwritten at
// most, as far as this instance can tell: its longest check interval (a
// follower writes its record at each check) and a heartbeat of slack for
// the call.
func (e *Executor) memberStaleAfter() time.Duration {
	return e.longestOf(func(c Config) time.Duration { return c.CheckMasterInterval }) +
		e.longestOf(func(c Config) time.Duration { return c.HeartbeatInterval })
}

// longestOf returns the largest f of the executor's timing and of every
// registered lock's. It looks at each distinct timing once, not at each
// lock: it runs for every lock of a suspect and every release to a
// successor, and a pass over thousands of locks each time made those
// quadratic.
func (e *Executor) longestOf(f func(Config) time.Duration) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	longest := f(e.cfg)
	for cfg := range e.timings {
		longest = max(longest, f(cfg))
	}
	return longest
}

// memberTTL is the lifetime of this instance's member record: it is
// refreshed by every check and renewal, and a follower checks at least
// once per check interval.
func (e *Executor) memberTTL() time.Duration {
	return 2 * e.longestOf(func(c Config) time.Duration { return c.CheckMasterInterval + c.Tolerance })
}

// announce records, on stores with store.Membership, the member record that
// the next check or renewal writes in its round trip. Cheap: no call.
func (e *Executor) announce() {
	ms, ok := e.st.(store.Membership)
	if !ok {
		return
	}
	ttl := e.memberTTL()
	e.mu.Lock()
	if e.left {
		e.mu.Unlock()
		return
	}
	if e.lockSetDirty {
		e.lockSet = e.lockSet[:0]
		for l := range e.jobs {
			e.lockSet = append(e.lockSet, l)
		}
		slices.Sort(e.lockSet)
		e.lockSetID = lockSetID(e.lockSet)
		e.lockSetDirty = false
	}
	m := store.Member{
		ID:        e.holder.ID,
		Info:      e.holder.Info,
		Locks:     e.lockSet,
		LockCount: len(e.lockSet),
		LockSetID: e.lockSetID,
		Masters:   len(e.masters),
		Weight:    e.weight,
	}
	e.mu.Unlock()
	ms.Announce(m, ttl)
}

// leave removes this instance's member record at the end of Run.
func (e *Executor) leave() {
	ms, ok := e.st.(store.Membership)
	if !ok {
		return
	}
	e.mu.Lock()
	e.left = true
	e.mu.Unlock()
	// The releases are done: no successor is named from the list any more,
	// and this instance's own Leave is pushed to it too.
	e.urgentMembers.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	e.markLocks("leave.sent")
	defer e.markLocks("leave.done")
	if err := ms.Leave(ctx, e.holder.ID); err != nil {
		e.log.Warn("cannot remove this instance from the store's member list; it expires by itself", "err", err)
		return
	}
	e.releaseGiven(ctx)
}

// markLocks makes a trace mark of event for every lock with a job, when
// tracing is on.
func (e *Executor) markLocks(event string) {
	if !trace.Enabled() {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for l := range e.jobs {
		trace.Mark(event, l)
	}
}

// releaseGiven releases, once this instance has left the member list, the
// leases peers gave it (store.Transfers) that its loops never ran nor let go: given
// as it shut down, they would leave their locks without a master until
// they expire. Once Leave has committed no transfer can give it another,
// so this one read finds them all. Leases whose jobs ran are not touched:
// those still held belong to jobs that did not stop in time (abandon),
// which may still run.
func (e *Executor) releaseGiven(ctx context.Context) {
	if _, ok := e.st.(store.Transfers); !ok {
		return
	}
	e.mu.Lock()
	locks := make([]string, 0, len(e.jobs))
	for l := range e.jobs {
		locks = append(locks, l)
	}
	e.mu.Unlock()
	if len(locks) == 0 {
		return
	}
	states, err := e.st.Locks(ctx, locks...)
	if err != nil {
		e.log.Warn("cannot read which leases peers gave this instance as it left; any expire by themselves", "err", err)
		return
	}
	var refs []store.LeaseRef
	for _, s := range states {
		if s.Holder == e.holder.ID && s.TTL > 0 && s.Token > e.settledToken(s.Lock) {
			refs = append(refs, store.LeaseRef{Lock: s.Lock, Token: s.Token})
		}
	}
	if len(refs) == 0 {
		return
	}
	if err := e.st.Release(ctx, e.holder.ID, refs); err != nil {
		e.log.Warn("cannot release the leases peers gave this instance as it left; they expire by themselves", "leases", len(refs), "err", err)
		return
	}
	e.log.Info("released the leases peers gave this instance as it left", "leases", len(refs))
}

// leaveTimeout bounds the removal of the member record at shutdown.
const leaveTimeout = 2 * time.Second

// lockSetID identifies a sorted set of lock names.
func lockSetID(locks []string) string {
	h := sha256.New()
	for _, l := range locks {
		h.Write([]byte(l))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// rank is the rendezvous (highest random weight) score of lock for
// instance: every instance ranks the locks differently, so that instances
// limited to a share of the free locks prefer different ones.
func rank(instance, lock string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(instance))
	h.Write([]byte{0})
	h.Write([]byte(lock))
	return h.Sum64()
}
