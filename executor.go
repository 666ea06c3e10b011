package masterjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/masterjob/masterjob/internal/hostclock"
	"github.com/masterjob/masterjob/store"
)

// Executor elects this instance master of the locks registered with
// StartMaster and runs their jobs while it is. Create it with New, register
// jobs, then call Run. An Executor runs once: after Run returns it is closed.
type Executor struct {
	st     store.Store
	cfg    Config
	log    *slog.Logger
	obs    Observer
	holder store.Holder
	// now is the clock of trust windows and deadlines: hostclock.Now (the
	// monotonic clock plus time the host spent suspended) unless a test
	// injects another. Its readings compare only with each other.
	now func() time.Time

	opts options // as given to New, for the per-lock settings of StartMaster

	mu        sync.Mutex
	jobs      map[string]*registration
	masters   map[string]Lease
	deadlines map[string]time.Time // trust window of each lease in masters
	// settled is, per lock, the greatest token this executor is done with,
	// across its loops: a job started with it, or the lease was let go
	// without one (loop.letGo). A lease of this instance's with a greater
	// token never ran a job and was never released, and may be adopted
	// (loop.adopt); one with a token up to it never is.
	settled  map[string]int64
	storeErr error     // error of the last store round trip, nil if it succeeded
	errSince time.Time // when store round trips started failing
	running  bool
	closed   bool
	run      *runState // while Run runs

	leaders      map[string]Leader // latest known master of each registered lock
	balance      balanceView       // latest balance view (balance.go)
	balanceCfg   BalanceConfig
	weight       float64
	lockSet      []string // registered locks, sorted, for the member record
	lockSetID    string
	lockSetDirty bool
	left         bool                 // the member record was removed at the end of Run
	suspects     map[string]time.Time // instances suspected dead, until when (balance.go)
	// timings holds the distinct timings of the registered locks (a
	// handful, however many locks), for longestOf.
	timings map[Config]bool
	// readMembers asks the balancer to read the member list now (a
	// shutdown, whose successors must not have left meanwhile).
	readMembers chan struct{}
	// membersFresh is set as the balancer begins a read of the member
	// list, and cleared by what may change the list unseen by that read: a
	// pushed member change or resync, a new subscription (changes are not
	// pushed while none is up), the read's failure (memberListCurrent).
	membersFresh atomic.Bool
	// urgentMembers is set from a shutdown that names successors until
	// its Leave: a pushed member change is then read at once, not after
	// memberRefreshMin.
	urgentMembers atomic.Bool
	// pushing is true while the store's notifications are subscribed:
	// releases are pushed, so checks between sweeps may leave out the
	// locks others hold (loop.checkList).
	pushing atomic.Bool
}

// registration is a job registered with StartMaster, with the timing of
// its lock. Locks with equal timings form a timing class, served by one
// loop: one renewal and one check per heartbeat and check interval for the
// whole class.
type registration struct {
	job Job
	cfg Config
}

// runState is the state of one Run that StartMaster needs.
type runState struct {
	ctx     context.Context
	log     *slog.Logger
	startAt time.Time // when Run started, on the executor's clock
	loops   map[Config]*loop
	wg      sync.WaitGroup
	errs    []error // of loops that ended with an error
	ended   bool    // Run's context is done: no new loops
	// handedOver is when the shutdown's last release to a named successor
	// committed (zero if none did): see settleAfterHandOff.
	handedOver time.Time
}

// New returns an executor on st. Its configuration is resolved from
// defaults, the config file, the environment and opts (see Config); an
// invalid value is reported as an error wrapping ErrInvalidConfig that names
// the setting and its source.
func New(st store.Store, opts ...Option) (*Executor, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: store is nil", ErrInvalidConfig)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := resolveConfig(&o)
	if err != nil {
		return nil, err
	}
	e := &Executor{
		st:        st,
		cfg:       cfg,
		log:       o.logger,
		obs:       o.observer,
		jobs:      map[string]*registration{},
		opts:      o,
		leaders:   map[string]Leader{},
		weight:    1,
		masters:   map[string]Lease{},
		deadlines: map[string]time.Time{},
		settled:   map[string]int64{},
		now:       o.clock,

		readMembers: make(chan struct{}, 1),
	}
	if e.now == nil {
		e.now = hostclock.Now
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.obs == nil {
		e.obs = NopObserver{}
	}
	e.holder.ID = o.instanceID
	if e.holder.ID == "" {
		e.holder.ID = newInstanceID()
	}
	// Ids travel in the stores' pushes (store.Change) and the operators'
	// views: they follow the rules of lock names (printable, at most 200
	// bytes).
	if err := store.ValidateLockName(e.holder.ID); err != nil {
		return nil, fmt.Errorf("%w: instance id %q (option WithInstanceID) must follow the rules of lock names: %w", ErrInvalidConfig, e.holder.ID, err)
	}
	if o.balance != nil {
		e.balanceCfg = *o.balance
		if e.balanceCfg.Weight < 0 || math.IsNaN(e.balanceCfg.Weight) || math.IsInf(e.balanceCfg.Weight, 0) || e.balanceCfg.Slack < 0 {
			return nil, fmt.Errorf("%w: balance weight %v and slack %d (option WithBalance) must not be negative", ErrInvalidConfig, e.balanceCfg.Weight, e.balanceCfg.Slack)
		}
		if e.balanceCfg.Weight > 0 {
			e.weight = e.balanceCfg.Weight
		}
	}
	info := o.info
	if info == (InstanceInfo{}) {
		info.Host, _ = os.Hostname()
		info.PID = os.Getpid()
	}
	if info.Started.IsZero() {
		info.Started = time.Now().UTC().Truncate(time.Millisecond)
	}
	b, _ := json.Marshal(info)
	e.holder.Info = string(b)
	e.log = e.log.With("instance", e.holder.ID)
	return e, nil
}

func newInstanceID() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	if host == "" {
		host = "instance"
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Config returns the resolved configuration.
func (e *Executor) Config() Config { return e.cfg }

// InstanceID returns this instance's id.
func (e *Executor) InstanceID() string { return e.holder.ID }

// StartMaster registers job under lock. It may be called before or while
// Run runs. The lock name must pass store.ValidateLockName.
//
// opts may set the timings of this lock (WithCheckMasterInterval,
// WithHeartbeatInterval, WithTolerance, WithSafetyMargin,
// WithShutdownTimeout, WithMaxHeartbeatRetryCount, WithInitDelay), as the
// seed's startMaster did per call. They come last in the order of sources:
// defaults < config file < environment < New's options < StartMaster's
// options. Locks with equal timings share their store round trips: an
// instance pays one renewal per heartbeat and one check per check
// interval for each distinct set of timings, whatever the number of locks.
// Other options apply to the executor as a whole and are refused here. An
// invalid timing is an error wrapping ErrInvalidConfig that names the
// setting, its source and the lock.
func (e *Executor) StartMaster(lock string, job Job, opts ...Option) error {
	if err := store.ValidateLockName(lock); err != nil {
		return fmt.Errorf("masterjob: StartMaster: %w", err)
	}
	if err := checkJob(job); err != nil {
		return fmt.Errorf("masterjob: StartMaster %q: %w", lock, err)
	}
	cfg, err := e.lockConfig(lock, opts)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if _, ok := e.jobs[lock]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateLock, lock)
	}
	e.jobs[lock] = &registration{job: job, cfg: cfg}
	if e.timings == nil {
		e.timings = map[Config]bool{}
	}
	e.timings[cfg] = true
	e.lockSetDirty = true
	if r := e.run; r != nil && !r.ended {
		if l := r.loops[cfg]; l != nil {
			l.inbox.markAdded()
		} else {
			e.startLoopLocked(cfg)
		}
	}
	return nil
}

// LockConfig returns the timing of a registered lock: the executor's
// Config, overridden by the options given to StartMaster for it. ok is
// false for a lock not registered.
func (e *Executor) LockConfig(lock string) (cfg Config, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg := e.jobs[lock]
	if reg == nil {
		return Config{}, false
	}
	return reg.cfg, true
}

// ErrNilJob is returned (wrapped) by StartMaster for a job that cannot run:
// a nil Job, a nil JobFunc, or StartStop with a nil start function.
var ErrNilJob = errors.New("masterjob: job has no start function")

func checkJob(job Job) error {
	switch j := job.(type) {
	case nil:
		return fmt.Errorf("%w: job is nil", ErrNilJob)
	case JobFunc:
		if j == nil {
			return fmt.Errorf("%w: JobFunc is nil", ErrNilJob)
		}
	case startStopJob:
		if j.start == nil {
			return fmt.Errorf("%w: StartStop's start is nil", ErrNilJob)
		}
	}
	return nil
}

// lockConfig resolves the timing of lock: the executor's sources, then
// opts.
func (e *Executor) lockConfig(lock string, opts []Option) (Config, error) {
	if len(opts) == 0 {
		return e.cfg, nil
	}
	var only options
	for _, opt := range opts {
		if opt != nil {
			opt(&only)
		}
	}
	if only.configFile != nil || only.lookupEnv != nil || only.logger != nil || only.instanceID != "" ||
		only.info != (InstanceInfo{}) || only.observer != nil || only.clock != nil {
		return Config{}, fmt.Errorf("%w: StartMaster %q: only timing options apply to a lock; the config file, environment, logger, instance and observer belong to the executor (New)",
			ErrInvalidConfig, lock)
	}
	o := e.opts
	o.overrides = maps.Clone(e.opts.overrides)
	o.lock = lock
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return resolveConfig(&o)
}

// Masters returns the leases whose jobs this instance runs now, sorted by
// lock name.
func (e *Executor) Masters() []Lease {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Lease, 0, len(e.masters))
	for _, l := range e.masters {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lock < out[j].Lock })
	return out
}

// Sentinel errors of Ready.
var (
	// ErrNotRunning: Run is not running.
	ErrNotRunning = errors.New("masterjob: executor not running")
	// ErrStoreUnreachable: the last store round trip failed.
	ErrStoreUnreachable = errors.New("masterjob: store unreachable")
	// ErrPastTrustWindow: a job is still running after its lease's trust
	// window closed (it is slow to stop).
	ErrPastTrustWindow = errors.New("masterjob: job running past its trust window")
)

// Ready returns nil when the executor is fit to serve, for readiness
// probes: Run is running, its last store round trip succeeded, and no job
// runs past its lease's trust window. Otherwise it returns an error
// wrapping ErrNotRunning, ErrStoreUnreachable or ErrPastTrustWindow.
func (e *Executor) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.running {
		return ErrNotRunning
	}
	now := e.now()
	for lock, d := range e.deadlines {
		if !now.Before(d) {
			return fmt.Errorf("%w: lock %q, %s past", ErrPastTrustWindow, lock, now.Sub(d).Round(time.Millisecond))
		}
	}
	if e.storeErr != nil {
		return fmt.Errorf("%w since %s ago: %w", ErrStoreUnreachable,
			time.Since(e.errSince).Round(time.Millisecond), e.storeErr)
	}
	return nil
}

// setStoreResult records the outcome of a store round trip for Ready.
func (e *Executor) setStoreResult(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.storeErr = nil
		return
	}
	if e.storeErr == nil {
		e.errSince = time.Now()
	}
	e.storeErr = err
}

// Locks returns the store's state of the given locks, or of all known locks.
func (e *Executor) Locks(ctx context.Context, locks ...string) ([]store.LockState, error) {
	return e.st.Locks(ctx, locks...)
}

// Disable disables lock cluster-wide: its master stops the job and no
// instance acquires it until Enable. The change is recorded as made by this
// instance.
func (e *Executor) Disable(ctx context.Context, lock, reason string) (store.ControlChange, error) {
	return e.st.Disable(ctx, lock, reason, e.holder.ID)
}

// Enable enables lock again; one instance becomes master and starts the job.
func (e *Executor) Enable(ctx context.Context, lock string) (store.ControlChange, error) {
	return e.st.Enable(ctx, lock, e.holder.ID)
}

// Run elects and runs jobs until ctx is done, then stops every running job
// (cancels its context and waits for it to return), releases its lease, and
// returns nil. If jobs do not stop within Config.ShutdownTimeout, Run stops
// renewing their leases and returns ErrShutdownTimeout. Store outages are
// survived: Run retries with backoff and never returns because of them.
func (e *Executor) Run(ctx context.Context) error {
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return ErrClosed
	case e.running:
		e.mu.Unlock()
		return ErrAlreadyRunning
	}
	tolerances := []time.Duration{e.cfg.Tolerance}
	for _, reg := range e.jobs {
		if !slices.Contains(tolerances, reg.cfg.Tolerance) {
			tolerances = append(tolerances, reg.cfg.Tolerance)
		}
	}
	e.mu.Unlock()
	if err := e.checkTolerances(ctx, tolerances); err != nil {
		return err
	}
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return ErrClosed
	case e.running:
		e.mu.Unlock()
		return ErrAlreadyRunning
	}
	e.running = true
	e.urgentMembers.Store(false)
	alog, h := newAsyncLog(e.log.Handler())
	r := &runState{ctx: ctx, log: slog.New(h), startAt: e.now(), loops: map[Config]*loop{}}
	e.run = r
	for _, reg := range e.jobs {
		if r.loops[reg.cfg] == nil {
			e.startLoopLocked(reg.cfg)
		}
	}
	e.mu.Unlock()

	// A member joining or leaving, pushed by the store, makes the balancer
	// read the member list again (a graceful shutdown hands its locks to
	// the peers of that list: it must not name one that left).
	members := make(chan struct{}, 1)
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	if n, ok := e.st.(store.Notifier); ok && ctx.Err() == nil {
		hb := &hub{n: n, log: r.log, timeout: subscribeTimeout(e.cfg), inboxes: e.inboxes, members: members, pushing: &e.pushing, fresh: &e.membersFresh}
		go func() {
			defer close(hubDone)
			hb.run(hubCtx)
		}()
	} else {
		close(hubDone)
	}

	balDone := make(chan struct{})
	if ms, ok := e.st.(store.Membership); ok && !e.balanceCfg.Off && ctx.Err() == nil {
		b := &balancer{e: e, ms: ms, interval: e.cfg.CheckMasterInterval, cfg: e.balanceCfg, changed: members, now: e.readMembers}
		go func() {
			defer close(balDone)
			b.run(hubCtx)
		}()
	} else {
		close(balDone)
	}

	<-ctx.Done()
	e.mu.Lock()
	r.ended = true
	e.mu.Unlock()
	r.wg.Wait()
	e.settleAfterHandOff(r)
	e.leave()
	// The loops have ended: end the subscription, and wait until the store
	// has let go of it, so that nothing of Run outlives it.
	stopHub()
	<-hubDone
	<-balDone
	alog.close()

	e.mu.Lock()
	e.closed = true
	e.running = false
	e.run = nil
	clear(e.masters)
	clear(e.deadlines)
	errs := r.errs
	e.mu.Unlock()
	return errors.Join(errs...)
}

// handOffSettle is how long after a shutdown's hand-off to a named
// successor Run waits before its own last store calls (the member record's
// removal, then whatever its caller does once Run returns: closing the
// store, appending history, exiting): the successor is starting its job
// then, and on a small host these compete with it for the CPU and the
// store. On a 2-core host the median hand-off was 1.8–9.6 ms shorter with the
// wait (docs/benchmarks.md, twelfth look). The member record's removal is
// part of what competes: removed first, then the wait, the hand-off was
// about as slow as without it. Meanwhile the record still lists this instance,
// with no mastership: a peer's own hand-off in those 100 ms may give it a
// lease, which it releases after the wait (releaseGiven).
const handOffSettle = 100 * time.Millisecond

// settleAfterHandOff waits until handOffSettle has passed since r's last
// hand-off to a named successor, if it made one.
func (e *Executor) settleAfterHandOff(r *runState) {
	e.mu.Lock()
	at := r.handedOver
	e.mu.Unlock()
	if at.IsZero() {
		return
	}
	time.Sleep(at.Add(handOffSettle).Sub(e.now()))
}

// runLog returns the logger of the current Run (asynchronous), or the
// executor's outside Run.
func (e *Executor) runLog() *slog.Logger {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run != nil {
		return e.run.log
	}
	return e.log
}

// checkTolerances refuses, on stores that say so (store.LeaseLimits), a
// masterJobTolerance shorter than the store can grant. A store that cannot
// be asked now is not a reason to refuse: its calls will say it again.
func (e *Executor) checkTolerances(ctx context.Context, tolerances []time.Duration) error {
	ll, ok := e.st.(store.LeaseLimits)
	if !ok {
		return nil
	}
	for _, tol := range tolerances {
		cctx, cancel := context.WithTimeout(ctx, checkTTLTimeout)
		err := ll.CheckTTL(cctx, tol)
		cancel()
		switch {
		case errors.Is(err, store.ErrLeaseTooShort):
			return fmt.Errorf("%w: %s = %v: %w", ErrInvalidConfig, keyTolerance, tol, err)
		case err != nil:
			e.log.Warn("cannot ask the store for its shortest lease; going on", "err", err)
		}
	}
	return nil
}

// checkTTLTimeout bounds the question of checkTolerances.
const checkTTLTimeout = 5 * time.Second

// subscribeTimeout bounds a Subscribe call: the trust window, within
// bounds.
func subscribeTimeout(cfg Config) time.Duration {
	return min(max(cfg.TrustWindow(), subscribeTimeoutMin), subscribeTimeoutMax)
}

// startLoopLocked starts the loop of a timing class. e.mu is held.
func (e *Executor) startLoopLocked(cfg Config) {
	r := e.run
	l := newLoop(e, cfg, r.log)
	l.runStart = r.startAt
	r.loops[cfg] = l
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := l.run(r.ctx); err != nil {
			e.mu.Lock()
			r.errs = append(r.errs, err)
			e.mu.Unlock()
		}
	}()
}

// inboxes returns the inbox of every loop of the current Run.
func (e *Executor) inboxes() []*inbox {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run == nil {
		return nil
	}
	out := make([]*inbox, 0, len(e.run.loops))
	for _, l := range e.run.loops {
		out = append(out, l.inbox)
	}
	return out
}

// StopDeadline returns the time (on this process's monotonic clock, as
// time.Now reads it: compare it with time.Now or pass it to time.Until) by
// which the job that owns ctx must have stopped: after it, the lease may be
// another instance's. It moves forward while renewals succeed, and back to
// now at once when the mastership is lost, even while the job is already
// stopping for a planned reason (shutdown, disable): poll it while
// stopping. ok is false for a context not created by an executor.
func StopDeadline(ctx context.Context) (deadline time.Time, ok bool) {
	c := clockOf(ctx)
	if c == nil {
		return time.Time{}, false
	}
	return c.deadline(), true
}

type leaseClockKey struct{}

// leaseClock is what a job's context knows of its mastership while the
// executor's loop runs: the lease's expiry, and the loss, if the lease was
// lost after the job's context had already been cancelled for a planned
// reason (a context's cause cannot change once it is cancelled).
type leaseClock struct {
	now    func() time.Time // the executor's clock
	mu     sync.Mutex
	expiry time.Time // on the executor's clock
	loss   error     // why the lease was lost; nil while it is not
	lost   chan struct{}
}

func newLeaseClock(now func() time.Time, expiry time.Time) *leaseClock {
	return &leaseClock{now: now, expiry: expiry, lost: make(chan struct{})}
}

func (c *leaseClock) set(t time.Time) {
	c.mu.Lock()
	if c.loss == nil {
		c.expiry = t
	}
	c.mu.Unlock()
}

// lose records that the lease is gone (or can no longer be trusted) with
// cause, and moves the expiry back to at, if that is earlier. The first
// loss wins.
func (c *leaseClock) lose(cause error, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loss != nil {
		return
	}
	c.loss = cause
	if at.Before(c.expiry) {
		c.expiry = at
	}
	close(c.lost)
}

// lossCause returns the cause recorded by lose, or nil.
func (c *leaseClock) lossCause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loss
}

// deadline returns the expiry in time.Now terms: the executor's clock runs
// ahead of time.Now by the time the host spent suspended.
func (c *leaseClock) deadline() time.Time {
	c.mu.Lock()
	exp := c.expiry
	c.mu.Unlock()
	return exp.Add(-c.now().Sub(time.Now()))
}

func clockOf(ctx context.Context) *leaseClock {
	c, _ := ctx.Value(leaseClockKey{}).(*leaseClock)
	return c
}

// settledToken returns the greatest token of lock this executor is done
// with: a job started with it, or it was let go (0 if none).
func (e *Executor) settledToken(lock string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.settled[lock]
}

// settle records that this executor is done with token of lock.
func (e *Executor) settle(lock string, token int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settled[lock] = max(e.settled[lock], token)
}
