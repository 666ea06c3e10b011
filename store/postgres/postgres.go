package postgres

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/internal/inflight"
	"github.com/masterjob/masterjob/store"
)

// schemaSQL is the DDL template; see schema.sql.
//
//go:embed schema.sql
var schemaSQL string

// Defaults.
const (
	// DefaultTablePrefix is the prefix of the store's table and sequence
	// names unless WithTablePrefix says otherwise.
	DefaultTablePrefix = "masterjob_"
	// DefaultCallTimeout bounds every store call unless WithCallTimeout says
	// otherwise.
	DefaultCallTimeout = 5 * time.Second
)

// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1: longer identifiers are
// truncated by the server, and longer NOTIFY channel names are rejected.
const maxIdentifierLen = 63

var (
	_ store.Store      = (*Store)(nil)
	_ store.Notifier   = (*Store)(nil)
	_ store.History    = (*Store)(nil)
	_ store.Handoffs   = (*Store)(nil)
	_ store.Membership = (*Store)(nil)
	_ store.Transfers  = (*Store)(nil)
)

var prefixRE = regexp.MustCompile(`^[a-z0-9_]{0,40}$`)

// Option configures a Store.
type Option func(*config)

type config struct {
	schema       string
	prefix       string
	migrate      bool
	callTimeout  time.Duration
	historyLimit int
	errs         []error
	// migrations replaces the migrations of schema.sql (tests simulate a
	// future version with it); nil means schemaMigrations.
	migrations []migration
}

// WithSchema puts the store's table and sequence in schema s, which is
// created if missing when migrating. The default, "", uses the connection's
// search_path (normally public). The name is used verbatim as a quoted
// identifier: "Jobs" and "jobs" are different schemas.
func WithSchema(s string) Option {
	return func(c *config) {
		switch {
		case len(s) > maxIdentifierLen:
			c.errs = append(c.errs, fmt.Errorf("WithSchema: %q is longer than %d bytes", s, maxIdentifierLen))
		case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
			c.errs = append(c.errs, fmt.Errorf("WithSchema: %q is not valid UTF-8 without NUL bytes", s))
		default:
			c.schema = s
		}
	}
}

// WithTablePrefix sets the prefix of the table (<prefix>locks), the
// sequence (<prefix>token_seq) and the notification channel. The default is
// "masterjob_". It must match [a-z0-9_]{0,40}.
func WithTablePrefix(p string) Option {
	return func(c *config) {
		if !prefixRE.MatchString(p) {
			c.errs = append(c.errs, fmt.Errorf("WithTablePrefix: %q does not match [a-z0-9_]{0,40}", p))
			return
		}
		c.prefix = p
	}
}

// WithoutMigrate stops Open and New from creating the schema, table and
// sequence: a DBA applies schema.sql instead. Open and New still check that
// the table and sequence exist.
func WithoutMigrate() Option {
	return func(c *config) { c.migrate = false }
}

// WithCallTimeout bounds every store call (default 5s), including the wait
// for a pool connection, so that a renewal cannot starve behind other work
// on a shared pool. A caller's earlier context deadline also applies.
// d must be positive. A migration at open, if one is needed, may take up to
// 30s or d, whichever is longer.
func WithCallTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.errs = append(c.errs, fmt.Errorf("WithCallTimeout: %v is not positive", d))
			return
		}
		c.callTimeout = d
	}
}

// WithHistoryLimit sets how many history entries the store keeps (default
// store.DefaultHistoryLimit); each append prunes the oldest beyond it. n
// must be at least 1. Stores sharing a table should use the same limit: the
// one that appends last decides.
func WithHistoryLimit(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("WithHistoryLimit: %d is less than 1", n))
			return
		}
		c.historyLimit = n
	}
}

// Store is a store.Store, store.Notifier, store.History, store.Handoffs and
// store.Membership on a PostgreSQL database. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	ownPool bool
	cfg     config

	table   string // sanitized, possibly schema-qualified table name
	seq     string // sanitized, possibly schema-qualified sequence name
	history string // sanitized, possibly schema-qualified history table name
	meta    string // sanitized, possibly schema-qualified meta table name (the schema version)
	members string // sanitized, possibly schema-qualified members table name
	channel string // NOTIFY channel, verbatim
	q       queries
	// prepared holds the statements a connection prepares, by their
	// text, with the name each is prepared under (see batch and "Round
	// trips"); the others are parsed and planned at every call. Nil when
	// the store prepares no statement. ahead are a hand-off's among them,
	// each with a run that changes nothing (no lock), which plans it ahead
	// (prepareOn); the use of any other prepares them all on a connection,
	// which then carries the mark preparedMark in its CustomData.
	prepared     map[string]string
	ahead        map[string]dryRun
	preparedMark string

	// ann holds what this handle writes for each announced member
	// (Membership).
	ann announcements

	// ending counts the releases and transfers in flight; AppendEvents
	// waits for them (package inflight), so that an append from elsewhere
	// in the process (another lock's transition, the control API) does
	// not make the pool dial a second connection mid-hand-off.
	ending inflight.Counter

	mu      sync.Mutex // guards closed transitions and subs.Add
	closed  atomic.Bool
	closing context.Context // cancelled by Close; ends subscriptions
	stop    context.CancelFunc
	subs    sync.WaitGroup

	// onListen, when set (by tests), is called with the backend PID of each
	// new LISTEN connection once it listens.
	onListen func(pid uint32)
	// onPush, when set (by tests), is called with each change a
	// subscription receives, once it is queued or dropped.
	onPush func(store.Change)
	// maxPending bounds the changes waiting for a slow subscriber
	// (defaultMaxPending; tests lower it).
	maxPending int
	// listenPing is how long a LISTEN connection may stay silent before it
	// is pinged (or two thirds of it, beside another call: pingAlong).
	listenPing time.Duration
	// onPing, when set (by tests), is called after each ping of a LISTEN
	// connection with what ended its wait (context.DeadlineExceeded or
	// errPingAlong) and the ping's result.
	onPing func(cause, err error)
	// listeners are the subscriptions, for pingAlong.
	listeners listeners
}

// idlePingAfter is how long a connection of a pool made by Open may sit idle
// before it is pinged on acquire.
const idlePingAfter = time.Minute

// Open connects to the database at dsn (a libpq URL or key=value string, as
// accepted by pgxpool.ParseConfig) with a pool that the Store owns and Close
// closes, then migrates the schema unless WithoutMigrate is given.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: open: %w", err)
	}
	// pgxpool pings a connection idle for more than a second before handing
	// it out, which would double the round trips of every heartbeat. Ping
	// only long-idle connections; a renewal that meets a dead connection
	// fails fast and the executor retries it within the trust window.
	pcfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > idlePingAfter
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: open: %w", err)
	}
	s, err := newStore(ctx, pool, true, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// New returns a Store that uses pool, which stays the caller's: Close does
// not close it. It migrates the schema unless WithoutMigrate is given.
//
// Store calls share the pool with the application's queries; each is
// bounded by the call timeout (WithCallTimeout), including its wait for a
// connection. Size the pool so that a renewal finds a connection in time, or
// give the Store a pool of its own.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("store/postgres: new: nil pool")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return newStore(ctx, pool, false, cfg)
}

func newConfig(opts []Option) (config, error) {
	cfg := config{prefix: DefaultTablePrefix, migrate: true, callTimeout: DefaultCallTimeout,
		historyLimit: store.DefaultHistoryLimit}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if len(cfg.errs) > 0 {
		return cfg, fmt.Errorf("store/postgres: invalid option: %w", errors.Join(cfg.errs...))
	}
	return cfg, nil
}

func newStore(ctx context.Context, pool *pgxpool.Pool, own bool, cfg config) (*Store, error) {
	s := &Store{
		pool:       pool,
		ownPool:    own,
		cfg:        cfg,
		table:      qualify(cfg.schema, cfg.prefix+"locks"),
		seq:        qualify(cfg.schema, cfg.prefix+"token_seq"),
		history:    qualify(cfg.schema, cfg.prefix+"history"),
		meta:       qualify(cfg.schema, cfg.prefix+"meta"),
		members:    qualify(cfg.schema, cfg.prefix+"members"),
		channel:    channelName(cfg.schema, cfg.prefix),
		listenPing: 30 * time.Second,
		maxPending: defaultMaxPending,
	}
	s.q = buildQueries(s.table, s.history, s.members)
	s.ann.init()
	s.closing, s.stop = context.WithCancel(context.Background())
	if err := s.prepare(ctx); err != nil {
		s.stop()
		return nil, err
	}
	// plan_cache_mode (see batch) came with PostgreSQL 12.
	if usePrepared(pool.Config().ConnConfig) && serverMajor(ctx, pool) >= 12 {
		s.prepared = map[string]string{}
		for _, sql := range []string{s.q.acquire, s.q.renew, s.q.memberWrite, s.q.members, asyncIfUnwritten,
			forceCustomPlan, forceGenericPlan} {
			s.prepared[sql] = statementName(sql)
		}
		// A hand-off's: the leaver's transfer or release, the successor's
		// read of its lease; with no lock, as endLeases and Locks call
		// them.
		none := []any{[]string{}, []int64{}, []string{}, []int64{}, ""}
		s.ahead = map[string]dryRun{
			s.q.transfer:   {args: append(slices.Clip(none), int64(0), s.seq, s.channel), writes: true},
			s.q.release:    {args: append(slices.Clip(none), s.channel), writes: true},
			s.q.locksNamed: {args: []any{[]string{}}},
		}
		for sql := range s.ahead {
			s.prepared[sql] = statementName(sql)
		}
		// Stores of the same tables (the same statements) share it.
		s.preparedMark = statementName(strings.Join(slices.Sorted(maps.Values(s.prepared)), ","))
	}
	return s, nil
}

// dryRun is a run of a statement that changes nothing: its arguments, and
// whether the statement is a write (which a read-only connection refuses
// even so).
type dryRun struct {
	args   []any
	writes bool
}

// prepares reports whether the store prepares the statements a connection
// repeats.
func (s *Store) prepares() bool { return s.prepared != nil }

// serverMajor returns the server's major version as a pool connection
// reports it (server_version), or 0 when it cannot tell.
func serverMajor(ctx context.Context, pool *pgxpool.Pool) int {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0
	}
	defer conn.Release()
	v := conn.Conn().PgConn().ParameterStatus("server_version")
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		v = v[:end]
	}
	n, _ := strconv.Atoi(v)
	return n
}

// usePrepared reports whether the calls on a pool made with cc prepare
// their statements: when its default query mode is pgx's default, the
// statement cache (QueryExecModeCacheStatement), and the cache is on. Any
// other mode (default_query_exec_mode=exec in the URL, for a pooler in
// transaction mode that cannot keep prepared statements) means none.
func usePrepared(cc *pgx.ConnConfig) bool {
	return cc.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement && cc.StatementCacheCapacity > 0
}

// qualify returns the sanitized name, schema-qualified when schema is set.
func qualify(schema, name string) string {
	if schema == "" {
		return pgx.Identifier{name}.Sanitize()
	}
	return pgx.Identifier{schema, name}.Sanitize()
}

// channelName returns the NOTIFY channel of a schema and prefix: stores on
// different tables never share a channel.
func channelName(schema, prefix string) string {
	ch := prefix + "locks"
	if schema != "" {
		ch = schema + "." + ch
	}
	if len(ch) > maxIdentifierLen {
		sum := sha256.Sum256([]byte(ch))
		ch = "masterjob_" + hex.EncodeToString(sum[:16])
	}
	return ch
}

// prepare checks that the schema has reached the version this code needs,
// migrating it forward unless migration is off.
func (s *Store) prepare(ctx context.Context) error {
	const op = "open"
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/postgres: %s: %w", op, err)
	}
	steps := s.migrations()
	latest := steps[len(steps)-1].version
	ictx, cancel := context.WithTimeout(ctx, s.cfg.callTimeout)
	st, err := s.inspect(ictx, s.pool)
	if err != nil {
		err = s.wrapErr(ictx, op, err)
	}
	cancel()
	if err != nil {
		return err
	}
	if st.version >= latest && len(st.missing) == 0 {
		return nil
	}
	if !s.cfg.migrate {
		apply := "schema.sql"
		if st.version > 0 && len(st.missing) == 0 {
			apply = fmt.Sprintf("the sections of schema.sql after version %d", st.version)
		}
		err := fmt.Errorf("store/postgres: %s: %s; apply %s or open without WithoutMigrate", op, st.describe(latest), apply)
		if st.none() {
			err = fmt.Errorf("%w: %w", store.ErrNotInitialized, err)
		}
		return err
	}
	// DDL waits for the advisory lock (another process may be migrating)
	// and for the table locks it takes: the call timeout, sized for
	// renewals, is too short a bound for it.
	mctx, cancel := context.WithTimeout(ctx, max(s.cfg.callTimeout, migrateTimeout))
	defer cancel()
	if err := s.migrate(mctx, steps); err != nil {
		return s.wrapErr(mctx, "migrate", err)
	}
	return nil
}

// migrateTimeout bounds a migration at open, unless the call timeout is
// longer (a caller's earlier deadline also applies).
const migrateTimeout = 30 * time.Second

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaState is what inspect found.
type schemaState struct {
	// version is the schema version the database has reached: the one
	// recorded in the meta table, else what the objects made by versions 1
	// and 2 (which kept no record) say. A recorded version is believed
	// only while those objects exist (and, from version 4, the members
	// table): if one was dropped, the migrations run again from what is
	// left (those of versions 1, 2, 3 and 4 can run twice), as they would
	// for a database that never had it.
	version int
	// recorded is the version in the meta table, -1 if none.
	recorded int
	// missing names the objects of versions 1 and 2 that do not exist,
	// and the members table when version 4 is recorded but it does not.
	missing []string
}

// none reports that none of the store's objects exist.
func (st schemaState) none() bool { return len(st.missing) == 3 && st.recorded < 0 }

func (st schemaState) describe(latest int) string {
	switch {
	case st.none():
		return "no masterjob tables (" + strings.Join(st.missing, ", ") + " do not exist)"
	case len(st.missing) > 0 && st.recorded >= 0:
		return fmt.Sprintf("schema version %d recorded, but %s missing", st.recorded, strings.Join(st.missing, ", "))
	case len(st.missing) > 0:
		return fmt.Sprintf("%s missing", strings.Join(st.missing, ", "))
	default:
		return fmt.Sprintf("schema version %d, this version of masterjob needs %d", st.version, latest)
	}
}

// inspect returns the schema's version and which base objects are missing.
func (s *Store) inspect(ctx context.Context, q querier) (schemaState, error) {
	var locks, seq, history, meta, members bool
	err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL,
		to_regclass($3) IS NOT NULL, to_regclass($4) IS NOT NULL, to_regclass($5) IS NOT NULL`,
		pgx.QueryExecModeExec, s.table, s.seq, s.history, s.meta, s.members).Scan(&locks, &seq, &history, &meta, &members)
	if err != nil {
		return schemaState{}, err
	}
	st := schemaState{recorded: -1}
	for _, o := range []struct {
		exists bool
		name   string
	}{{locks, "table " + s.table}, {seq, "sequence " + s.seq}, {history, "table " + s.history}} {
		if !o.exists {
			st.missing = append(st.missing, o.name)
		}
	}
	if meta {
		var v int64
		err := q.QueryRow(ctx, `SELECT value FROM `+s.meta+` WHERE name = 'schema_version'`, pgx.QueryExecModeExec).Scan(&v)
		switch {
		case err == nil:
			st.recorded = int(v)
			if st.recorded >= 4 && !members {
				// Version 4's statements can run again, like those of
				// versions 1 and 2.
				st.missing = append(st.missing, "table "+s.members)
			}
			if len(st.missing) == 0 {
				st.version = st.recorded
				return st, nil
			}
		case !errors.Is(err, pgx.ErrNoRows):
			return schemaState{}, err
		}
	}
	switch {
	case locks && seq && history:
		st.version = 2
	case locks && seq:
		st.version = 1
	}
	return st, nil
}

// migrate applies the migrations above the schema's version in one
// transaction, serialised with every other migrator of the same table by an
// advisory lock.
func (s *Store) migrate(ctx context.Context, steps []migration) error {
	latest := steps[len(steps)-1].version
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		h := fnv.New64a()
		h.Write([]byte("masterjob migrate " + s.table))
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgx.QueryExecModeExec, int64(h.Sum64())); err != nil {
			return err
		}
		// Another process may have migrated while we waited for the lock.
		st, err := s.inspect(ctx, tx)
		if err != nil {
			return err
		}
		if st.version >= latest && len(st.missing) == 0 {
			return nil
		}
		if s.cfg.schema != "" {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`,
				pgx.QueryExecModeExec, s.cfg.schema).Scan(&exists); err != nil {
				return err
			}
			schema := pgx.Identifier{s.cfg.schema}.Sanitize()
			if !exists {
				if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema, pgx.QueryExecModeSimpleProtocol); err != nil {
					return err
				}
			}
			// schema.sql creates its objects in the first schema of the
			// search_path.
			if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+schema, pgx.QueryExecModeSimpleProtocol); err != nil {
				return err
			}
		}
		for _, m := range steps {
			if m.version <= st.version {
				continue
			}
			ddl := strings.ReplaceAll(m.sql, "{{prefix}}", s.cfg.prefix)
			if _, err := tx.Exec(ctx, ddl, pgx.QueryExecModeSimpleProtocol); err != nil {
				return fmt.Errorf("schema version %d: %w", m.version, err)
			}
		}
		after, err := s.inspect(ctx, tx)
		if err != nil {
			return err
		}
		if after.version < latest || len(after.missing) > 0 {
			return fmt.Errorf("after migrating from version %d: %s", st.version, after.describe(latest))
		}
		return nil
	})
}

// Close stops every subscription and, if the Store was made by Open, closes
// its pool. It does not release leases. Calls made after Close fail with
// store.ErrClosed; closing twice is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil
	}
	s.closed.Store(true)
	s.mu.Unlock()
	s.stop()
	s.subs.Wait()
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

// begin starts a store call: it fails for a closed store or a done context,
// and returns the call's context, bounded by the call timeout.
func (s *Store) begin(ctx context.Context, op string) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("store/postgres: %s: %w", op, err)
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.callTimeout)
	return cctx, cancel, nil
}

// run executes fn, a single statement, retrying it while it fails with a
// deadlock or serialization failure (the statement rolled back, so retrying
// is safe) and the call's context allows.
func (s *Store) run(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	var err error
	for attempt := 0; ; attempt++ {
		err = fn(ctx)
		if err == nil || attempt >= 4 || !isConflict(err) || ctx.Err() != nil {
			break
		}
	}
	return s.wrapErr(ctx, op, err)
}

// queryRows runs one statement (one round trip, see batch) under s.run and
// collects its rows with scan.
func queryRows[T any](ctx context.Context, s *Store, op string, scan pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	var out []T
	err := s.run(ctx, op, func(ctx context.Context) error {
		return s.batch(ctx, []stmt{{sql, args}}, func(_ int, rows pgx.Rows) (err error) {
			out, err = pgx.CollectRows(rows, scan)
			return err
		})
	})
	return out, err
}

// exec runs one statement (one round trip, see batch) and discards its
// rows.
func (s *Store) exec(ctx context.Context, sql string, args ...any) error {
	return s.batch(ctx, []stmt{{sql, args}}, func(_ int, rows pgx.Rows) error { return discard(rows) })
}

// discard closes rows, unread, and returns their error.
func discard(rows pgx.Rows) error {
	rows.Close()
	return rows.Err()
}

// scanRenewResult reads one row of the renew statement.
func scanRenewResult(row pgx.CollectableRow) (store.RenewResult, error) {
	var r store.RenewResult
	var ttlUS int64
	err := row.Scan(&r.Lock, &r.Token, &r.Renewed, &ttlUS, &r.Revoked, &r.Disabled, &r.HandoffRequested, &r.HandoffTo)
	r.TTL = time.Duration(ttlUS) * time.Microsecond
	return r, err
}

func validateNames(op string, names []string) error {
	for _, n := range names {
		if err := store.ValidateLockName(n); err != nil {
			return fmt.Errorf("store/postgres: %s: %w", op, err)
		}
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

func micros(d time.Duration) int64 { return d.Microseconds() }

// Acquire implements store.Store. See the package documentation for the
// statement it runs.
func (s *Store) Acquire(ctx context.Context, holder store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	const op = "acquire"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, locks); err != nil {
		return nil, err
	}
	if holder.ID == "" {
		return nil, fmt.Errorf("store/postgres: %s: empty holder ID", op)
	}
	if ttl < time.Microsecond {
		return nil, fmt.Errorf("store/postgres: %s: ttl %v is shorter than the store's resolution of 1µs", op, ttl)
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if len(locks) == 0 {
		return nil, nil
	}
	s.pingAlong()
	names := sortedUnique(locks)
	return withMember(ctx, s, op, holder.ID, scanState, s.q.acquire,
		names, holder.ID, holder.Info, micros(ttl), s.seq, s.channel)
}

// Renew implements store.Store. Results come in the order of leases.
func (s *Store) Renew(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	const op = "renew"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	names, tokens := splitRefs(leases)
	if err := validateNames(op, names); err != nil {
		return nil, err
	}
	if ttl < time.Microsecond {
		return nil, fmt.Errorf("store/postgres: %s: ttl %v is shorter than the store's resolution of 1µs", op, ttl)
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if len(leases) == 0 {
		return nil, nil
	}
	s.pingAlong()
	return withMember(ctx, s, op, holderID, scanRenewResult, s.q.renew, names, tokens, holderID, micros(ttl))
}

func splitRefs(leases []store.LeaseRef) ([]string, []int64) {
	names := make([]string, len(leases))
	tokens := make([]int64, len(leases))
	for i, l := range leases {
		names[i], tokens[i] = l.Lock, l.Token
	}
	return names, tokens
}

// Release implements store.Store and honours LeaseRef.Successor and
// LeaseRef.Reserve (store.Handoffs): a lock released with a successor and a
// positive reservation is reserved for that instance until the server's
// now() plus the reservation. It notifies subscribers of each lock it
// released, in the same statement.
func (s *Store) Release(ctx context.Context, holderID string, leases []store.LeaseRef) error {
	return s.endLeases(ctx, "release", s.q.release, leases, holderID, s.channel)
}

// endLeases runs sql, the release or the transfer statement, over leases:
// its first parameters are the refs' names, tokens, successors and
// reservations (µs), then more. One round trip whatever their number.
func (s *Store) endLeases(ctx context.Context, op, sql string, leases []store.LeaseRef, more ...any) error {
	if s.closed.Load() {
		return fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	names, tokens := splitRefs(leases)
	if err := validateNames(op, names); err != nil {
		return err
	}
	successors, reserves := make([]string, len(leases)), make([]int64, len(leases))
	for i, l := range leases {
		successors[i], reserves[i] = l.Successor, micros(l.Reserve)
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(leases) == 0 {
		return nil
	}
	args := append([]any{names, tokens, successors, reserves}, more...)
	s.ending.Enter()
	defer s.ending.Leave()
	return s.run(ctx, op, func(ctx context.Context) error { return s.exec(ctx, sql, args...) })
}

// Disable implements store.Store. A lock that is already disabled is left
// as it is (its reason is not replaced) and Changed is false.
func (s *Store) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	return s.control(ctx, "disable", s.q.disable, lock, reason, by, s.channel)
}

// Enable implements store.Store. It clears the disabled mark and the
// reason, and records by and the store's time.
func (s *Store) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	return s.control(ctx, "enable", s.q.enable, lock, by, s.channel)
}

// control runs a Disable or Enable statement; its first parameter is lock.
func (s *Store) control(ctx context.Context, op, sql, lock string, params ...any) (store.ControlChange, error) {
	if s.closed.Load() {
		return store.ControlChange{}, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, []string{lock}); err != nil {
		return store.ControlChange{}, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return store.ControlChange{}, err
	}
	defer cancel()
	states, err := queryRows(ctx, s, op, scanState, sql, append([]any{lock}, params...)...)
	if err != nil {
		return store.ControlChange{}, err
	}
	if len(states) == 0 {
		// Enable of an unknown lock, or a row created by a concurrent
		// call after this statement's snapshot: report the current state.
		states, err = queryRows(ctx, s, op, scanState, s.q.locksNamed, []string{lock})
		if err != nil {
			return store.ControlChange{}, err
		}
		if len(states) == 0 {
			return store.ControlChange{}, fmt.Errorf("store/postgres: %s: no state returned for %q", op, lock)
		}
	}
	// scanState put "changed" in Acquired: move it.
	st := states[0]
	changed := st.Acquired
	st.Acquired = false
	return store.ControlChange{Changed: changed, State: st}, nil
}

// Locks implements store.Store. Names are ordered in byte order.
func (s *Store) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	const op = "locks"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, names); err != nil {
		return nil, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	sql, args := s.q.locksAll, []any(nil)
	if len(names) > 0 {
		sql, args = s.q.locksNamed, []any{sortedUnique(names)}
	}
	out, err := queryRows(ctx, s, op, scanState, sql, args...)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AppendEvents implements store.History: one statement inserts the batch
// (unnest of one array per column), prunes the entries beyond the
// retention and notifies subscribers once per lock of the batch.
func (s *Store) AppendEvents(ctx context.Context, events []store.Event) error {
	const op = "append events"
	if s.closed.Load() {
		return fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	for _, e := range events {
		if err := store.ValidateLockName(e.Lock); err != nil {
			return fmt.Errorf("store/postgres: %s: %w", op, err)
		}
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(events) == 0 {
		return nil
	}
	// Of a batch longer than the retention only the newest entries would
	// survive the pruning: insert only those.
	if over := len(events) - s.cfg.historyLimit; over > 0 {
		events = events[over:]
	}
	// After the releases in flight, on the connection they free (package inflight).
	if err := s.ending.Wait(ctx); err != nil {
		return s.wrapErr(ctx, op, err)
	}
	n := len(events)
	locks, kinds, instances, reasons, remotes := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	tokens := make([]int64, n)
	for i, e := range events {
		locks[i], kinds[i], instances[i] = e.Lock, store.CleanText(string(e.Kind)), store.CleanText(e.Instance)
		tokens[i], reasons[i], remotes[i] = e.Token, store.CleanText(e.Reason), store.CleanText(e.Remote)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.exec(ctx, s.q.appendEvents, locks, kinds, instances, tokens, reasons, remotes, int64(s.cfg.historyLimit), s.channel)
	})
}

// Events implements store.History.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	const op = "events"
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
	before := f.BeforeID
	if before <= 0 {
		before = math.MaxInt64
	}
	limit := int64(store.EventsLimit(f.Limit))
	query, args := s.q.eventsAll, []any{before, limit}
	if f.Lock != "" {
		query, args = s.q.eventsLock, []any{f.Lock, before, limit}
	}
	out, err := queryRows(ctx, s, op, scanEvent, query, args...)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []store.Event{}
	}
	return out, nil
}
