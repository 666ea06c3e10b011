package mysql

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/masterjob/masterjob/store"
)

// maxIDLen is the longest holder or member id, and lock set id, the
// tables hold (VARBINARY(255)).
const maxIDLen = 255

func validateNames(op string, names []string) error {
	for _, n := range names {
		if err := store.ValidateLockName(n); err != nil {
			return fmt.Errorf("store/mysql: %s: %w", op, err)
		}
	}
	return nil
}

func validateID(op, what, id string) error {
	if len(id) > maxIDLen {
		return fmt.Errorf("store/mysql: %s: %s is %d bytes long, the store holds at most %d", op, what, len(id), maxIDLen)
	}
	return nil
}

func validateTTL(op string, ttl time.Duration) error {
	if ttl < time.Microsecond {
		return fmt.Errorf("store/mysql: %s: ttl %v is shorter than the store's resolution of 1µs", op, ttl)
	}
	return nil
}

// sortedUnique returns the distinct names in byte order: every batch takes
// its row locks in the same order, which keeps concurrent batches from
// deadlocking.
func sortedUnique(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}

// stateRow is a lock's state as the statements select it (stateCols),
// after a leading flag.
type stateRow struct {
	flag                                bool
	st                                  store.LockState
	acquired, renewed, expires, changed sql.NullInt64
	ttl, reservedTTL                    int64
	prevHolder                          string
	prevToken                           int64
	prevExpired, handoff                bool
	handoffTo, reservedFor              string
}

// dests returns the scan destinations of the flag and stateCols.
func (r *stateRow) dests() []any {
	return []any{&r.flag, &r.st.Lock, &r.st.Holder, &r.st.HolderInfo, &r.st.Token,
		&r.acquired, &r.renewed, &r.expires, &r.ttl,
		&r.st.Revoked, &r.st.Disabled, &r.st.Reason, &r.st.ChangedBy, &r.changed,
		&r.prevHolder, &r.prevToken, &r.prevExpired,
		&r.handoff, &r.handoffTo, &r.reservedFor, &r.reservedTTL}
}

func micros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

// state returns the LockState of the row, as memstore shows it: lease
// fields only while a holder is set, a hand-off request only while the
// lease is unexpired, a reservation only while it lasts. withPrev adds the
// predecessor (for a lock just acquired).
func (r *stateRow) state(withPrev bool) store.LockState {
	st := r.st
	st.ChangedAt = micros(r.changed)
	if st.Holder == "" {
		st.HolderInfo, st.Revoked = "", false
	} else {
		st.AcquiredAt, st.RenewedAt, st.ExpiresAt = micros(r.acquired), micros(r.renewed), micros(r.expires)
		st.TTL = time.Duration(r.ttl) * time.Microsecond
		if st.TTL > 0 && r.handoff {
			st.HandoffRequested, st.HandoffTo = true, r.handoffTo
		}
	}
	if r.reservedFor != "" && r.reservedTTL > 0 {
		st.ReservedFor, st.ReservedTTL = r.reservedFor, time.Duration(r.reservedTTL)*time.Microsecond
	}
	if withPrev && r.prevHolder != "" {
		st.PrevHolder, st.PrevToken, st.PrevExpired = r.prevHolder, r.prevToken, r.prevExpired
	}
	return st
}

// Acquire implements store.Store: one transaction, sent as one batch. See
// the package documentation for its statements.
func (s *Store) Acquire(ctx context.Context, holder store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	const op = "acquire"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, locks); err != nil {
		return nil, err
	}
	if holder.ID == "" {
		return nil, fmt.Errorf("store/mysql: %s: empty holder ID", op)
	}
	if err := validateID(op, "holder ID", holder.ID); err != nil {
		return nil, err
	}
	if err := validateTTL(op, ttl); err != nil {
		return nil, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if len(locks) == 0 {
		return nil, nil
	}
	names := sortedUnique(locks)
	var in vars
	if err := in.json("mj_req", names); err != nil {
		return nil, fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	in.str("mj_h", holder.ID)
	in.str("mj_info", holder.Info)
	in.int("mj_ttl", ttl.Microseconds())
	mw := s.memberWrite(holder.ID, &in)
	body := s.q.acquire + "\n" + mw.pre + s.q.acquireLock + "\n" + mw.body + s.q.acquireEnd + "\n" + mw.result + "COMMIT;"
	temps := append([]string{"mj_cand", "mj_n", "mj_all", "mj_mnote"}, mw.temps...)
	b := s.batchText(in, temps, body)

	taken := map[string]store.LockState{}
	snapshot := make([]store.LockState, 0, len(names))
	var stored sql.NullString
	reset := func() {
		clear(taken)
		snapshot = snapshot[:0]
	}
	err = s.run(ctx, op, b, 2+mw.sets, reset, func(set int, rows *sql.Rows) error {
		if set == 2 {
			return rows.Scan(&stored)
		}
		var r stateRow
		if err := rows.Scan(r.dests()...); err != nil {
			return err
		}
		st := r.state(r.flag)
		st.Acquired = r.flag
		if set == 0 {
			taken[st.Lock] = st
		} else {
			snapshot = append(snapshot, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.memberDone(mw, stored)
	out := make([]store.LockState, len(snapshot))
	for i, st := range snapshot {
		if t, ok := taken[st.Lock]; ok {
			st = t
		}
		out[i] = st
	}
	return out, nil
}

// Renew implements store.Store. Results come in the order of leases.
func (s *Store) Renew(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	const op = "renew"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	for _, l := range leases {
		if err := validateNames(op, []string{l.Lock}); err != nil {
			return nil, err
		}
	}
	if err := validateID(op, "holder ID", holderID); err != nil {
		return nil, err
	}
	if err := validateTTL(op, ttl); err != nil {
		return nil, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if len(leases) == 0 {
		return nil, nil
	}
	// Sorted by name, so that row locks are taken in byte order; order
	// maps the sorted position back to the caller's.
	order := make([]int, len(leases))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case leases[a].Lock < leases[b].Lock:
			return -1
		case leases[a].Lock > leases[b].Lock:
			return 1
		}
		return 0
	})
	req := make([][2]any, len(leases))
	for i, j := range order {
		req[i] = [2]any{leases[j].Lock, leases[j].Token}
	}
	var in vars
	if err := in.json("mj_req", req); err != nil {
		return nil, fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	in.str("mj_h", holderID)
	in.int("mj_ttl", ttl.Microseconds())
	mw := s.memberWrite(holderID, &in)
	body := s.q.renewStart + "\n" + mw.pre + s.q.renew + "\n" + mw.body + s.q.renewEnd + "\n" + mw.result + "COMMIT;"
	temps := append([]string{"mj_need", "mj_base", "mj_mnote"}, mw.temps...)
	b := s.batchText(in, temps, body)

	out := make([]store.RenewResult, len(leases))
	var stored sql.NullString
	err = s.run(ctx, op, b, 1+mw.sets, nil, func(set int, rows *sql.Rows) error {
		if set == 1 {
			return rows.Scan(&stored)
		}
		var (
			ord     int
			r       store.RenewResult
			ttlUS   int64
			handoff bool
		)
		if err := rows.Scan(&ord, &r.Renewed, &ttlUS, &r.Revoked, &r.Disabled, &handoff, &r.HandoffTo); err != nil {
			return err
		}
		if ord < 1 || ord > len(order) {
			return fmt.Errorf("renew returned ordinal %d for %d leases", ord, len(order))
		}
		ref := leases[order[ord-1]]
		r.Lock, r.Token = ref.Lock, ref.Token
		if r.Renewed {
			r.TTL = time.Duration(ttlUS) * time.Microsecond
			r.HandoffRequested = handoff
			if !handoff {
				r.HandoffTo = ""
			}
		} else {
			r.Revoked, r.HandoffTo = false, ""
		}
		out[order[ord-1]] = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.memberDone(mw, stored)
	return out, nil
}

// Release implements store.Store. It notifies subscribers of each lock it
// released, in the same transaction.
func (s *Store) Release(ctx context.Context, holderID string, leases []store.LeaseRef) error {
	return s.endLeases(ctx, "release", holderID, leases, nil, []string{"mj_rel", "mj_need", "mj_base"}, s.q.release)
}

// endLeases checks the refs of a Release or a Transfer, encodes them as
// @mj_req (sorted by lock name, so that rows are locked in one order; one
// ref per lock and token, the caller's first: a lease is ended once, as
// memstore does) and the holder as @mj_h, adds what set puts in, and runs
// query as one batch.
func (s *Store) endLeases(ctx context.Context, op, holderID string, leases []store.LeaseRef, set func(*vars), out []string, query string) error {
	if s.closed.Load() {
		return fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	for _, l := range leases {
		if err := validateNames(op, []string{l.Lock}); err != nil {
			return err
		}
		if err := validateID(op, "successor ID", l.Successor); err != nil {
			return err
		}
	}
	if err := validateID(op, "holder ID", holderID); err != nil {
		return err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(leases) == 0 {
		return nil
	}
	sorted := slices.Clone(leases)
	slices.SortStableFunc(sorted, func(a, b store.LeaseRef) int { return strings.Compare(a.Lock, b.Lock) })
	sorted = slices.CompactFunc(sorted, func(a, b store.LeaseRef) bool {
		return a.Lock == b.Lock && a.Token == b.Token
	})
	req := make([][4]any, len(sorted))
	for i, l := range sorted {
		reserve := int64(0)
		if l.Successor != "" && l.Reserve > 0 {
			reserve = max(l.Reserve.Microseconds(), 1)
		}
		req[i] = [4]any{l.Lock, l.Token, hex.EncodeToString([]byte(l.Successor)), reserve}
	}
	var in vars
	if err := in.json("mj_req", req); err != nil {
		return fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	in.str("mj_h", holderID)
	if set != nil {
		set(&in)
	}
	return s.run(ctx, op, s.batchText(in, out, query), 0, nil, nil)
}

// Transfer implements store.Transfers: Release and the successor's
// acquisition in one transaction, sent as one batch (the transfer query;
// see the package documentation). Safety rests on four things. Fencing:
// a ref is acted on only if the row, locked and read at its latest
// committed version, still has holderID, the ref's token and an unexpired
// lease. Atomicity: the old lease ends and the new one begins in the same
// UPDATE of the same row, under the sequence's lock, so no other
// acquisition can slip between them and no reader sees both or neither
// ended. Membership: a lock is given only to a successor with an unexpired
// member record, read after the sequence is locked (Leave takes it too,
// before its delete), in a consistent read whose snapshot is taken after
// that lock at both isolation levels, so no Leave can commit between the
// check and the give, and none committed before it is missed; otherwise
// the lease is released as Release would. Tokens: the successor's token is
// drawn from the sequence exactly as Acquire draws it, so it exceeds every
// token the lock ever had. The transaction commits with the same settings
// as Acquire's: the server's durability settings apply to both alike.
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	const op = "transfer"
	if err := validateTTL(op, ttl); err != nil {
		return err
	}
	return s.endLeases(ctx, op, holderID, leases, func(in *vars) { in.int("mj_ttl", ttl.Microseconds()) },
		[]string{"mj_infos", "mj_rel"}, s.q.transfer)
}

// Disable implements store.Store. A lock that is already disabled is left
// as it is (its reason is not replaced) and Changed is false.
func (s *Store) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	var in vars
	in.str("mj_lock", lock)
	in.str("mj_reason", reason)
	in.str("mj_by", by)
	return s.control(ctx, "disable", lock, in, s.q.disable)
}

// Enable implements store.Store. It clears the disabled mark and the
// reason, and records by and the store's time. An unknown lock is
// reported free and enabled, and not created.
func (s *Store) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	var in vars
	in.str("mj_lock", lock)
	in.str("mj_by", by)
	return s.control(ctx, "enable", lock, in, s.q.enable)
}

func (s *Store) control(ctx context.Context, op, lock string, in vars, body string) (store.ControlChange, error) {
	if s.closed.Load() {
		return store.ControlChange{}, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, []string{lock}); err != nil {
		return store.ControlChange{}, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return store.ControlChange{}, err
	}
	defer cancel()
	b := s.batchText(in, []string{"mj_need", "mj_base"}, body)
	var out store.ControlChange
	err = s.run(ctx, op, b, 1, nil, func(_ int, rows *sql.Rows) error {
		var r stateRow
		if err := rows.Scan(r.dests()...); err != nil {
			return err
		}
		out = store.ControlChange{Changed: r.flag, State: r.state(false)}
		return nil
	})
	if err != nil {
		return store.ControlChange{}, err
	}
	if out.State.Lock != lock {
		return store.ControlChange{}, fmt.Errorf("store/mysql: %s: no state returned for %q", op, lock)
	}
	return out, nil
}

// Handoff implements store.Handoffs. Like memstore, it does not store by.
func (s *Store) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	const op = "handoff"
	if s.closed.Load() {
		return store.LockState{}, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, []string{lock}); err != nil {
		return store.LockState{}, err
	}
	if err := validateID(op, "successor ID", to); err != nil {
		return store.LockState{}, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return store.LockState{}, err
	}
	defer cancel()
	var in vars
	in.str("mj_lock", lock)
	in.str("mj_to", to)
	b := s.batchText(in, []string{"mj_dis", "mj_held", "mj_need", "mj_base"}, s.q.handoff)
	var (
		st             store.LockState
		disabled, held bool
	)
	err = s.run(ctx, op, b, 1, nil, func(_ int, rows *sql.Rows) error {
		var r stateRow
		if err := rows.Scan(append([]any{&disabled, &held}, r.dests()[1:]...)...); err != nil {
			return err
		}
		st = r.state(false)
		return nil
	})
	switch {
	case err != nil:
		return store.LockState{}, err
	case disabled:
		return st, fmt.Errorf("store/mysql: hand-off of %q: %w", lock, store.ErrLockDisabled)
	case !held:
		return st, fmt.Errorf("store/mysql: hand-off of %q: %w", lock, store.ErrNotHeld)
	}
	return st, nil
}

// Locks implements store.Store. Names are ordered in byte order.
func (s *Store) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	const op = "locks"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, names); err != nil {
		return nil, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	var in vars
	body := s.q.locksAll
	if len(names) > 0 {
		if err := in.json("mj_req", sortedUnique(names)); err != nil {
			return nil, fmt.Errorf("store/mysql: %s: %w", op, err)
		}
		body = s.q.locksNamed
	}
	b := s.batchText(in, nil, body)
	var out []store.LockState
	err = s.run(ctx, op, b, 1, func() { out = out[:0] }, func(_ int, rows *sql.Rows) error {
		var r stateRow
		if err := rows.Scan(r.dests()...); err != nil {
			return err
		}
		out = append(out, r.state(false))
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.LockState) int {
		switch {
		case a.Lock < b.Lock:
			return -1
		case a.Lock > b.Lock:
			return 1
		}
		return 0
	})
	return out, nil
}
