// Package audit records the mastership transitions of an executor in the
// store's audit history (store.History), beside the control changes that
// the control API records there.
//
// A Recorder is a masterjob.Observer:
//
//	rec := audit.NewRecorder(st, logger) // st: a store that implements store.History
//	defer rec.Close(context.Background())
//	e, err := masterjob.New(st, masterjob.WithObserver(rec))
//
// Each transition (acquired, released, lost, demoted) becomes one
// store.Event with the lock, the token, the instance and, for the kinds that
// end a mastership, the reason's text. The executor calls observers from
// its own goroutine and must never wait on the store for them, so Transition
// only queues the event; a goroutine of the Recorder appends queued events
// in batches (one store round trip per batch).
//
// When the store is down the Recorder retries with capped, jittered
// backoff. Its queue is bounded (WithQueueSize): when it is full the oldest
// events are dropped, counted (Dropped) and logged, so that an outage of any
// length costs bounded memory and never slows the executor. Events are
// stamped by the store when they are appended, so an event recorded after
// an outage carries the time it was recorded, not the time it happened; a
// batch whose append timed out after the store committed it may be recorded
// twice.
//
// With WithDelay, the Recorder waits a moment after the first of the queued
// transitions before it appends them: the transitions of a burst (a
// hand-off, a rebalance) go in one append, and the append stays out of the
// way of what a transition starts (the job of an Acquired, a successor's
// start after a Released). Flush appends what is queued at once, and
// Ordered returns a store.History whose appends come after the transitions
// queued before them, so that one process's entries (its transitions and
// its control API's control changes) are recorded in the order they
// happened: give it to the control API (controlapi.WithHistory) that
// serves beside the executor.
//
// Close stops the Recorder: it appends what is queued, retrying until its
// context is done, and returns once its goroutine has ended. Call it after
// the executor's Run has returned, so that the last transitions (the
// releases of shutdown) are recorded, and before closing the store.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/store"
)

// Defaults of the options.
const (
	// DefaultQueueSize is how many events wait for the store at most.
	DefaultQueueSize = 10000
	// DefaultBatchSize is how many events one append carries at most.
	DefaultBatchSize = 500
	// DefaultAppendTimeout bounds each append.
	DefaultAppendTimeout = 10 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between
	// attempts while the store fails.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
)

// Option configures a Recorder.
type Option func(*config)

type config struct {
	queueSize, batchSize   int
	appendTimeout          time.Duration
	minBackoff, maxBackoff time.Duration
	delay                  time.Duration
}

// WithQueueSize sets how many events may wait for the store (default
// DefaultQueueSize); beyond it the oldest are dropped. Values below 1 are
// taken as 1.
func WithQueueSize(n int) Option { return func(c *config) { c.queueSize = max(n, 1) } }

// WithBatchSize sets how many events one append carries at most (default
// DefaultBatchSize). Values below 1 are taken as 1.
func WithBatchSize(n int) Option { return func(c *config) { c.batchSize = max(n, 1) } }

// WithAppendTimeout bounds each append (default DefaultAppendTimeout).
// Values below a millisecond are taken as a millisecond.
func WithAppendTimeout(d time.Duration) Option {
	return func(c *config) { c.appendTimeout = max(d, time.Millisecond) }
}

// WithDelay makes the Recorder append queued transitions d after the first
// of them was queued, rather than at once (default 0: at once). Whatever
// is queued meanwhile goes in the same append. Close, Flush and a retry
// after a failed append do not wait. The store stamps each event when it is
// appended, so up to d after its transition; an event still waiting when
// the process dies is lost, like any event the queue holds. Negative values
// are taken as 0.
func WithDelay(d time.Duration) Option { return func(c *config) { c.delay = max(d, 0) } }

// WithRetryBackoff sets the wait between attempts while the store fails: it
// starts at minimum and doubles up to maximum, with jitter (defaults
// DefaultMinBackoff and DefaultMaxBackoff). minimum is at least a
// millisecond; maximum is at least minimum.
func WithRetryBackoff(minimum, maximum time.Duration) Option {
	return func(c *config) {
		c.minBackoff = max(minimum, time.Millisecond)
		c.maxBackoff = max(maximum, c.minBackoff)
	}
}

// Recorder appends mastership transitions to a store.History. It
// implements masterjob.Observer (only Transition does anything). Its methods
// are safe for concurrent use. Create it with NewRecorder and end it with
// Close.
type Recorder struct {
	masterjob.NopObserver

	h   store.History
	log *slog.Logger
	cfg config

	mu      sync.Mutex
	queue   []store.Event // oldest first, at most cfg.queueSize
	since   time.Time     // when the queue's oldest event was queued (WithDelay)
	closed  bool
	dropped uint64 // every event dropped so far
	streak  uint64 // events dropped since the last report in the log

	// Events leave the queue from its front only (appended, dropped or
	// discarded), so the settled events are always the oldest queued.
	queued   uint64        // events ever queued
	settled  uint64        // of those, appended, dropped or discarded
	attempts uint64        // appends that failed
	flushTo  uint64        // Flush wants the first flushTo settled at once
	progress chan struct{} // closed and replaced when settled or attempts grow

	wake    chan struct{}      // capacity 1: something was queued, or flushTo grew
	closing chan struct{}      // closed by Close
	abort   context.CancelFunc // ends the goroutine's attempts when Close gives up
	done    chan struct{}      // closed when the goroutine has ended
}

var _ masterjob.Observer = (*Recorder)(nil)

// NewRecorder returns a Recorder that appends to h and logs to logger (nil
// for slog.Default()). It starts a goroutine, which Close ends. h must not
// be nil.
func NewRecorder(h store.History, logger *slog.Logger, opts ...Option) *Recorder {
	if h == nil {
		panic("audit: NewRecorder: nil store.History")
	}
	if logger == nil {
		logger = slog.Default()
	}
	cfg := config{
		queueSize:     DefaultQueueSize,
		batchSize:     DefaultBatchSize,
		appendTimeout: DefaultAppendTimeout,
		minBackoff:    DefaultMinBackoff,
		maxBackoff:    DefaultMaxBackoff,
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	ctx, abort := context.WithCancel(context.Background())
	r := &Recorder{
		h:        h,
		log:      logger.With("component", "audit"),
		cfg:      cfg,
		wake:     make(chan struct{}, 1),
		progress: make(chan struct{}),
		closing:  make(chan struct{}),
		abort:    abort,
		done:     make(chan struct{}),
	}
	go r.run(ctx)
	return r
}

// EventOf returns the history entry of a transition. Acquired, Released, Lost
// and Demoted map to the store's kinds of the same names; Reason is the
// text of the transition's reason, if any.
func EventOf(t masterjob.Transition) store.Event {
	e := store.Event{Lock: t.Lock, Instance: t.Instance, Token: t.Token}
	switch t.Kind {
	case masterjob.Acquired:
		e.Kind = store.EventAcquired
	case masterjob.Released:
		e.Kind = store.EventReleased
	case masterjob.Lost:
		e.Kind = store.EventLost
	case masterjob.Demoted:
		e.Kind = store.EventDemoted
	default:
		e.Kind = store.EventKind(t.Kind)
	}
	if t.Reason != nil {
		e.Reason = t.Reason.Error()
	}
	if t.Successor != "" {
		e.Reason += " (to " + t.Successor + ")"
	}
	return e
}

// TakeoverEventOf returns the history entry that records a takeover, for
// an Acquired transition whose previous lease had expired: ok is false for
// any other transition.
func TakeoverEventOf(t masterjob.Transition) (e store.Event, ok bool) {
	if t.Kind != masterjob.Acquired || !t.Takeover {
		return store.Event{}, false
	}
	return store.Event{
		Lock: t.Lock, Kind: store.EventTakeover, Instance: t.Instance, Token: t.Token,
		Reason: fmt.Sprintf("previous lease of %s (token %d) expired", t.PrevHolder, t.PrevToken),
	}, true
}

// Transition implements masterjob.Observer: it queues the transition's
// event and returns at once. After Close it does nothing.
func (r *Recorder) Transition(t masterjob.Transition) {
	if err := store.ValidateLockName(t.Lock); err != nil {
		// The store would refuse the whole batch; executors never report
		// such a lock.
		r.log.Warn("audit: transition of an invalid lock not recorded", "err", err)
		return
	}
	if e, ok := TakeoverEventOf(t); ok {
		r.enqueue(e)
	}
	r.enqueue(EventOf(t))
}

func (r *Recorder) enqueue(e store.Event) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if len(r.queue) == 0 {
		r.since = time.Now()
	}
	r.queue = append(r.queue, e)
	r.queued++
	first, queued := r.trim()
	r.mu.Unlock()
	if first {
		r.warnFull(queued)
	}
	r.signal()
}

// signal wakes the goroutine, without blocking.
func (r *Recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// trim drops the oldest events beyond the queue size. It must be called
// with r.mu held; first reports whether this began a streak of drops.
func (r *Recorder) trim() (first bool, queued int) {
	over := len(r.queue) - r.cfg.queueSize
	if over > 0 {
		first = r.streak == 0
		clear(r.queue[:over])
		r.queue = r.queue[over:]
		r.dropped += uint64(over)
		r.streak += uint64(over)
		r.settle(uint64(over))
	}
	return first, len(r.queue)
}

// settle counts n more events settled. It must be called with r.mu held.
func (r *Recorder) settle(n uint64) {
	r.settled += n
	r.advance()
}

// advance wakes the callers of Flush that wait. It must be called
// with r.mu held.
func (r *Recorder) advance() {
	close(r.progress)
	r.progress = make(chan struct{})
}

func (r *Recorder) warnFull(queued int) {
	r.log.Warn("audit: history queue full, dropping the oldest events until the store accepts them again",
		"queue_size", r.cfg.queueSize, "dropped_total", r.Dropped(), "queued", queued)
}

// Dropped returns how many events were dropped so far because the queue
// was full (or, once Close gave up, because they could not be recorded).
func (r *Recorder) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Queued returns how many events wait to be appended, not counting a batch
// being appended.
func (r *Recorder) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// next takes the oldest events, at most a batch.
func (r *Recorder) next() (batch []store.Event, closing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(r.queue), r.cfg.batchSize)
	batch = slices.Clone(r.queue[:n])
	clear(r.queue[:n])
	r.queue = r.queue[n:]
	return batch, r.closed
}

// requeue puts a batch that could not be appended back in front of the
// queue, then drops the oldest events beyond its size.
func (r *Recorder) requeue(batch []store.Event) {
	r.mu.Lock()
	r.queue = append(batch, r.queue...)
	r.attempts++
	r.advance()
	first, queued := r.trim()
	r.mu.Unlock()
	if first {
		r.warnFull(queued)
	}
}

// discard counts a batch that will never be recorded.
func (r *Recorder) discard(batch []store.Event) {
	r.mu.Lock()
	r.dropped += uint64(len(batch))
	r.settle(uint64(len(batch)))
	r.mu.Unlock()
}

// appended counts a batch recorded.
func (r *Recorder) appended(batch []store.Event) {
	r.mu.Lock()
	r.settle(uint64(len(batch)))
	r.mu.Unlock()
}

// hold waits, with WithDelay, until the queue's oldest event has waited
// the delay, unless the Recorder is closing or Flush waits for it. A wake
// (an event queued, a Flush) makes it look again.
func (r *Recorder) hold() {
	for {
		r.mu.Lock()
		wait := time.Until(r.since.Add(r.cfg.delay))
		if len(r.queue) == 0 || r.closed || r.settled < r.flushTo || wait <= 0 {
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.wake:
		case <-r.closing:
		}
		t.Stop()
	}
}

// run appends queued events until Close; ctx is cancelled when Close gives
// up.
func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	failures := 0
	for {
		if r.cfg.delay > 0 && failures == 0 {
			r.hold()
		}
		batch, closing := r.next()
		if len(batch) == 0 {
			if closing {
				return
			}
			select {
			case <-r.wake:
			case <-r.closing:
			}
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.appendTimeout)
		err := r.h.AppendEvents(actx, batch)
		cancel()
		switch {
		case err == nil:
			r.appended(batch)
			if failures > 0 {
				r.log.Info("audit: recording history again", "failed_attempts", failures)
			}
			failures = 0
			r.reportDrops()
			continue
		case ctx.Err() != nil:
			// Close gave up waiting.
			r.requeue(batch)
			return
		case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrInvalidLockName):
			// Retrying cannot help.
			r.discard(batch)
			r.log.Error("audit: events not recorded", "events", len(batch), "err", err)
			continue
		}
		r.requeue(batch)
		failures++
		lvl := slog.LevelDebug
		if failures == 1 {
			lvl = slog.LevelWarn
		}
		r.log.Log(context.Background(), lvl, "audit: cannot record history, retrying",
			"err", err, "attempt", failures, "queued", r.Queued())
		t := time.NewTimer(backoff.Delay(failures, r.cfg.minBackoff, r.cfg.maxBackoff))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// reportDrops logs the end of a streak of drops.
func (r *Recorder) reportDrops() {
	r.mu.Lock()
	streak, total := r.streak, r.dropped
	r.streak = 0
	r.mu.Unlock()
	if streak > 0 {
		r.log.Warn("audit: events were dropped while the history store was unavailable",
			"dropped", streak, "dropped_total", total)
	}
}

// Close stops accepting transitions, appends every queued event and ends
// the Recorder's goroutine. While the store fails it keeps retrying until
// ctx is done; then it gives up, and returns an error wrapping ctx's error
// that says how many events were not recorded. Calling Close again returns
// nil once the goroutine has ended.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	already := r.closed
	r.closed = true
	r.mu.Unlock()
	if !already {
		close(r.closing)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		r.abort()
		<-r.done
	}
	r.abort()
	if already {
		return nil
	}
	r.mu.Lock()
	lost := len(r.queue)
	r.dropped += uint64(lost)
	r.queue = nil
	r.settle(uint64(lost))
	r.mu.Unlock()
	r.reportDrops()
	if lost > 0 {
		err := fmt.Errorf("audit: close: %d events not recorded: %w", lost, context.Cause(ctx))
		r.log.Error("audit: closing before every event was recorded", "lost", lost, "err", context.Cause(ctx))
		return err
	}
	return nil
}

// Flush returns once every transition queued before the call is recorded,
// dropped, or in a batch whose append failed (the store is then down),
// without waiting for WithDelay; or with ctx's cause. Flush does not wait
// for the retries of an outage.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	target, failed := r.queued, r.attempts
	if target > r.flushTo {
		r.flushTo = target
		r.signal()
	}
	r.mu.Unlock()
	for {
		r.mu.Lock()
		ok := r.settled >= target || r.attempts > failed
		progress := r.progress
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-progress:
		case <-r.done:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Ordered returns a store.History that reads from h and appends to h after
// Flush, so that entries appended through it (the control API's, given it
// with controlapi.WithHistory) come after the transitions r queued before
// them. h may be r's own store or another handle of the same store.
func (r *Recorder) Ordered(h store.History) store.History {
	return ordered{History: h, r: r}
}

type ordered struct {
	store.History
	r *Recorder
}

// AppendEvents appends events after Flush.
func (o ordered) AppendEvents(ctx context.Context, events []store.Event) error {
	if err := o.r.Flush(ctx); err != nil {
		return fmt.Errorf("audit: waiting for the transitions queued before: %w", err)
	}
	return o.History.AppendEvents(ctx, events)
}
