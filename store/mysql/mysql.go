package mysql

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

// schemaSQL is the DDL template; see schema.sql.
//
//go:embed schema.sql
var schemaSQL string

// Defaults.
const (
	// DefaultTablePrefix is the prefix of the store's table names unless
	// WithTablePrefix says otherwise.
	DefaultTablePrefix = "masterjob_"
	// DefaultCallTimeout bounds every store call unless WithCallTimeout says
	// otherwise.
	DefaultCallTimeout = 5 * time.Second
	// DefaultNotifyPoll is how often a subscription polls for changes unless
	// WithNotifyPoll says otherwise.
	DefaultNotifyPoll = 50 * time.Millisecond
)

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
	prefix       string
	migrate      bool
	callTimeout  time.Duration
	historyLimit int
	notifyPoll   time.Duration
	errs         []error
	// migrations replaces the migrations of schema.sql (tests simulate a
	// future version with it); nil means schemaMigrations.
	migrations []migration
	// notifyKeep is how far back writers keep notifications (the
	// constant notifyKeep; tests lower it).
	notifyKeep int
}

// WithTablePrefix sets the prefix of the store's tables (<prefix>locks,
// <prefix>seq, ...). The default is "masterjob_". It must match
// [a-z0-9_]{0,40}.
func WithTablePrefix(p string) Option {
	return func(c *config) {
		if !prefixRE.MatchString(p) {
			c.errs = append(c.errs, fmt.Errorf("WithTablePrefix: %q does not match [a-z0-9_]{0,40}", p))
			return
		}
		c.prefix = p
	}
}

// WithoutMigrate stops Open and New from creating or upgrading the tables:
// a DBA applies schema.sql instead. Open and New still check that the
// tables exist at this version.
func WithoutMigrate() Option {
	return func(c *config) { c.migrate = false }
}

// WithCallTimeout bounds every store call (default 5s), including the wait
// for a pool connection and the retries of deadlocks, so that a renewal
// cannot starve behind other work on a shared pool. The server is told to
// give up waiting for row and metadata locks after as many whole seconds
// (innodb_lock_wait_timeout, lock_wait_timeout; at least 1). A caller's
// earlier context deadline also applies. d must be positive. A migration
// at open, if one is needed, may take up to 30s or d, whichever is longer.
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

// WithNotifyPoll sets how often a subscription (Subscribe) asks the server
// for new changes (default 50ms): the delay a follower adds to a graceful
// hand-off, against one small indexed query per interval per subscriber
// while nothing happens. d must be at least 1ms.
func WithNotifyPoll(d time.Duration) Option {
	return func(c *config) {
		if d < time.Millisecond {
			c.errs = append(c.errs, fmt.Errorf("WithNotifyPoll: %v is shorter than 1ms", d))
			return
		}
		c.notifyPoll = d
	}
}

// Store is a store.Store, store.Notifier, store.History, store.Handoffs,
// store.Membership and store.Transfers on a MySQL or MariaDB database. It is safe for
// concurrent use.
type Store struct {
	db  *sql.DB
	own bool
	cfg config
	t   tables
	q   queries

	mu       sync.Mutex // guards closed transitions, subs.Add and announce
	closed   atomic.Bool
	closing  context.Context // cancelled by Close; ends subscriptions
	stop     context.CancelFunc
	subs     sync.WaitGroup
	announce map[string]*announcement

	// afterAttempt, when set (by tests, before the first call), is called
	// after each attempt of a batch with its error.
	afterAttempt func(err error)
}

// tables holds the quoted names of the store's tables.
type tables struct {
	seq, locks, notify, history, members, memberLocks, meta string
}

func newTables(prefix string) tables {
	q := func(n string) string { return quoteIdent(prefix + n) }
	return tables{
		seq: q("seq"), locks: q("locks"), notify: q("notify"), history: q("history"),
		members: q("members"), memberLocks: q("member_locks"), meta: q("meta"),
	}
}

// Open connects to the database named by dsn, in the driver's format
// ("user:password@tcp(host:3306)/dbname?param=value", see
// github.com/go-sql-driver/mysql), with a pool that the Store owns and
// Close closes, then creates or upgrades the tables unless WithoutMigrate
// is given. Open turns on multiStatements, which the store needs to send a
// call as one round trip.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	dcfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store/mysql: open: %w", err)
	}
	return OpenConfig(ctx, dcfg, opts...)
}

// OpenConfig is Open with the driver's configuration instead of a DSN. It
// turns on dcfg.MultiStatements.
func OpenConfig(ctx context.Context, dcfg *mysqldrv.Config, opts ...Option) (*Store, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	dcfg = dcfg.Clone()
	dcfg.MultiStatements = true
	conn, err := mysqldrv.NewConnector(dcfg)
	if err != nil {
		return nil, fmt.Errorf("store/mysql: open: %w", err)
	}
	db := sql.OpenDB(conn)
	// Keep a few connections warm: a heartbeat that finds one idle costs
	// one round trip, a new one a handshake first.
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s, err := newStore(ctx, db, true, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// New returns a Store that uses db, which stays the caller's: Close does not
// close it. db must allow several statements per query (multiStatements=true
// in its DSN, or driver.Config.MultiStatements): New checks this. It creates
// or upgrades the tables unless WithoutMigrate is given.
//
// Store calls share db's pool with the application's queries; each is
// bounded by the call timeout (WithCallTimeout), including its wait for a
// connection. Leave room in db.SetMaxOpenConns for the store (one
// connection per call in flight, plus one per subscription while it polls),
// or give the Store a *sql.DB of its own.
func New(ctx context.Context, db *sql.DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, errors.New("store/mysql: new: nil *sql.DB")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return newStore(ctx, db, false, cfg)
}

func newConfig(opts []Option) (config, error) {
	cfg := config{prefix: DefaultTablePrefix, migrate: true, callTimeout: DefaultCallTimeout,
		historyLimit: store.DefaultHistoryLimit, notifyPoll: DefaultNotifyPoll, notifyKeep: notifyKeep}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if len(cfg.errs) > 0 {
		return cfg, fmt.Errorf("store/mysql: invalid option: %w", errors.Join(cfg.errs...))
	}
	return cfg, nil
}

func newStore(ctx context.Context, db *sql.DB, own bool, cfg config) (*Store, error) {
	s := &Store{db: db, own: own, cfg: cfg, t: newTables(cfg.prefix), announce: map[string]*announcement{}}
	s.q = buildQueries(s.t, cfg)
	s.closing, s.stop = context.WithCancel(context.Background())
	if err := s.prepare(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// prepare checks that the connection allows several statements per query
// and that the schema has reached the version this code needs, migrating
// it forward unless migration is off.
func (s *Store) prepare(ctx context.Context) error {
	const op = "open"
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	steps := s.migrations()
	latest := steps[len(steps)-1].version
	ictx, cancel := context.WithTimeout(ctx, s.cfg.callTimeout)
	defer cancel()
	if err := s.checkMultiStatements(ictx); err != nil {
		return s.wrapErr(ictx, op, err)
	}
	st, err := s.inspect(ictx, s.db)
	if err != nil {
		return s.wrapErr(ictx, op, err)
	}
	if st.version >= latest && len(st.missing) == 0 {
		return nil
	}
	if !s.cfg.migrate {
		apply := "schema.sql"
		if st.version > 0 && len(st.missing) == 0 {
			apply = fmt.Sprintf("the sections of schema.sql after version %d", st.version)
		}
		err := fmt.Errorf("store/mysql: %s: %s; apply %s or open without WithoutMigrate", op, st.describe(latest), apply)
		if st.none() {
			err = fmt.Errorf("%w: %w", store.ErrNotInitialized, err)
		}
		return err
	}
	// DDL waits for the GET_LOCK (another process may be migrating) and
	// for metadata locks: the call timeout, sized for renewals, is too
	// short a bound for it.
	mctx, mcancel := context.WithTimeout(ctx, max(s.cfg.callTimeout, migrateTimeout))
	defer mcancel()
	if err := s.migrate(mctx, steps); err != nil {
		return s.wrapErr(mctx, "migrate", err)
	}
	return nil
}

// errNoMultiStatements: the *sql.DB given to New does not allow several
// statements per query.
var errNoMultiStatements = errors.New("the *sql.DB does not allow several statements per query, " +
	"which the store needs to make each call one round trip: add multiStatements=true to its DSN " +
	"(or set Config.MultiStatements of github.com/go-sql-driver/mysql)")

// checkMultiStatements sends two statements in one query.
func (s *Store) checkMultiStatements(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, "SELECT 1; SELECT 2")
	if err != nil {
		var me *mysqldrv.MySQLError
		if errors.As(err, &me) && me.Number == 1064 { // ER_PARSE_ERROR
			return errNoMultiStatements
		}
		return err
	}
	defer rows.Close()
	sets := 0
	for {
		for rows.Next() {
		}
		sets++
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if sets != 2 {
		return errNoMultiStatements
	}
	return nil
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
	if s.own {
		return s.db.Close()
	}
	return nil
}

// begin starts a store call: it fails for a closed store or a done context,
// and returns the call's context, bounded by the call timeout.
func (s *Store) begin(ctx context.Context, op string) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.callTimeout)
	return cctx, cancel, nil
}
