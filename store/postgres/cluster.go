package postgres

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/masterjob/masterjob/store"
)

// Handoff implements store.Handoffs: one UPDATE marks the request on the
// lock's row, if it holds an unexpired lease and is enabled, and notifies
// subscribers in the same statement.
func (s *Store) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	const op = "handoff"
	if s.closed.Load() {
		return store.LockState{}, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, []string{lock}); err != nil {
		return store.LockState{}, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return store.LockState{}, err
	}
	defer cancel()
	states, err := queryRows(ctx, s, op, scanState, s.q.handoff, lock, to, by, s.channel)
	if err != nil {
		return store.LockState{}, err
	}
	if len(states) == 0 {
		return store.LockState{Lock: lock}, fmt.Errorf("store/postgres: hand-off of %q: %w", lock, store.ErrNotHeld)
	}
	// scanState put "requested" in Acquired: move it.
	st := states[0]
	requested := st.Acquired
	st.Acquired = false
	switch {
	case requested:
		return st, nil
	case st.Disabled:
		return st, fmt.Errorf("store/postgres: hand-off of %q: %w", lock, store.ErrLockDisabled)
	default:
		return st, fmt.Errorf("store/postgres: hand-off of %q: %w", lock, store.ErrNotHeld)
	}
}

// Transfer implements store.Transfers: one UPDATE ends the caller's
// leases and, in the same row version, gives each to its ref's Successor
// (a new lease of ttl, a new token from the token sequence, the
// successor's member info) unless the lease is revoked, the lock
// disabled or the successor without an unexpired member record, in which
// case it releases it as Release does; it notifies
// subscribers of each lock in the same statement. Unlike Release, it
// commits synchronously: see the transfer statement in queries.go.
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	const op = "transfer"
	if ttl < time.Microsecond {
		return fmt.Errorf("store/postgres: %s: ttl %v is shorter than the store's resolution of 1µs", op, ttl)
	}
	return s.endLeases(ctx, op, s.q.transfer, leases, holderID, micros(ttl), s.seq, s.channel)
}

// announcements are what a handle writes for each member announced on it
// (Membership), and what it knows of the records it wrote.
type announcements struct {
	mu sync.Mutex
	// writer identifies this handle in the records it writes.
	writer string
	// gen numbers the announcements made on this handle.
	gen int64
	m   map[string]*announced
}

// announced is one member's announcement on a handle.
type announced struct {
	m   store.Member // Locks sorted, this handle's copy
	ttl time.Duration
	gen int64

	// What the record held after the newest write of this handle whose
	// result came back: the generation and the lock set it holds. The lock
	// list is sent only while it differs from the announced one.
	known    bool
	knownGen int64
	knownSet string

	// inflight counts this member's writes in flight; idle, if not nil, is
	// closed when it drops to zero (Leave waits for it).
	inflight int
	idle     chan struct{}
}

func (a *announcements) init() {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	a.writer = hex.EncodeToString(b)
	a.m = map[string]*announced{}
}

// memberWrite is one write of a member's record, part of a call.
type memberWrite struct {
	a    *announced
	args []any
}

// memberResult is what the record holds after a write.
type memberResult struct {
	writer string
	gen    int64
	set    string
}

// Announce implements store.Membership. It makes no call: every later
// Acquire and Renew for m.ID on this handle writes the record in its own
// round trip (see withMember), the lock list only when the record does not
// hold m.LockSetID's yet.
func (s *Store) Announce(m store.Member, ttl time.Duration) {
	m.Locks = slices.Clone(m.Locks)
	slices.Sort(m.Locks)
	m.LockCount = len(m.Locks)
	s.ann.mu.Lock()
	defer s.ann.mu.Unlock()
	s.ann.gen++
	a := s.ann.m[m.ID]
	if a == nil {
		a = &announced{}
		s.ann.m[m.ID] = a
	}
	a.m, a.ttl, a.gen = m, ttl, s.ann.gen
}

// begin returns the write of member id's record, or nil if id is not
// announced on this handle, and counts it in flight until end.
func (a *announcements) begin(id, channel string) *memberWrite {
	a.mu.Lock()
	defer a.mu.Unlock()
	an := a.m[id]
	if an == nil {
		return nil
	}
	var locks []string // nil: not sent, the record keeps its list
	if !an.known || an.knownSet != an.m.LockSetID {
		locks = an.m.Locks
		if locks == nil {
			locks = []string{}
		}
	}
	an.inflight++
	m := an.m
	return &memberWrite{a: an, args: []any{
		m.ID, m.Info, m.LockSetID, locks, clampInt32(m.Masters), m.Weight,
		micros(an.ttl), a.writer, an.gen, channel,
	}}
}

// end records the outcome of w: res is what the record holds, if the call
// succeeded.
func (a *announcements) end(w *memberWrite, res *memberResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	an := w.a
	an.inflight--
	if an.inflight == 0 && an.idle != nil {
		close(an.idle)
		an.idle = nil
	}
	switch {
	case res == nil:
	case res.writer != a.writer:
		// Another handle wrote the record last: send the list again.
		an.known = false
	case !an.known || res.gen >= an.knownGen:
		an.known, an.knownGen, an.knownSet = true, res.gen, res.set
	}
}

// forget removes id's announcement and returns a channel closed once the
// writes of it in flight are done (nil if none is).
func (a *announcements) forget(id string) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	an := a.m[id]
	delete(a.m, id)
	if an == nil || an.inflight == 0 {
		return nil
	}
	if an.idle == nil {
		an.idle = make(chan struct{})
	}
	return an.idle
}

func clampInt32(n int) int32 {
	return int32(min(max(n, math.MinInt32), math.MaxInt32))
}

func scanMemberResult(row pgx.CollectableRow) (memberResult, error) {
	var r memberResult
	var notified int64
	err := row.Scan(&r.writer, &r.gen, &r.set, &notified)
	return r, err
}

// asyncIfUnwritten makes the transaction's commit asynchronous when
// nothing it did so far wrote (no transaction ID assigned): a follower's
// check, whose only write is the refresh of its member record that
// follows. Losing that refresh in a server crash costs nothing (the next
// call writes it again), and the commit then waits for no WAL flush, which
// otherwise costs the check one disk sync it did not pay before members
// existed. A transaction that took or renewed a lease keeps its synchronous
// commit.
const asyncIfUnwritten = `SELECT ` + asyncCommit + ` WHERE txid_current_if_assigned() IS NULL`

// withMember runs sql, one statement, and collects its rows with scan.
// When member id is announced on this handle, the statement that writes its
// record goes with it: both in one batch ending with one Sync, so one round
// trip, which the server runs as one implicit transaction. When the write
// does not carry the lock list, asyncIfUnwritten goes between them. Conflicts
// are retried as in run.
func withMember[T any](ctx context.Context, s *Store, op, id string, scan pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	w := s.ann.begin(id, s.channel)
	if w == nil {
		return queryRows(ctx, s, op, scan, sql, args...)
	}
	stmts := []stmt{{sql, args}, {s.q.memberWrite, w.args}}
	if w.args[3].([]string) == nil {
		// The list is not sent: a lost commit loses a refresh, which the
		// next call makes again. A write of the list stays synchronous, so
		// that what the handle believes the record holds survives a crash.
		stmts = []stmt{stmts[0], {asyncIfUnwritten, nil}, stmts[1]}
	}
	var (
		out []T
		res memberResult
	)
	err := s.run(ctx, op, func(ctx context.Context) error {
		return s.batch(ctx, stmts, func(i int, rows pgx.Rows) error {
			var err error
			switch i {
			case 0:
				out, err = pgx.CollectRows(rows, scan)
			case len(stmts) - 1:
				res, err = pgx.CollectExactlyOneRow(rows, scanMemberResult)
			default:
				err = discard(rows)
			}
			return err
		})
	})
	if err != nil {
		s.ann.end(w, nil)
		return nil, err
	}
	s.ann.end(w, &res)
	return out, nil
}

// stmt is one statement of a batch and its arguments.
type stmt struct {
	sql  string
	args []any
}

// Formats of a batch's parameters and results. Parameters go as text,
// which for arrays of short names and small numbers is about half the size
// of binary (no 4-byte length per element); results come back in binary.
var (
	textFormat   = []int16{pgtype.TextFormatCode}
	binaryFormat = []int16{pgtype.BinaryFormatCode}
)

// batch sends stmts as one pipeline of Bind, Describe and Execute messages
// followed by a single Sync, which the server runs as one implicit
// transaction, and hands the rows of statement i to read(i, rows), which
// must consume or close them. Every call of the store goes through it.
//
// With prepared statements (Store.prepares), a connection prepares
// Store.prepared the first time it runs one of the statements it runs
// again and again (isHot: a check's acquisition, a renewal, the
// member's record, the member list), all in one more round trip (see
// prepareOn): those, and a hand-off's (Store.ahead: the leaver's transfer
// or release, the successor's read of its lease), which are rare on any
// one connection but on the hand-off's critical path. A connection that
// has not prepared runs them with a Parse before their Bind, as every
// statement is run without prepared statements: a hand-off never waits
// for a preparation.
//
// The server plans each execution of a prepared statement for its
// parameters (a custom plan) for five executions and may then settle on a
// generic plan, made without them, as it judges it no dearer. A generic
// plan assumes an array parameter of a few elements, and with thousands it
// can be far slower (after five renewals of 10,000 leases the sixth did
// not end within the 5 s call timeout); so a batch with an array of over
// customPlanAbove elements first sets plan_cache_mode to
// force_custom_plan for its transaction (SET LOCAL). A batch of a
// hand-off's statements with no more elements sets force_generic_plan
// instead: the plan made ahead by prepareOn, which a hand-off's first
// execution on its connection would otherwise make.
func (s *Store) batch(ctx context.Context, stmts []stmt, read func(i int, rows pgx.Rows) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	c := conn.Conn()
	if slices.ContainsFunc(stmts, s.isHot) {
		if err := s.prepareOn(ctx, c); err != nil {
			return err
		}
	}
	b := &pgconn.Batch{}
	skip := 0 // leading statements added here, whose rows are not read's
	if plan := s.planMode(c.PgConn(), stmts); plan != "" {
		stmts = append([]stmt{{plan, nil}}, stmts...)
		skip = 1
	}
	for _, st := range stmts {
		vals, oids, err := encodeParams(c.TypeMap(), st.args)
		if err != nil {
			return err
		}
		if s.preparedOn(c.PgConn(), st) {
			b.ExecPrepared(s.prepared[st.sql], vals, textFormat, binaryFormat)
		} else {
			b.ExecParams(st.sql, vals, oids, textFormat, binaryFormat)
		}
	}
	mrr := c.PgConn().ExecBatch(ctx, b)
	for i := 0; mrr.NextResult(); i++ {
		rows := pgx.RowsFromResultReader(c.TypeMap(), mrr.ResultReader())
		if i < skip || i >= len(stmts) {
			rows.Close()
			continue
		}
		if err := read(i-skip, rows); err != nil {
			_ = mrr.Close()
			return s.forgetLost(c.PgConn(), err)
		}
	}
	return s.forgetLost(c.PgConn(), mrr.Close())
}

// planMode returns the statement that sets the plan mode of a batch of
// stmts on pc (see batch), or "".
func (s *Store) planMode(pc *pgconn.PgConn, stmts []stmt) string {
	var prepared, ahead bool
	for _, st := range stmts {
		if s.preparedOn(pc, st) {
			prepared = true
			_, isAhead := s.ahead[st.sql]
			ahead = ahead || isAhead
		}
	}
	switch {
	case prepared && largestArray(stmts) > customPlanAbove:
		return forceCustomPlan
	case ahead:
		return forceGenericPlan
	}
	return ""
}

// prepareOn prepares on c, in one round trip, the statements of
// Store.prepared unless it has (its CustomData holds
// Store.preparedMark), each after a Close of its name (no error when the
// server has no such statement; a pooler may have moved the connection to
// a server connection that has it), and marks it. In the
// same round trip, each in a transaction of its own, it runs a hand-off's
// statements (Store.ahead) once with no lock and force_generic_plan, so
// that the server keeps their generic plan for the hand-off. Those runs
// change nothing and may fail (a write on a read-only connection, which
// is left out when the session may be read-only: mayBeReadOnly): the
// hand-off then makes the plan itself.
func (s *Store) prepareOn(ctx context.Context, c *pgx.Conn) error {
	pc := c.PgConn()
	if pc.CustomData()[s.preparedMark] != nil {
		return nil
	}
	readOnly := mayBeReadOnly(pc.ParameterStatus)
	p := pc.StartPipeline(ctx)
	for sql, name := range s.prepared {
		p.SendDeallocate(name)
		p.SendPrepare(name, sql, nil)
	}
	p.SendPipelineSync()
	syncs := 1
	for sql, dry := range s.ahead {
		if dry.writes && readOnly {
			continue
		}
		vals, _, err := encodeParams(c.TypeMap(), dry.args)
		if err != nil {
			_ = p.Close()
			return err
		}
		p.SendQueryPrepared(s.prepared[forceGenericPlan], nil, nil, nil)
		p.SendQueryPrepared(s.prepared[sql], vals, textFormat, binaryFormat)
		p.SendPipelineSync()
		syncs++
	}
	if err := p.Flush(); err != nil {
		_ = p.Close()
		return err
	}
	// The preparations' error, if any: the dry runs' are not.
	var prepErr error
	for synced := 0; synced < syncs; {
		res, err := p.GetResults()
		if r, ok := res.(*pgconn.ResultReader); ok && err == nil {
			_, err = r.Close()
		}
		var pgErr *pgconn.PgError
		switch {
		case res == nil && err == nil:
			_ = p.Close()
			return errors.New("prepare: the pipeline ended before its last Sync")
		case err != nil && !errors.As(err, &pgErr):
			_ = p.Close() // the connection is broken
			return err
		case err != nil && synced == 0:
			prepErr = err
		}
		if _, ok := res.(*pgconn.PipelineSync); ok {
			synced++
		}
	}
	if err := p.Close(); err != nil || prepErr != nil {
		return cmp.Or(prepErr, err)
	}
	pc.CustomData()[s.preparedMark] = true
	return nil
}

// preparedOn reports whether st is prepared on pc.
func (s *Store) preparedOn(pc *pgconn.PgConn, st stmt) bool {
	_, ok := s.prepared[st.sql]
	return ok && pc.CustomData()[s.preparedMark] != nil
}

// forgetLost passes err on. When it says that the server does not know a
// statement the connection prepared (a DISCARD ALL or DEALLOCATE on the
// connection, or a pooler that moved it to another server connection),
// the connection forgets that it prepared the store's statements, so that
// its next call prepares them again rather than fail the same way.
func (s *Store) forgetLost(pc *pgconn.PgConn, err error) error {
	if err == nil || !isMissingStatement(err) {
		return err
	}
	delete(pc.CustomData(), s.preparedMark)
	return err
}

// isHot reports whether st is one of the statements a connection runs
// again and again, whose use prepares the store's statements on it: a
// prepared one that is not a hand-off's.
func (s *Store) isHot(st stmt) bool {
	_, prepared := s.prepared[st.sql]
	_, ahead := s.ahead[st.sql]
	return prepared && !ahead
}

// customPlanAbove is the length of an array parameter above which a batch
// forces custom plans (see batch).
const customPlanAbove = 64

// forceCustomPlan makes the server plan every statement of the
// transaction for its parameters.
const forceCustomPlan = `SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`

// forceGenericPlan makes the server run every prepared statement of the
// transaction with its generic plan.
const forceGenericPlan = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`

// largestArray returns the length of the longest array parameter of
// stmts.
func largestArray(stmts []stmt) int {
	n := 0
	for _, st := range stmts {
		for _, a := range st.args {
			switch v := a.(type) {
			case []string:
				n = max(n, len(v))
			case []int64:
				n = max(n, len(v))
			}
		}
	}
	return n
}

// statementName names the prepared statement of sql on a connection.
func statementName(sql string) string {
	sum := sha256.Sum256([]byte(sql))
	return "masterjob_" + hex.EncodeToString(sum[:12])
}

// encodeParams encodes args as text, with the type each Go type stands
// for.
func encodeParams(m *pgtype.Map, args []any) ([][]byte, []uint32, error) {
	vals := make([][]byte, len(args))
	oids := make([]uint32, len(args))
	for i, a := range args {
		var oid uint32
		switch a.(type) {
		case string:
			oid = pgtype.TextOID
		case []string:
			oid = pgtype.TextArrayOID
		case int64:
			oid = pgtype.Int8OID
		case []int64:
			oid = pgtype.Int8ArrayOID
		case int32:
			oid = pgtype.Int4OID
		case float64:
			oid = pgtype.Float8OID
		case bool:
			oid = pgtype.BoolOID
		default:
			return nil, nil, fmt.Errorf("store/postgres: parameter %d: no type for %T", i+1, a)
		}
		// A non-nil buf: Encode returns nil only for NULL, not for "".
		buf, err := m.Encode(oid, pgtype.TextFormatCode, a, []byte{})
		if err != nil {
			return nil, nil, fmt.Errorf("store/postgres: parameter %d: %w", i+1, err)
		}
		vals[i], oids[i] = buf, oid
	}
	return vals, oids, nil
}

// Members implements store.Membership: one SELECT reads the unexpired
// records (those taking part in f.Lock, if set). Expired records are
// pruned by the members' writes, not here: Members works on a read-only
// connection.
func (s *Store) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	const op = "members"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	if f.Lock != "" {
		if err := validateNames(op, []string{f.Lock}); err != nil {
			return nil, err
		}
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	s.pingAlong()
	out, err := queryRows(ctx, s, op, scanMember, s.q.members, f.Lock, f.WithLocks)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []store.Member{}
	}
	return out, nil
}

// Leave implements store.Membership. It stops this handle from writing
// id's record, waits (within ctx) for the writes of it already in flight,
// so that none lands after the delete, then deletes the record and
// notifies subscribers in one statement.
func (s *Store) Leave(ctx context.Context, id string) error {
	const op = "leave"
	idle := s.ann.forget(id)
	if s.closed.Load() {
		return fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			return s.wrapErr(ctx, op, fmt.Errorf("waiting for the writes of member %q in flight: %w", id, context.Cause(ctx)))
		}
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.exec(ctx, s.q.leave, id, s.channel)
	})
}

// mayBeReadOnly reports whether a session whose server reports the
// parameters that status returns may refuse writes: it says so
// (default_transaction_read_only or in_hot_standby on), or it does not
// report default_transaction_read_only at all, as servers before
// PostgreSQL 14 do not. A write's run ahead is left out then: on a
// read-only session the server would refuse it and log an ERROR for
// every connection.
func mayBeReadOnly(status func(name string) string) bool {
	ro := status("default_transaction_read_only")
	return ro != "off" || status("in_hot_standby") == "on"
}
