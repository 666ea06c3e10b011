// Package memstore is an in-process store.Store: leases and controls live in
// memory and its clock is the process's. It serves single-process programs
// and tests (it passes the storetest conformance suite, and under
// testing/synctest its clock is the bubble's fake clock). It is not shared
// between processes.
package memstore

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Store is an in-memory store.Store, store.Notifier and store.History.
type Store struct {
	st     *state
	mu     sync.Mutex
	closed bool
	// announce holds, per member id, the record this handle writes with
	// each Acquire and Renew for it (Membership).
	announce map[string]announcement
}

var (
	_ store.Store      = (*Store)(nil)
	_ store.Notifier   = (*Store)(nil)
	_ store.History    = (*Store)(nil)
	_ store.Handoffs   = (*Store)(nil)
	_ store.Membership = (*Store)(nil)
	_ store.Transfers  = (*Store)(nil)
)

type state struct {
	mu        sync.Mutex
	now       func() time.Time
	lastToken int64
	locks     map[string]*record
	subs      map[*subscriber]struct{}
	fail      error // injected failure, see SetFailure
	delay     time.Duration

	history      []store.Event // oldest first
	lastEventID  int64
	historyLimit int

	members map[string]*memberRecord

	noHints bool // see WithoutHints
}

type memberRecord struct {
	m       store.Member // Locks sorted; SeenAt, TTL unset
	seenAt  time.Time
	expires time.Time
}

// announcement is what a handle writes for a member with each Acquire and
// Renew.
type announcement struct {
	m   store.Member
	ttl time.Duration
}

type record struct {
	holder, holderInfo               string
	token                            int64
	acquiredAt, renewedAt, expiresAt time.Time
	revoked, disabled                bool
	reason, changedBy                string
	changedAt                        time.Time

	handoff        bool // a hand-off of the current lease was requested
	handoffTo      string
	reservedFor    string // after a release to a successor
	reservedExpiry time.Time
}

// Option configures New.
type Option func(*state)

// WithClock replaces time.Now as the store's clock.
func WithClock(now func() time.Time) Option { return func(s *state) { s.now = now } }

// WithoutHints makes the store push lease changes without their hints
// (store.Change's Holder, Token and ReservedFor), as a store that cannot
// say them does: for tests of the receivers' behaviour without them.
func WithoutHints() Option { return func(s *state) { s.noHints = true } }

// WithHistoryLimit sets how many history entries the store keeps (default
// store.DefaultHistoryLimit); older ones are dropped as new ones arrive. A
// limit below 1 is taken as 1.
func WithHistoryLimit(n int) Option { return func(s *state) { s.historyLimit = max(n, 1) } }

// New returns an empty store.
func New(opts ...Option) *Store {
	st := &state{
		now: time.Now, locks: map[string]*record{}, subs: map[*subscriber]struct{}{},
		historyLimit: store.DefaultHistoryLimit, members: map[string]*memberRecord{},
	}
	for _, o := range opts {
		o(st)
	}
	return &Store{st: st}
}

// Reopen returns a new handle on the same data, as reopening a database
// would. Closing one handle does not affect the others.
func (s *Store) Reopen() *Store { return &Store{st: s.st} }

// DeleteRecords removes the records of the named locks, as an operator
// deleting rows would. Tokens keep growing afterwards.
func (s *Store) DeleteRecords(locks ...string) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	for _, l := range locks {
		delete(s.st.locks, l)
	}
}

// SetFailure makes every following call fail with err (wrapped in
// store.ErrUnavailable) until SetFailure(nil), simulating an outage.
func (s *Store) SetFailure(err error) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.fail = err
}

// SetDelay makes every following call take d longer (or until its context
// is done), simulating a slow store. The call's effect happens after the
// delay.
func (s *Store) SetDelay(d time.Duration) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.delay = d
}

// begin checks the handle and context, applies an injected delay, and
// returns with the state locked.
func (s *Store) begin(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return store.ErrClosed
	}
	s.st.mu.Lock()
	d := s.st.delay
	s.st.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("memstore: %w: %w", store.ErrUnavailable, context.Cause(ctx))
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: %w", context.Cause(ctx))
	}
	s.st.mu.Lock()
	if s.st.fail != nil {
		err := s.st.fail
		s.st.mu.Unlock()
		return fmt.Errorf("memstore: %w: %w", store.ErrUnavailable, err)
	}
	return nil
}

func (st *state) view(name string, r *record, now time.Time) store.LockState {
	ls := store.LockState{Lock: name}
	if r == nil {
		return ls
	}
	ls.Token = r.token
	ls.Disabled, ls.Reason, ls.ChangedBy, ls.ChangedAt = r.disabled, r.reason, r.changedBy, r.changedAt
	if r.holder != "" {
		ls.Holder, ls.HolderInfo = r.holder, r.holderInfo
		ls.AcquiredAt, ls.RenewedAt, ls.ExpiresAt = r.acquiredAt, r.renewedAt, r.expiresAt
		ls.TTL = r.expiresAt.Sub(now)
		ls.Revoked = r.revoked
		if ls.TTL > 0 {
			ls.HandoffRequested, ls.HandoffTo = r.handoff, r.handoffTo
		}
	}
	if r.reservedFor != "" && r.reservedExpiry.After(now) {
		ls.ReservedFor, ls.ReservedTTL = r.reservedFor, r.reservedExpiry.Sub(now)
	}
	return ls
}

// reservedAgainst reports whether a reservation keeps holder from
// acquiring r.
func (r *record) reservedAgainst(holder string, now time.Time) bool {
	return r.reservedFor != "" && r.reservedFor != holder && r.reservedExpiry.After(now)
}

func (r *record) free(now time.Time) bool { return r.holder == "" || !r.expiresAt.After(now) }

func validate(locks []string) error {
	for _, l := range locks {
		if err := store.ValidateLockName(l); err != nil {
			return err
		}
	}
	return nil
}

// Acquire implements store.Store.
func (s *Store) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	if err := validate(locks); err != nil {
		return nil, err
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	out := make([]store.LockState, 0, len(locks))
	var acquired []store.Change
	for _, name := range locks {
		r := s.st.locks[name]
		if r == nil {
			r = &record{}
			s.st.locks[name] = r
		}
		if r.free(now) && !r.disabled && !r.reservedAgainst(h.ID, now) {
			prev, prevToken, expired := r.holder, r.token, r.holder != ""
			s.st.take(r, h, now, ttl)
			ls := s.st.view(name, r, now)
			ls.Acquired = true
			if expired {
				ls.PrevHolder, ls.PrevToken, ls.PrevExpired = prev, prevToken, true
			}
			out = append(out, ls)
			acquired = append(acquired, store.Change{Kind: store.ChangeLease, Lock: name, Holder: h.ID, Token: r.token})
			continue
		}
		out = append(out, s.st.view(name, r, now))
	}
	s.writeMember(h.ID, now)
	s.st.push(acquired...)
	return out, nil
}

// Renew implements store.Store.
func (s *Store) Renew(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	out := make([]store.RenewResult, 0, len(leases))
	for _, ref := range leases {
		res := store.RenewResult{Lock: ref.Lock, Token: ref.Token}
		r := s.st.locks[ref.Lock]
		if r != nil {
			res.Disabled = r.disabled
			if r.holder == holderID && r.token == ref.Token && r.expiresAt.After(now) {
				r.renewedAt, r.expiresAt = now, now.Add(ttl)
				res.Renewed, res.TTL, res.Revoked = true, ttl, r.revoked
				res.HandoffRequested, res.HandoffTo = r.handoff, r.handoffTo
			}
		}
		out = append(out, res)
	}
	s.writeMember(holderID, now)
	return out, nil
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, holderID string, leases []store.LeaseRef) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	var released []store.Change
	now := s.st.now()
	for _, ref := range leases {
		r := s.st.locks[ref.Lock]
		if r != nil && r.holder == holderID && r.token == ref.Token {
			released = append(released, r.release(ref, now))
		}
	}
	s.st.push(released...)
	s.st.mu.Unlock()
	return nil
}

// Transfer implements store.Transfers.
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	var changes []store.Change
	now := s.st.now()
	for _, ref := range leases {
		r := s.st.locks[ref.Lock]
		if r == nil || r.holder != holderID || r.token != ref.Token || r.free(now) {
			continue
		}
		succ := s.st.members[ref.Successor]
		if ref.Successor == "" || r.revoked || r.disabled || succ == nil || !succ.expires.After(now) {
			changes = append(changes, r.release(ref, now))
			continue
		}
		s.st.take(r, store.Holder{ID: ref.Successor, Info: succ.m.Info}, now, ttl)
		changes = append(changes, store.Change{Kind: store.ChangeLease, Lock: ref.Lock, Holder: ref.Successor, Token: r.token})
	}
	s.st.push(changes...)
	s.st.mu.Unlock()
	return nil
}

// take gives r a new lease for h, of ttl from now, with the next token;
// the control stays, a hand-off request and a reservation end.
func (st *state) take(r *record, h store.Holder, now time.Time, ttl time.Duration) {
	st.lastToken++
	*r = record{
		holder: h.ID, holderInfo: h.Info, token: st.lastToken,
		acquiredAt: now, renewedAt: now, expiresAt: now.Add(ttl),
		disabled: r.disabled, reason: r.reason, changedBy: r.changedBy, changedAt: r.changedAt,
	}
}

// release ends r's lease, reserving the lock for ref's successor when it
// asks for a reservation, and returns the change to push.
func (r *record) release(ref store.LeaseRef, now time.Time) store.Change {
	r.holder, r.holderInfo, r.revoked = "", "", false
	r.acquiredAt, r.renewedAt, r.expiresAt = time.Time{}, time.Time{}, time.Time{}
	r.handoff, r.handoffTo = false, ""
	r.reservedFor, r.reservedExpiry = "", time.Time{}
	if ref.Successor != "" && ref.Reserve > 0 {
		r.reservedFor, r.reservedExpiry = ref.Successor, now.Add(ref.Reserve)
	}
	return store.Change{Kind: store.ChangeLease, Lock: ref.Lock, ReservedFor: r.reservedFor}
}

// Disable implements store.Store.
func (s *Store) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	return s.setControl(ctx, lock, true, reason, by)
}

// Enable implements store.Store.
func (s *Store) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	return s.setControl(ctx, lock, false, "", by)
}

func (s *Store) setControl(ctx context.Context, lock string, disabled bool, reason, by string) (store.ControlChange, error) {
	if err := store.ValidateLockName(lock); err != nil {
		return store.ControlChange{}, err
	}
	if err := s.begin(ctx); err != nil {
		return store.ControlChange{}, err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	r := s.st.locks[lock]
	if r == nil {
		r = &record{}
		s.st.locks[lock] = r
	}
	changed := r.disabled != disabled
	if changed {
		r.disabled, r.reason, r.changedBy, r.changedAt = disabled, reason, by, now
		if disabled && !r.free(now) {
			r.revoked = true
		}
		if disabled {
			r.handoff, r.handoffTo = false, ""
		}
		c := store.Change{Kind: store.ChangeControl, Lock: lock}
		if disabled && r.revoked {
			c.Revoked = r.token
		}
		s.st.push(c)
	}
	return store.ControlChange{Changed: changed, State: s.st.view(lock, r, now)}, nil
}

// Locks implements store.Store.
func (s *Store) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	if len(names) == 0 {
		for n := range s.st.locks {
			names = append(names, n)
		}
	} else {
		names = append([]string(nil), names...)
	}
	sort.Strings(names)
	out := make([]store.LockState, 0, len(names))
	for _, n := range names {
		out = append(out, s.st.view(n, s.st.locks[n], now))
	}
	return out, nil
}

// AppendEvents implements store.History.
func (s *Store) AppendEvents(ctx context.Context, events []store.Event) error {
	for _, e := range events {
		if err := store.ValidateLockName(e.Lock); err != nil {
			return fmt.Errorf("memstore: append events: %w", err)
		}
	}
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	for _, e := range events {
		s.st.lastEventID++
		s.st.history = append(s.st.history, store.Event{
			ID:       s.st.lastEventID,
			Lock:     e.Lock,
			Kind:     store.EventKind(store.CleanText(string(e.Kind))),
			Instance: store.CleanText(e.Instance),
			Token:    e.Token,
			Reason:   store.CleanText(e.Reason),
			Remote:   store.CleanText(e.Remote),
			At:       now,
		})
	}
	locks := make([]string, 0, len(events))
	for _, e := range events {
		if !slices.Contains(locks, e.Lock) {
			locks = append(locks, e.Lock)
		}
	}
	s.st.notify(store.ChangeHistory, locks...)
	if over := len(s.st.history) - s.st.historyLimit; over > 0 {
		// Amortised O(1): append reallocates (copying only the kept
		// entries) once the backing array is full.
		clear(s.st.history[:over])
		s.st.history = s.st.history[over:]
	}
	return nil
}

// Events implements store.History.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	if f.Lock != "" {
		if err := store.ValidateLockName(f.Lock); err != nil {
			return nil, fmt.Errorf("memstore: events: %w", err)
		}
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	limit := store.EventsLimit(f.Limit)
	out := []store.Event{}
	for i := len(s.st.history) - 1; i >= 0 && len(out) < limit; i-- {
		e := s.st.history[i]
		if (f.BeforeID > 0 && e.ID >= f.BeforeID) || (f.Lock != "" && e.Lock != f.Lock) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Subscribe implements store.Notifier.
func (s *Store) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	sub := &subscriber{in: make(chan store.Change, subscriberBuffer), lost: make(chan struct{}, 1)}
	s.st.subs[sub] = struct{}{}
	s.st.mu.Unlock()
	out := make(chan store.Change)
	go func() {
		defer close(out)
		defer func() {
			s.st.mu.Lock()
			delete(s.st.subs, sub)
			s.st.mu.Unlock()
		}()
		for {
			var c store.Change
			select {
			case <-ctx.Done():
				return
			case c = <-sub.in:
			case <-sub.lost:
				// Changes were dropped since: the ones still buffered
				// came before the loss or after it, and the resync
				// covers both.
				c = store.Change{Kind: store.ChangeResync}
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// LeaseHints implements store.LeaseHinter: true unless the store was made
// WithoutHints.
func (s *Store) LeaseHints() bool { return !s.st.noHints }

// subscriberBuffer is how many changes wait for a slow subscriber; beyond
// it they are dropped and the loss is announced (store.ChangeResync).
var subscriberBuffer = 64

// subscriber is one subscription's queue.
type subscriber struct {
	in   chan store.Change
	lost chan struct{} // signalled (capacity 1) when a change was dropped
}

// notify pushes a change of kind for each of locks, without hints. It
// must be called with st.mu held.
func (st *state) notify(kind store.ChangeKind, locks ...string) {
	for _, l := range locks {
		st.push(store.Change{Kind: kind, Lock: l})
	}
}

// push must be called with st.mu held. A full subscriber buffer drops the
// notification, as a real push channel may, and the subscriber is sent a
// store.ChangeResync. Without hints (WithoutHints), lease changes are
// pushed bare.
func (st *state) push(changes ...store.Change) {
	for _, c := range changes {
		if st.noHints {
			c = store.Change{Kind: c.Kind, Lock: c.Lock}
		}
		for sub := range st.subs {
			select {
			case sub.in <- c:
			default:
				select {
				case sub.lost <- struct{}{}:
				default: // a resync is pending already
				}
			}
		}
	}
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Handoff implements store.Handoffs.
func (s *Store) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	if err := store.ValidateLockName(lock); err != nil {
		return store.LockState{}, err
	}
	if err := s.begin(ctx); err != nil {
		return store.LockState{}, err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	r := s.st.locks[lock]
	switch {
	case r != nil && r.disabled:
		return s.st.view(lock, r, now), fmt.Errorf("memstore: hand-off of %q: %w", lock, store.ErrLockDisabled)
	case r == nil || r.free(now):
		return s.st.view(lock, r, now), fmt.Errorf("memstore: hand-off of %q: %w", lock, store.ErrNotHeld)
	}
	r.handoff, r.handoffTo = true, to
	s.st.notify(store.ChangeControl, lock)
	return s.st.view(lock, r, now), nil
}

// Announce implements store.Membership.
func (s *Store) Announce(m store.Member, ttl time.Duration) {
	m.Locks = append([]string(nil), m.Locks...)
	sort.Strings(m.Locks)
	m.LockCount = len(m.Locks)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.announce == nil {
		s.announce = map[string]announcement{}
	}
	s.announce[m.ID] = announcement{m: m, ttl: ttl}
}

// writeMember writes the announcement of id, if any, as part of the call
// that holds st.mu.
func (s *Store) writeMember(id string, now time.Time) {
	s.mu.Lock()
	a, ok := s.announce[id]
	s.mu.Unlock()
	if !ok {
		return
	}
	prev, ok := s.st.members[id]
	s.st.members[id] = &memberRecord{m: a.m, seenAt: now, expires: now.Add(a.ttl)}
	if !ok || !prev.expires.After(now) {
		s.st.notify(store.ChangeMember, "")
	}
}

// Members implements store.Membership.
func (s *Store) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	if f.Lock != "" {
		if err := store.ValidateLockName(f.Lock); err != nil {
			return nil, err
		}
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	now := s.st.now()
	out := []store.Member{}
	for id, r := range s.st.members {
		if !r.expires.After(now) {
			delete(s.st.members, id)
			continue
		}
		if f.Lock != "" {
			if i := sort.SearchStrings(r.m.Locks, f.Lock); i == len(r.m.Locks) || r.m.Locks[i] != f.Lock {
				continue
			}
		}
		m := r.m
		m.SeenAt, m.TTL = r.seenAt, r.expires.Sub(now)
		if f.WithLocks {
			m.Locks = append([]string(nil), r.m.Locks...)
		} else {
			m.Locks = nil
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Leave implements store.Membership.
func (s *Store) Leave(ctx context.Context, id string) error {
	s.mu.Lock()
	delete(s.announce, id)
	s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.st.mu.Unlock()
	if _, ok := s.st.members[id]; ok {
		delete(s.st.members, id)
		s.st.notify(store.ChangeMember, "")
	}
	return nil
}
