package masterjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
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

	mu        sync.Mutex
	jobs      map[string]Job
	masters   map[string]Lease
	deadlines map[string]time.Time // trust window of each lease in masters
	storeErr  error                // error of the last store round trip, nil if it succeeded
	errSince  time.Time            // when store round trips started failing
	running   bool
	closed    bool
	added     chan struct{} // wakes the loop after StartMaster; capacity 1
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
		jobs:      map[string]Job{},
		masters:   map[string]Lease{},
		deadlines: map[string]time.Time{},
		added:     make(chan struct{}, 1),
		now:       o.clock,
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
	info := o.info
	if info == (InstanceInfo{}) {
		info.Host, _ = os.Hostname()
		info.PID = os.Getpid()
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
func (e *Executor) StartMaster(lock string, job Job) error {
	if err := store.ValidateLockName(lock); err != nil {
		return fmt.Errorf("masterjob: StartMaster: %w", err)
	}
	if job == nil {
		return fmt.Errorf("masterjob: StartMaster %q: job is nil", lock)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if _, ok := e.jobs[lock]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateLock, lock)
	}
	e.jobs[lock] = job
	select {
	case e.added <- struct{}{}:
	default:
	}
	return nil
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
	e.running = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.closed = true
		e.running = false
		clear(e.masters)
		clear(e.deadlines)
		e.mu.Unlock()
	}()
	l := newLoop(e)
	return l.run(ctx)
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
