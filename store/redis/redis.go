package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
)

// Defaults.
const (
	// DefaultCallTimeout bounds every store call unless WithCallTimeout says
	// otherwise.
	DefaultCallTimeout = 5 * time.Second
)

var (
	_ store.Store      = (*Store)(nil)
	_ store.Notifier   = (*Store)(nil)
	_ store.History    = (*Store)(nil)
	_ store.Handoffs   = (*Store)(nil)
	_ store.Membership = (*Store)(nil)
	_ store.Transfers  = (*Store)(nil)
)

// Option configures a Store.
type Option func(*config)

type config struct {
	prefix        string
	callTimeout   time.Duration
	historyLimit  int
	logger        *slog.Logger
	expiryEvents  bool
	skipDurCheck  bool
	errs          []error
	listenPing    time.Duration
	reconnectBase time.Duration
	maxPending    int // changes waiting for a slow subscriber
}

// WithPrefix sets the prefix of every key and of the pub/sub channel
// (default DefaultPrefix, "masterjob:"). Stores with different prefixes on
// one server are independent. It must match [A-Za-z0-9_:./-]{0,64}: no
// braces, which would change the keys' hash tags.
func WithPrefix(p string) Option {
	return func(c *config) {
		if !prefixPattern.MatchString(p) {
			c.errs = append(c.errs, fmt.Errorf("WithPrefix: %q does not match [A-Za-z0-9_:./-]{0,64}", p))
			return
		}
		c.prefix = p
	}
}

// WithCallTimeout bounds every store call (default 5s). d must be
// positive. A caller's earlier context deadline also applies. Redis
// clients honour it only with ContextTimeoutEnabled set (Open sets it; see
// New).
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
// store.DefaultHistoryLimit): each append trims the stream to it exactly.
// n must be at least 1. Stores sharing a prefix should use the same limit:
// the one that appends last decides.
func WithHistoryLimit(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("WithHistoryLimit: %d is less than 1", n))
			return
		}
		c.historyLimit = n
	}
}

// WithLogger sets the logger of the store's one-time warnings (durability
// of the server, client settings) and of subscription reconnects. The
// default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l == nil {
			c.errs = append(c.errs, errors.New("WithLogger: nil logger"))
			return
		}
		c.logger = l
	}
}

// WithoutExpiryEvents stops subscriptions from listening to the server's
// expiry events (keyspace notifications). By default a subscription on a
// single server (not a cluster) also subscribes to
// __keyevent@<db>__:expired, so that followers learn of an expired lease
// at once when the server publishes those events; on a busy shared server
// that channel carries every expiring key of the database.
func WithoutExpiryEvents() Option {
	return func(c *config) { c.expiryEvents = false }
}

// Store is a store.Store, store.Notifier, store.History, store.Handoffs,
// store.Transfers and store.Membership on a Redis server or cluster. It is
// safe for concurrent use.
type Store struct {
	c       goredis.UniversalClient
	own     bool
	cluster bool
	db      int
	cfg     config
	k       keys

	mu      sync.Mutex // guards closed transitions and subs.Add
	closed  atomic.Bool
	closing context.Context
	stop    context.CancelFunc
	subs    sync.WaitGroup

	annMu    sync.Mutex
	announce map[string]*announcement

	// Durability is what Open or New found out about the server.
	durability Durability

	// onPush, when set (by tests), is called with each change a
	// subscription receives, once it is queued or dropped.
	onPush func(store.Change)
}

// announcement is what a handle writes for a member with each Acquire and
// Renew.
type announcement struct {
	m   store.Member
	ttl time.Duration
	// sent is the lock set id whose list the store is believed to have.
	sent string
}

// Open connects to the Redis server named by a redis:// or rediss:// URL
// (see ParseURL) with a client that the Store owns and Close closes.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return u.Open(ctx, opts...)
}

// New returns a Store on client, a *redis.Client (a single server, or
// Sentinel's failover client) or a *redis.ClusterClient, which stays the
// caller's: Close does not close it. A *redis.Ring is refused: it shards
// keys over independent servers by client-side hashing, and moves a
// shard's keys to another server when that one is down, where a lease
// could be taken twice.
//
// Every call is bounded by the call timeout (WithCallTimeout) only if the
// client was built with ContextTimeoutEnabled; otherwise go-redis applies
// its own ReadTimeout and WriteTimeout to each command and ignores context
// deadlines. New logs a warning in that case.
func New(ctx context.Context, client goredis.UniversalClient, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("store/redis: new: nil client")
	}
	return newStore(ctx, client, false, opts)
}

func newConfig(opts []Option) (config, error) {
	cfg := config{
		prefix: DefaultPrefix, callTimeout: DefaultCallTimeout, historyLimit: store.DefaultHistoryLimit,
		logger: slog.Default(), expiryEvents: true, listenPing: 30 * time.Second,
		reconnectBase: 100 * time.Millisecond, maxPending: defaultMaxPending,
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if len(cfg.errs) > 0 {
		return cfg, fmt.Errorf("store/redis: invalid option: %w", errors.Join(cfg.errs...))
	}
	return cfg, nil
}

func newStore(ctx context.Context, client goredis.UniversalClient, own bool, opts []Option) (*Store, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Store{c: client, own: own, cfg: cfg, k: keys{prefix: cfg.prefix}}
	switch c := client.(type) {
	case *goredis.Client:
		s.db = c.Options().DB
		if !c.Options().ContextTimeoutEnabled {
			cfg.logger.Warn("store/redis: the Redis client ignores context deadlines (ContextTimeoutEnabled is false): "+
				"store calls are bounded by the client's ReadTimeout and WriteTimeout, not by the call timeout",
				"read_timeout", c.Options().ReadTimeout.String(), "call_timeout", cfg.callTimeout.String())
		}
	case *goredis.ClusterClient:
		s.cluster = true
		if !c.Options().ContextTimeoutEnabled {
			cfg.logger.Warn("store/redis: the Redis cluster client ignores context deadlines (ContextTimeoutEnabled is false): "+
				"store calls are bounded by the client's ReadTimeout and WriteTimeout, not by the call timeout",
				"read_timeout", c.Options().ReadTimeout.String(), "call_timeout", cfg.callTimeout.String())
		}
	case *goredis.Ring:
		return nil, errors.New("store/redis: new: a *redis.Ring is not supported: it shards keys over independent " +
			"servers and moves a failed shard's keys to another one, where a lease could be taken twice; " +
			"use a single server (with Sentinel) or Redis Cluster")
	default:
		return nil, fmt.Errorf("store/redis: new: unsupported client type %T (want *redis.Client or *redis.ClusterClient)", client)
	}
	s.closing, s.stop = context.WithCancel(context.Background())
	cctx, cancel := context.WithTimeout(ctx, cfg.callTimeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		s.stop()
		return nil, fmt.Errorf("store/redis: open: %w", err)
	}
	d, err := s.inspect(cctx)
	if err != nil {
		s.stop()
		return nil, s.wrapErr(cctx, "open", err)
	}
	s.durability = d
	if w := d.warning(); w != "" {
		cfg.logger.Warn("store/redis: "+w, "appendonly", d.AppendOnly, "appendfsync", d.AppendFsync,
			"save", d.Save, "maxmemory", d.MaxMemory, "maxmemory_policy", d.MaxMemoryPolicy, "redis_version", d.Version)
	}
	return s, nil
}

// Durability is what the store found out, when it opened, about how the
// server keeps data.
type Durability struct {
	// Version is the server's redis_version ("" if INFO was refused).
	Version string
	// Known is false when CONFIG GET was refused (managed services often
	// disable it): the fields below are then empty.
	Known bool
	// AppendOnly, AppendFsync and Save are the values of those settings.
	AppendOnly, AppendFsync, Save string
	// MaxMemory and MaxMemoryPolicy are the server's memory limit and what
	// it does when the limit is reached.
	MaxMemory, MaxMemoryPolicy string
}

// Volatile reports whether the server keeps nothing on disk (appendonly
// no and save ""): a restart loses every lease, control and history entry.
func (d Durability) Volatile() bool {
	return d.Known && d.AppendOnly == "no" && d.Save == ""
}

// Evicts reports whether the server may evict keys when it runs out of
// memory (a maxmemory limit with a policy other than noeviction): a lease,
// a disable or a member record can then vanish before its time.
func (d Durability) Evicts() bool {
	return d.Known && d.MaxMemory != "" && d.MaxMemory != "0" && d.MaxMemoryPolicy != "" && d.MaxMemoryPolicy != "noeviction"
}

// warning returns the one warning Open and New log, "" for none.
func (d Durability) warning() string {
	const tokens = "fencing tokens still grow after a loss of data, unless the server's clock went back"
	if !d.Known {
		return "cannot read the server's persistence and eviction settings (CONFIG GET refused): " +
			"what a restart or a full memory loses is unknown; " + tokens
	}
	var problems []string
	if d.Volatile() {
		problems = append(problems, "the Redis server keeps nothing on disk (appendonly no, save \"\"): "+
			"a restart loses every lease, every disable (disabled jobs start again) and the history")
	}
	if d.Evicts() {
		problems = append(problems, fmt.Sprintf("the Redis server evicts keys when full (maxmemory %s, maxmemory-policy %s): "+
			"a lease or a disable can vanish early; use maxmemory-policy noeviction", d.MaxMemory, d.MaxMemoryPolicy))
	}
	if len(problems) == 0 {
		return ""
	}
	return strings.Join(problems, "; ") + "; " + tokens +
		". Enable appendonly (appendfsync always keeps every change) for durable controls"
}

// Durability returns what the store found out, when it opened, about how
// the server keeps data.
func (s *Store) Durability() Durability { return s.durability }

// minVersion is the oldest server the scripts run on: streams (5.0) and
// effects replication of scripts by default (5.0), so that a script may
// write after calling TIME.
const minVersion = 5

// inspect reads the server's version and persistence settings.
func (s *Store) inspect(ctx context.Context) (Durability, error) {
	var d Durability
	var rerr goredis.Error
	info, err := s.c.Info(ctx, "server").Result()
	switch {
	case errors.As(err, &rerr):
		// INFO refused (an ACL): the server answered; its version is
		// unknown.
	case err != nil:
		return d, err
	default:
		d.Version = infoField(info, "redis_version")
		if major, _, _ := cutInt(d.Version); major < minVersion {
			return d, fmt.Errorf("Redis %d.0 or newer is needed, the server says redis_version:%q", minVersion, d.Version)
		}
	}
	cfg, err := s.c.ConfigGet(ctx, "*").Result()
	if err != nil {
		if errors.As(err, &rerr) {
			return d, nil // CONFIG refused: unknown
		}
		return d, err
	}
	d.Known = true
	d.AppendOnly, d.AppendFsync, d.Save = cfg["appendonly"], cfg["appendfsync"], cfg["save"]
	d.MaxMemory, d.MaxMemoryPolicy = cfg["maxmemory"], cfg["maxmemory-policy"]
	return d, nil
}

// Close stops every subscription and, if the Store was made by Open, closes
// its client. It does not release leases. Calls made after Close fail with
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
		return s.c.Close()
	}
	return nil
}

// begin starts a store call: it fails for a closed store or a done context,
// and returns the call's context, bounded by the call timeout.
func (s *Store) begin(ctx context.Context, op string) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("store/redis: %s: %w", op, context.Cause(ctx))
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.callTimeout)
	return cctx, cancel, nil
}

// scriptCall is one script to run with its keys and arguments.
type scriptCall struct {
	script *goredis.Script
	keys   []string
	args   []any
}

// run runs calls in one round trip: one EVALSHA, or a pipeline of them (in
// a cluster, go-redis sends each node its part at the same time). A script
// the server does not know (a restart, SCRIPT FLUSH) is sent again whole
// with EVAL, once: EVALSHA's refusal ran nothing.
func (s *Store) run(ctx context.Context, calls []scriptCall) ([]any, error) {
	if len(calls) == 1 {
		c := calls[0]
		v, err := c.script.Run(ctx, s.c, c.keys, c.args...).Result()
		return []any{v}, err
	}
	cmds := make([]*goredis.Cmd, len(calls))
	_, _ = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = c.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	var again []int
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			if goredis.HasErrorPrefix(err, "NOSCRIPT") {
				again = append(again, i)
				continue
			}
			return nil, err
		}
	}
	if len(again) > 0 {
		_, _ = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, i := range again {
				c := calls[i]
				cmds[i] = c.script.Eval(ctx, p, c.keys, c.args...)
			}
			return nil
		})
		for _, i := range again {
			if err := cmds[i].Err(); err != nil {
				return nil, err
			}
		}
	}
	out := make([]any, len(cmds))
	for i, cmd := range cmds {
		out[i] = cmd.Val()
	}
	return out, nil
}

// maxLocksPerScript bounds the locks one script handles. A script runs
// alone on the server, blocking every other client until it ends: a call
// on more locks sends several scripts in one pipeline, still one round
// trip, and the server serves other clients between them. Each lock is
// handled entirely within one script.
const maxLocksPerScript = 250

// groups splits the indexes of names into the groups that one script
// handles: the locks of one hash slot (everything, on a single server), at
// most maxLocksPerScript at a time, in order of first appearance.
func (s *Store) groups(names []string) [][]int {
	var groups [][]int
	if !s.cluster {
		for i := 0; i < len(names); i += maxLocksPerScript {
			g := make([]int, 0, min(maxLocksPerScript, len(names)-i))
			for j := i; j < len(names) && j < i+maxLocksPerScript; j++ {
				g = append(g, j)
			}
			groups = append(groups, g)
		}
		return groups
	}
	pos := map[int]int{} // slot -> its current group
	for i, n := range names {
		slot := slotOf(s.k.lease(n))
		g, ok := pos[slot]
		if !ok || len(groups[g]) == maxLocksPerScript {
			g = len(groups)
			pos[slot] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

func validateNames(op string, names []string) error {
	for _, n := range names {
		if err := store.ValidateLockName(n); err != nil {
			return fmt.Errorf("store/redis: %s: %w", op, err)
		}
	}
	return nil
}

func sortedUnique(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}

// ttlMillis converts a lease duration to the milliseconds PEXPIRE takes,
// refusing what it cannot represent.
func ttlMillis(op string, ttl time.Duration) (int64, error) {
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("store/redis: %s: ttl %v is shorter than the store's resolution of 1ms", op, ttl)
	}
	return ttl.Milliseconds(), nil
}

// memberArgs returns the arguments of write_member for holder id's
// announcement, and the announcement (nil when there is none).
func (s *Store) memberArgs(id string) ([]any, *announcement, string) {
	s.annMu.Lock()
	defer s.annMu.Unlock()
	a := s.announce[id]
	if a == nil {
		return nil, nil, ""
	}
	m := a.m
	sendList := a.sent != m.LockSetID
	args := []any{m.ID, m.Info, len(m.Locks), m.LockSetID, m.Masters,
		strconv.FormatFloat(m.Weight, 'g', -1, 64), a.ttl.Milliseconds()}
	if sendList {
		args = append(args, "1", len(m.Locks))
		for _, l := range m.Locks {
			args = append(args, l)
		}
	} else {
		args = append(args, "0", 0)
	}
	set := ""
	if sendList {
		set = m.LockSetID
	}
	return args, a, set
}

// memberWritten records the outcome of a member write: the list of set
// was sent (set != "") or the store asked for it (need).
func (s *Store) memberWritten(id string, a *announcement, set string, need bool) {
	s.annMu.Lock()
	defer s.annMu.Unlock()
	if s.announce[id] != a {
		return // announced again or left meanwhile
	}
	switch {
	case need:
		a.sent = ""
	case set != "":
		a.sent = set
	}
}

// globalCall returns, in a cluster, the call that writes what the lock
// scripts cannot (names into the index, the member record); nil when there
// is nothing to write.
func (s *Store) globalCall(index []string, member []any, memberID string) *scriptCall {
	if len(index) == 0 && member == nil {
		return nil
	}
	args := []any{s.k.channel(), len(index)}
	for _, n := range index {
		args = append(args, n)
	}
	if member != nil {
		args = append(append(args, "1"), member...)
	} else {
		args = append(args, "0")
	}
	return &scriptCall{globalsScript, []string{s.k.index(), s.k.member(memberID), s.k.mlocks(memberID), s.k.memberIndex()}, args}
}

// Acquire implements store.Store: one script per hash slot (one in all on
// a single server) takes every free, enabled lock that is not reserved for
// another holder, and writes the holder's member record.
func (s *Store) Acquire(ctx context.Context, holder store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	const op = "acquire"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, locks); err != nil {
		return nil, err
	}
	if holder.ID == "" {
		return nil, fmt.Errorf("store/redis: %s: empty holder ID", op)
	}
	ms, err := ttlMillis(op, ttl)
	if err != nil {
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
	member, ann, set := s.memberArgs(holder.ID)
	groups := s.groups(names)
	calls := make([]scriptCall, 0, len(groups)+1)
	for gi, g := range groups {
		c := scriptCall{script: acquireScript}
		flag := "0"
		if !s.cluster {
			flag = "1"
		}
		memberFlag := "0"
		if !s.cluster && member != nil && gi == 0 {
			memberFlag = "1"
		}
		c.args = []any{flag, holder.ID, holder.Info, ms, len(g), s.k.channel(), memberFlag}
		for _, i := range g {
			c.keys = append(c.keys, s.k.lease(names[i]))
			c.args = append(c.args, names[i])
		}
		if !s.cluster {
			c.keys = append(c.keys, s.k.index(), s.k.member(holder.ID), s.k.mlocks(holder.ID), s.k.memberIndex())
			if memberFlag == "1" {
				c.args = append(c.args, member...)
			}
		}
		calls = append(calls, c)
	}
	if s.cluster {
		if gc := s.globalCall(names, member, holder.ID); gc != nil {
			calls = append(calls, *gc)
		}
	}
	res, err := s.run(ctx, calls)
	if err != nil {
		return nil, s.wrapErr(ctx, op, err)
	}
	out := make([]store.LockState, len(names))
	need := false
	for gi, g := range groups {
		states, n, err := splitReply(res[gi])
		if err != nil {
			return nil, fmt.Errorf("store/redis: %s: %w", op, err)
		}
		need = need || n
		if len(states) != len(g) {
			return nil, fmt.Errorf("store/redis: %s: %d states for %d locks", op, len(states), len(g))
		}
		for j, i := range g {
			st, err := parseState(names[i], states[j], true)
			if err != nil {
				return nil, fmt.Errorf("store/redis: %s: %w", op, err)
			}
			out[i] = st
		}
	}
	if s.cluster && member != nil {
		need = asInt(res[len(res)-1]) == 1
	}
	if member != nil {
		s.memberWritten(holder.ID, ann, set, need)
	}
	return out, nil
}

// splitReply splits a {results, need} reply.
func splitReply(v any) ([]any, bool, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return nil, false, fmt.Errorf("unexpected script reply %T", v)
	}
	items, ok := arr[0].([]any)
	if !ok {
		if arr[0] == nil {
			return nil, asInt(arr[1]) == 1, nil
		}
		return nil, false, fmt.Errorf("unexpected script reply %T", arr[0])
	}
	return items, asInt(arr[1]) == 1, nil
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func usTime(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// parseState decodes the state fields of a script reply (see luaPrelude's
// state), followed, for Acquire, by acquired and the previous lease.
func parseState(lock string, v any, acquire bool) (store.LockState, error) {
	f, ok := v.([]any)
	if !ok || len(f) < 17 || (acquire && len(f) < 21) {
		return store.LockState{}, fmt.Errorf("unexpected state reply for %q: %T", lock, v)
	}
	st := store.LockState{
		Lock:       lock,
		Holder:     asString(f[1]),
		HolderInfo: asString(f[2]),
		Token:      asInt(f[3]),
		AcquiredAt: usTime(asInt(f[4])),
		RenewedAt:  usTime(asInt(f[5])),
		ExpiresAt:  usTime(asInt(f[6])),
		TTL:        time.Duration(asInt(f[7])) * time.Microsecond,
		Revoked:    asInt(f[8]) == 1,
		Disabled:   asInt(f[9]) == 1,
		Reason:     asString(f[10]),
		ChangedBy:  asString(f[11]),
		ChangedAt:  usTime(asInt(f[12])),

		HandoffRequested: asInt(f[13]) == 1,
		HandoffTo:        asString(f[14]),
		ReservedFor:      asString(f[15]),
		ReservedTTL:      time.Duration(asInt(f[16])) * time.Microsecond,
	}
	if acquire {
		st.Acquired = asInt(f[17]) == 1
		st.PrevHolder, st.PrevToken, st.PrevExpired = asString(f[18]), asInt(f[19]), asInt(f[20]) == 1
	}
	return st, nil
}

func known(v any) bool {
	f, ok := v.([]any)
	return ok && len(f) > 0 && asInt(f[0]) == 1
}

// Renew implements store.Store. Results come in the order of leases.
func (s *Store) Renew(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	const op = "renew"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	names := make([]string, len(leases))
	for i, l := range leases {
		names[i] = l.Lock
	}
	if err := validateNames(op, names); err != nil {
		return nil, err
	}
	ms, err := ttlMillis(op, ttl)
	if err != nil {
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
	member, ann, set := s.memberArgs(holderID)
	groups := s.groups(names)
	calls := make([]scriptCall, 0, len(groups)+1)
	for gi, g := range groups {
		flag, memberFlag := "0", "0"
		if !s.cluster {
			flag = "1"
			if member != nil && gi == 0 {
				memberFlag = "1"
			}
		}
		c := scriptCall{script: renewScript, args: []any{flag, holderID, ms, len(g), s.k.channel(), memberFlag}}
		for _, i := range g {
			c.keys = append(c.keys, s.k.lease(names[i]))
			c.args = append(c.args, leases[i].Token)
		}
		if !s.cluster {
			c.keys = append(c.keys, s.k.member(holderID), s.k.mlocks(holderID), s.k.memberIndex())
			if memberFlag == "1" {
				c.args = append(c.args, member...)
			}
		}
		calls = append(calls, c)
	}
	if s.cluster {
		if gc := s.globalCall(nil, member, holderID); gc != nil {
			calls = append(calls, *gc)
		}
	}
	res, err := s.run(ctx, calls)
	if err != nil {
		return nil, s.wrapErr(ctx, op, err)
	}
	out := make([]store.RenewResult, len(leases))
	need := false
	for gi, g := range groups {
		items, n, err := splitReply(res[gi])
		if err != nil {
			return nil, fmt.Errorf("store/redis: %s: %w", op, err)
		}
		need = need || n
		if len(items) != len(g) {
			return nil, fmt.Errorf("store/redis: %s: %d results for %d leases", op, len(items), len(g))
		}
		for j, i := range g {
			f, ok := items[j].([]any)
			if !ok || len(f) != 6 {
				return nil, fmt.Errorf("store/redis: %s: unexpected result %T", op, items[j])
			}
			out[i] = store.RenewResult{
				Lock: leases[i].Lock, Token: leases[i].Token,
				Renewed:          asInt(f[0]) == 1,
				TTL:              time.Duration(asInt(f[1])) * time.Microsecond,
				Revoked:          asInt(f[2]) == 1,
				Disabled:         asInt(f[3]) == 1,
				HandoffRequested: asInt(f[4]) == 1,
				HandoffTo:        asString(f[5]),
			}
		}
	}
	if s.cluster && member != nil {
		need = asInt(res[len(res)-1]) == 1
	}
	if member != nil {
		s.memberWritten(holderID, ann, set, need)
	}
	return out, nil
}

// Release implements store.Store. It publishes each released lock on the
// store's channel, in the same script.
func (s *Store) Release(ctx context.Context, holderID string, leases []store.LeaseRef) error {
	const op = "release"
	if s.closed.Load() {
		return fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	names := make([]string, len(leases))
	for i, l := range leases {
		names[i] = l.Lock
	}
	if err := validateNames(op, names); err != nil {
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
	groups := s.groups(names)
	calls := make([]scriptCall, 0, len(groups))
	for _, g := range groups {
		c := scriptCall{script: releaseScript, args: []any{holderID, len(g), s.k.channel()}}
		for _, i := range g {
			l := leases[i]
			c.keys = append(c.keys, s.k.lease(l.Lock))
			c.args = append(c.args, l.Lock, l.Token, l.Successor, reserveMillis(l))
		}
		calls = append(calls, c)
	}
	if _, err := s.run(ctx, calls); err != nil {
		return s.wrapErr(ctx, op, err)
	}
	return nil
}

// reserveMillis is the reservation a release of l asks for, in the
// scripts' milliseconds (at least 1 when asked); 0 for none.
func reserveMillis(l store.LeaseRef) int64 {
	if l.Successor == "" || l.Reserve <= 0 {
		return 0
	}
	return max(l.Reserve.Milliseconds(), 1)
}

// Transfer implements store.Transfers: one script per hash slot (one in
// all on a single server, at most 250 locks each, in one pipeline) ends
// each lease and gives it to its successor in the same script (see
// transferScript), and publishes the locks as Release and Acquire do. A
// successor is given a lock only if it has an unexpired member record. On
// a single server the script reads the successors' member records itself,
// so that check is atomic with the give: once a Leave has run, no lease is
// given to its instance. In a cluster the records live in another slot,
// so Transfer reads them first, in one more round trip (to one node), when
// a ref names a successor, and passes what it found (existence and info)
// to the scripts: there a Leave (or an expiry) that commits between that
// read and a script does not stop the give, and the lease given to the
// departed instance waits for its TTL (see the package documentation).
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	const op = "transfer"
	if s.closed.Load() {
		return fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	names := make([]string, len(leases))
	var successors []string
	for i, l := range leases {
		names[i] = l.Lock
		if l.Successor != "" {
			successors = append(successors, l.Successor)
		}
	}
	if err := validateNames(op, names); err != nil {
		return err
	}
	var ms int64
	if len(successors) > 0 {
		var err error
		if ms, err = ttlMillis(op, ttl); err != nil {
			return err
		}
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(leases) == 0 {
		return nil
	}
	var infos map[string]string
	if s.cluster && len(successors) > 0 {
		if infos, err = s.memberInfos(ctx, sortedUnique(successors)); err != nil {
			return s.wrapErr(ctx, op, err)
		}
	}
	groups := s.groups(names)
	calls := make([]scriptCall, 0, len(groups))
	for _, g := range groups {
		flag := "0"
		if !s.cluster {
			flag = "1"
		}
		c := scriptCall{script: transferScript, args: []any{flag, holderID, ms, len(g), s.k.channel()}}
		for _, i := range g {
			l := leases[i]
			c.keys = append(c.keys, s.k.lease(l.Lock))
			info, member := infos[l.Successor]
			memberFlag := "0"
			if member {
				memberFlag = "1"
			}
			c.args = append(c.args, l.Lock, l.Token, l.Successor, reserveMillis(l), memberFlag, info)
		}
		if !s.cluster {
			for _, i := range g {
				c.keys = append(c.keys, s.k.member(leases[i].Successor))
			}
		}
		calls = append(calls, c)
	}
	if _, err := s.run(ctx, calls); err != nil {
		return s.wrapErr(ctx, op, err)
	}
	return nil
}

// memberInfos reads the Info of the unexpired member records of ids (all
// in the slot of the shared keys) in one pipeline. The map has an entry
// exactly for each id whose record exists (a member hash exists while it
// is unexpired, and always has its info field, possibly "").
func (s *Store) memberInfos(ctx context.Context, ids []string) (map[string]string, error) {
	cmds := make([]*goredis.StringCmd, len(ids))
	_, _ = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGet(ctx, s.k.member(id), "info")
		}
		return nil
	})
	infos := make(map[string]string, len(ids))
	for i, cmd := range cmds {
		v, err := cmd.Result()
		if errors.Is(err, goredis.Nil) {
			continue // no record: not given a lock
		}
		if err != nil {
			return nil, err
		}
		infos[ids[i]] = v
	}
	return infos, nil
}

// Disable implements store.Store. A lock that is already disabled is left
// as it is (its reason is not replaced) and Changed is false.
func (s *Store) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	return s.control(ctx, "disable", lock, reason, by)
}

// Enable implements store.Store. It clears the disabled mark and the
// reason, and records by and the server's time.
func (s *Store) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	return s.control(ctx, "enable", lock, "", by)
}

func (s *Store) control(ctx context.Context, op, lock, reason, by string) (store.ControlChange, error) {
	if s.closed.Load() {
		return store.ControlChange{}, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, []string{lock}); err != nil {
		return store.ControlChange{}, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return store.ControlChange{}, err
	}
	defer cancel()
	c := scriptCall{script: controlScript, keys: []string{s.k.lease(lock)},
		args: []any{"0", lock, op, reason, by, s.k.channel()}}
	calls := []scriptCall{c}
	if s.cluster {
		if op == "disable" {
			calls = append(calls, *s.globalCall([]string{lock}, nil, ""))
		}
	} else {
		calls[0].args[0] = "1"
		calls[0].keys = append(calls[0].keys, s.k.index())
	}
	res, err := s.run(ctx, calls)
	if err != nil {
		return store.ControlChange{}, s.wrapErr(ctx, op, err)
	}
	arr, ok := res[0].([]any)
	if !ok || len(arr) != 2 {
		return store.ControlChange{}, fmt.Errorf("store/redis: %s: unexpected reply %T", op, res[0])
	}
	st, err := parseState(lock, arr[1], false)
	if err != nil {
		return store.ControlChange{}, fmt.Errorf("store/redis: %s: %w", op, err)
	}
	return store.ControlChange{Changed: asInt(arr[0]) == 1, State: st}, nil
}

// Handoff implements store.Handoffs: it marks the lease's hand-off request
// (a field of the lease hash, so it ends with the lease) and publishes it.
func (s *Store) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	const op = "hand-off"
	if s.closed.Load() {
		return store.LockState{}, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, []string{lock}); err != nil {
		return store.LockState{}, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return store.LockState{}, err
	}
	defer cancel()
	res, err := s.run(ctx, []scriptCall{{handoffScript, []string{s.k.lease(lock)}, []any{lock, to, s.k.channel()}}})
	if err != nil {
		return store.LockState{}, s.wrapErr(ctx, op, err)
	}
	arr, ok := res[0].([]any)
	if !ok || len(arr) != 2 {
		return store.LockState{}, fmt.Errorf("store/redis: %s: unexpected reply %T", op, res[0])
	}
	st, err := parseState(lock, arr[1], false)
	if err != nil {
		return store.LockState{}, fmt.Errorf("store/redis: %s: %w", op, err)
	}
	switch asInt(arr[0]) {
	case 1:
		return st, fmt.Errorf("store/redis: hand-off of %q: %w", lock, store.ErrNotHeld)
	case 2:
		return st, fmt.Errorf("store/redis: hand-off of %q: %w", lock, store.ErrLockDisabled)
	}
	return st, nil
}

// Locks implements store.Store. Names are ordered in byte order. Without
// names it reads the index of known locks first (a second round trip) and
// returns those that still have a record.
func (s *Store) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	const op = "locks"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	if err := validateNames(op, names); err != nil {
		return nil, err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	all := len(names) == 0
	if all {
		names, err = s.c.ZRange(ctx, s.k.index(), 0, -1).Result()
		if err != nil {
			return nil, s.wrapErr(ctx, op, err)
		}
		if len(names) == 0 {
			return []store.LockState{}, nil
		}
	}
	names = sortedUnique(names)
	groups := s.groups(names)
	calls := make([]scriptCall, 0, len(groups))
	for _, g := range groups {
		c := scriptCall{script: locksScript}
		for _, i := range g {
			c.keys = append(c.keys, s.k.lease(names[i]))
		}
		calls = append(calls, c)
	}
	res, err := s.run(ctx, calls)
	if err != nil {
		return nil, s.wrapErr(ctx, op, err)
	}
	type item struct {
		st    store.LockState
		known bool
	}
	items := make([]item, len(names))
	for gi, g := range groups {
		states, ok := res[gi].([]any)
		if !ok || len(states) != len(g) {
			return nil, fmt.Errorf("store/redis: %s: unexpected reply %T", op, res[gi])
		}
		for j, i := range g {
			st, err := parseState(names[i], states[j], false)
			if err != nil {
				return nil, fmt.Errorf("store/redis: %s: %w", op, err)
			}
			items[i] = item{st, known(states[j])}
		}
	}
	out := make([]store.LockState, 0, len(items))
	for _, it := range items {
		if all && !it.known {
			continue // keys deleted by hand: the index still names it
		}
		out = append(out, it.st)
	}
	return out, nil
}

// Announce implements store.Membership. It makes no call.
func (s *Store) Announce(m store.Member, ttl time.Duration) {
	m.Locks = slices.Clone(m.Locks)
	slices.Sort(m.Locks)
	m.LockCount = len(m.Locks)
	if m.Weight == 0 {
		m.Weight = 1
	}
	s.annMu.Lock()
	defer s.annMu.Unlock()
	if s.announce == nil {
		s.announce = map[string]*announcement{}
	}
	a := &announcement{m: m, ttl: max(ttl, time.Millisecond)}
	if prev := s.announce[m.ID]; prev != nil && prev.m.LockSetID == m.LockSetID {
		a.sent = prev.sent
	}
	s.announce[m.ID] = a
}

// Members implements store.Membership: one script reads the member index,
// drops expired entries and reads each member's record.
func (s *Store) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	const op = "members"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
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
	with := "0"
	if f.WithLocks {
		with = "1"
	}
	res, err := s.run(ctx, []scriptCall{{membersScript, []string{s.k.memberIndex()},
		[]any{f.Lock, with, s.k.member(""), s.k.mlocks("")}}})
	if err != nil {
		return nil, s.wrapErr(ctx, op, err)
	}
	rows, ok := res[0].([]any)
	if !ok {
		return nil, fmt.Errorf("store/redis: %s: unexpected reply %T", op, res[0])
	}
	out := make([]store.Member, 0, len(rows))
	for _, r := range rows {
		f2, ok := r.([]any)
		if !ok || len(f2) != 9 {
			return nil, fmt.Errorf("store/redis: %s: unexpected member %T", op, r)
		}
		w, _ := strconv.ParseFloat(asString(f2[5]), 64)
		m := store.Member{
			ID: asString(f2[0]), Info: asString(f2[1]), LockCount: int(asInt(f2[2])),
			LockSetID: asString(f2[3]), Masters: int(asInt(f2[4])), Weight: w,
			SeenAt: usTime(asInt(f2[6])), TTL: time.Duration(asInt(f2[7])) * time.Millisecond,
		}
		if f.WithLocks {
			ls, _ := f2[8].([]any)
			m.Locks = make([]string, 0, len(ls))
			for _, l := range ls {
				m.Locks = append(m.Locks, asString(l))
			}
			slices.Sort(m.Locks)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b store.Member) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Leave implements store.Membership.
func (s *Store) Leave(ctx context.Context, id string) error {
	const op = "leave"
	s.annMu.Lock()
	delete(s.announce, id)
	s.annMu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.run(ctx, []scriptCall{{leaveScript, []string{s.k.member(id), s.k.mlocks(id), s.k.memberIndex()},
		[]any{id, s.k.channel()}}})
	return s.wrapErr(ctx, op, err)
}

// AppendEvents implements store.History: one script appends the batch to
// the stream under IDs it derives from the server's clock and trims the
// stream to the retention.
func (s *Store) AppendEvents(ctx context.Context, events []store.Event) error {
	const op = "append events"
	if s.closed.Load() {
		return fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	for _, e := range events {
		if err := store.ValidateLockName(e.Lock); err != nil {
			return fmt.Errorf("store/redis: %s: %w", op, err)
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
	// survive the trimming: append only those.
	if over := len(events) - s.cfg.historyLimit; over > 0 {
		events = events[over:]
	}
	args := make([]any, 0, 3+6*len(events))
	args = append(args, s.cfg.historyLimit, s.k.channel(), len(events))
	for _, e := range events {
		args = append(args, e.Lock, store.CleanText(string(e.Kind)), store.CleanText(e.Instance), e.Token,
			store.CleanText(e.Reason), store.CleanText(e.Remote))
	}
	_, err = s.run(ctx, []scriptCall{{appendScript, []string{s.k.history()}, args}})
	return s.wrapErr(ctx, op, err)
}

// Events implements store.History. Event IDs are the numbers of the
// stream's entry IDs ("<n>-0"). A read filtered by lock scans the stream
// inside one script, newest first, until it has the page.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	const op = "events"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
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
	before := max(f.BeforeID, 0)
	res, err := s.run(ctx, []scriptCall{{eventsScript, []string{s.k.history()},
		[]any{before, store.EventsLimit(f.Limit), f.Lock}}})
	if err != nil {
		return nil, s.wrapErr(ctx, op, err)
	}
	rows, ok := res[0].([]any)
	if !ok {
		return nil, fmt.Errorf("store/redis: %s: unexpected reply %T", op, res[0])
	}
	out := make([]store.Event, 0, len(rows))
	for _, r := range rows {
		e, err := parseEvent(r)
		if err != nil {
			return nil, fmt.Errorf("store/redis: %s: %w", op, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func parseEvent(v any) (store.Event, error) {
	r, ok := v.([]any)
	if !ok || len(r) != 2 {
		return store.Event{}, fmt.Errorf("unexpected stream entry %T", v)
	}
	id := asString(r[0])
	n, _, ok := cutInt(id)
	if !ok || n <= 0 {
		return store.Event{}, fmt.Errorf("unexpected stream entry ID %q", id)
	}
	e := store.Event{ID: n}
	fields, _ := r[1].([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		val := asString(fields[i+1])
		switch asString(fields[i]) {
		case "l":
			e.Lock = val
		case "k":
			e.Kind = store.EventKind(val)
		case "i":
			e.Instance = val
		case "t":
			e.Token, _ = strconv.ParseInt(val, 10, 64)
		case "r":
			e.Reason = val
		case "a":
			e.Remote = val
		case "at":
			us, _ := strconv.ParseInt(val, 10, 64)
			e.At = usTime(us)
		}
	}
	return e, nil
}

// cutInt parses the leading decimal integer of s ("7.0.15" → 7, "17-0" →
// 17) and returns the rest.
func cutInt(s string) (int64, string, bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	return n, s[i:], err == nil
}

// infoField returns the value of name in an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), name+":"); ok {
			return v
		}
	}
	return ""
}
