//go:build linux

package bench

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/masterjob/masterjob/store"
)

// CountingStore wraps a store and counts its calls. On SQLite every call is
// one transaction on the database file: the embedded store's equivalent of
// a round trip.
type CountingStore struct {
	store.Store
	acquire, renew, release, control, locks atomic.Int64
}

// countingNotifier is a CountingStore whose store can push.
type countingNotifier struct {
	*CountingStore
	n store.Notifier
}

// Subscribe forwards to the wrapped store; subscriptions are not counted
// (the PostgreSQL proxy counts the LISTEN connection's traffic).
func (c countingNotifier) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return c.n.Subscribe(ctx)
}

// LeaseHints answers for the wrapped store (store.LeaseHinter).
func (c countingNotifier) LeaseHints() bool { return store.HintsLeases(c.n) }

// countingCluster is a CountingStore whose store pushes, keeps a member
// list and hands leases off: the executor keeps balancing and hand-offs.
// Members reads are counted with Locks (they are reads the executor makes).
type countingCluster struct {
	countingNotifier
	m store.Membership
	h store.Handoffs
}

func (c countingCluster) Announce(m store.Member, ttl time.Duration) { c.m.Announce(m, ttl) }

func (c countingCluster) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	c.locks.Add(1)
	return c.m.Members(ctx, f)
}

func (c countingCluster) Leave(ctx context.Context, id string) error { return c.m.Leave(ctx, id) }

func (c countingCluster) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	c.control.Add(1)
	return c.h.Handoff(ctx, lock, to, by)
}

// NewCountingStore wraps st. The returned store implements store.Notifier
// when st does, so the executor keeps its push path, and store.Membership
// and store.Handoffs too when st implements all three, so that it keeps
// balancing.
func NewCountingStore(st store.Store) (*CountingStore, store.Store) {
	c := &CountingStore{Store: st}
	n, push := st.(store.Notifier)
	m, members := st.(store.Membership)
	h, handoffs := st.(store.Handoffs)
	switch {
	case push && members && handoffs:
		return c, countingCluster{countingNotifier{c, n}, m, h}
	case push:
		return c, countingNotifier{c, n}
	}
	return c, c
}

// Calls is a snapshot of the call counts.
type Calls struct {
	Acquire, Renew, Release, Control, Locks int64
}

// Total is the number of calls.
func (c Calls) Total() int64 { return c.Acquire + c.Renew + c.Release + c.Control + c.Locks }

// Sub returns c - o.
func (c Calls) Sub(o Calls) Calls {
	return Calls{c.Acquire - o.Acquire, c.Renew - o.Renew, c.Release - o.Release, c.Control - o.Control, c.Locks - o.Locks}
}

// Calls returns the counts now.
func (c *CountingStore) Calls() Calls {
	return Calls{c.acquire.Load(), c.renew.Load(), c.release.Load(), c.control.Load(), c.locks.Load()}
}

// Acquire counts and forwards the call.
func (c *CountingStore) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	c.acquire.Add(1)
	return c.Store.Acquire(ctx, h, locks, ttl)
}

// Renew counts and forwards the call.
func (c *CountingStore) Renew(ctx context.Context, id string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	c.renew.Add(1)
	return c.Store.Renew(ctx, id, leases, ttl)
}

// Release counts and forwards the call.
func (c *CountingStore) Release(ctx context.Context, id string, leases []store.LeaseRef) error {
	c.release.Add(1)
	return c.Store.Release(ctx, id, leases)
}

// Disable counts and forwards the call.
func (c *CountingStore) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	c.control.Add(1)
	return c.Store.Disable(ctx, lock, reason, by)
}

// Enable counts and forwards the call.
func (c *CountingStore) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	c.control.Add(1)
	return c.Store.Enable(ctx, lock, by)
}

// Locks counts and forwards the call.
func (c *CountingStore) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	c.locks.Add(1)
	return c.Store.Locks(ctx, names...)
}
