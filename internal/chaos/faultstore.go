//go:build linux

package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/masterjob/masterjob/store"
)

// faultStore wraps an embedded store (SQLite) to inject, into one instance,
// the faults a network would cause for a server store: every call fails at
// once ("fail"), or hangs until its context ends or the outage is over
// ("hang"), or is delayed. It can also close and reopen the underlying
// handle. There is no network between a SQLite instance and its file, so
// this is the honest substitute: it exercises the executor's handling of a
// failing or slow store, not a real network partition.
//
// It forwards the store's notifications (store.Notifier), its member list
// (store.Membership: so that balancing and the successors of a graceful
// shutdown run in SQLite's chaos runs too; before, the wrapper hid the list
// and they never did) and hand-offs, and treats a
// subscription as a server store's would be treated by a network outage:
// an outage that begins, or a reopen, ends every subscription (its channel
// closes), and Subscribe during an outage fails or hangs like every other
// call. So the executor's resubscription runs under the same faults as its
// other store calls.
type faultStore struct {
	reopen func() (store.Store, error)

	mu       sync.Mutex
	st       store.Store
	mode     string // "", "fail" or "hang"
	latency  time.Duration
	restored chan struct{}        // closed when the current outage ends
	subs     []context.CancelFunc // ends the current subscriptions
	// member is the instance's announcement (store.Membership), given
	// again to a reopened handle: the executor announces once.
	member    store.Member
	memberTTL time.Duration
	announced bool
}

var (
	_ store.Store       = (*faultStore)(nil)
	_ store.Notifier    = (*faultStore)(nil)
	_ store.Membership  = (*faultStore)(nil)
	_ store.Handoffs    = (*faultStore)(nil)
	_ store.LeaseHinter = (*faultStore)(nil)
)

func newFaultStore(st store.Store, reopen func() (store.Store, error)) *faultStore {
	return &faultStore{st: st, reopen: reopen, restored: make(chan struct{})}
}

// setOutage sets the outage mode and added latency; mode "" ends an outage.
func (f *faultStore) setOutage(mode string, latency time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode != "" && mode == "" {
		close(f.restored)
		f.restored = make(chan struct{})
	}
	if f.mode == "" && mode != "" {
		f.endSubscriptions()
	}
	f.mode, f.latency = mode, latency
}

// endSubscriptions ends every subscription; f.mu is held.
func (f *faultStore) endSubscriptions() {
	for _, cancel := range f.subs {
		cancel()
	}
	f.subs = nil
}

// reopenStore closes the handle and opens a new one; calls in flight on the
// old handle fail.
func (f *faultStore) reopenStore() error {
	st, err := f.reopen()
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.st
	f.st = st
	f.endSubscriptions()
	if ms, ok := st.(store.Membership); ok && f.announced {
		ms.Announce(f.member, f.memberTTL)
	}
	f.mu.Unlock()
	return old.Close()
}

// Announce implements store.Membership on the handle in use, and keeps the
// announcement for a reopened one. Like the store's, it makes no call.
func (f *faultStore) Announce(m store.Member, ttl time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.member, f.memberTTL, f.announced = m, ttl, true
	if ms, ok := f.st.(store.Membership); ok {
		ms.Announce(m, ttl)
	}
}

// Members implements store.Membership, after the outage or latency in
// force.
func (f *faultStore) Members(ctx context.Context, filter store.MemberFilter) ([]store.Member, error) {
	st, err := f.enter(ctx, "members")
	if err != nil {
		return nil, err
	}
	ms, ok := st.(store.Membership)
	if !ok {
		return nil, fmt.Errorf("chaos: members: %T keeps no member list", st)
	}
	return ms.Members(ctx, filter)
}

// Leave implements store.Membership, after the outage or latency in force.
func (f *faultStore) Leave(ctx context.Context, id string) error {
	st, err := f.enter(ctx, "leave")
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.announced = false
	f.mu.Unlock()
	ms, ok := st.(store.Membership)
	if !ok {
		return fmt.Errorf("chaos: leave: %T keeps no member list", st)
	}
	return ms.Leave(ctx, id)
}

// Handoff implements store.Handoffs, after the outage or latency in force.
func (f *faultStore) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	st, err := f.enter(ctx, "handoff")
	if err != nil {
		return store.LockState{}, err
	}
	ho, ok := st.(store.Handoffs)
	if !ok {
		return store.LockState{}, fmt.Errorf("chaos: handoff: %T cannot hand off", st)
	}
	return ho.Handoff(ctx, lock, to, by)
}

// LeaseHints answers for the store in use (store.LeaseHinter); a reopened
// handle is of the same store.
func (f *faultStore) LeaseHints() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return store.HintsLeases(f.st)
}

// Subscribe subscribes to the notifications of the store in use, after the
// outage or latency in force; the subscription ends with ctx, or when an
// outage begins or the handle is reopened.
func (f *faultStore) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	st, err := f.enter(ctx, "subscribe")
	if err != nil {
		return nil, err
	}
	n, ok := st.(store.Notifier)
	if !ok {
		return nil, fmt.Errorf("chaos: subscribe: %T cannot notify", st)
	}
	ctx, cancel := context.WithCancel(ctx)
	ch, err := n.Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	f.mu.Lock()
	f.subs = append(f.subs, cancel)
	f.mu.Unlock()
	return ch, nil
}

// enter applies the fault in force and returns the store to call.
func (f *faultStore) enter(ctx context.Context, op string) (store.Store, error) {
	f.mu.Lock()
	mode, lat, restored := f.mode, f.latency, f.restored
	f.mu.Unlock()
	switch mode {
	case "fail":
		return nil, fmt.Errorf("chaos: %s: injected outage: %w", op, store.ErrUnavailable)
	case "hang":
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("chaos: %s: injected hang: %w: %w", op, store.ErrUnavailable, ctx.Err())
		case <-restored:
		}
	}
	if lat > 0 {
		t := time.NewTimer(lat)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("chaos: %s: injected latency: %w: %w", op, store.ErrUnavailable, ctx.Err())
		case <-t.C:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, nil
}

func (f *faultStore) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	st, err := f.enter(ctx, "acquire")
	if err != nil {
		return nil, err
	}
	return st.Acquire(ctx, h, locks, ttl)
}

func (f *faultStore) Renew(ctx context.Context, id string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	st, err := f.enter(ctx, "renew")
	if err != nil {
		return nil, err
	}
	return st.Renew(ctx, id, leases, ttl)
}

func (f *faultStore) Release(ctx context.Context, id string, leases []store.LeaseRef) error {
	st, err := f.enter(ctx, "release")
	if err != nil {
		return err
	}
	return st.Release(ctx, id, leases)
}

func (f *faultStore) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	st, err := f.enter(ctx, "disable")
	if err != nil {
		return store.ControlChange{}, err
	}
	return st.Disable(ctx, lock, reason, by)
}

func (f *faultStore) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	st, err := f.enter(ctx, "enable")
	if err != nil {
		return store.ControlChange{}, err
	}
	return st.Enable(ctx, lock, by)
}

func (f *faultStore) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	st, err := f.enter(ctx, "locks")
	if err != nil {
		return nil, err
	}
	return st.Locks(ctx, names...)
}

func (f *faultStore) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endSubscriptions()
	return f.st.Close()
}
