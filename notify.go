package masterjob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/masterjob/masterjob/internal/changehint"
	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store"
)

// inbox is how the notification hub and StartMaster reach a loop without
// ever blocking: they record what happened and signal wake (capacity 1);
// the loop takes everything at once.
type inbox struct {
	wake chan struct{}

	mu       sync.Mutex
	locks    map[string]store.Change // notified locks, hints merged (changehint.Merge)
	resync   bool                    // notifications may have been missed
	added    bool                    // StartMaster registered a lock
	handoffs map[string]string       // balancing: lock -> successor
}

func newInbox() *inbox {
	return &inbox{wake: make(chan struct{}, 1), locks: map[string]store.Change{}, handoffs: map[string]string{}}
}

func (b *inbox) handoff(lock, to string) {
	b.mu.Lock()
	b.handoffs[lock] = to
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *inbox) notify(c store.Change) {
	b.mu.Lock()
	if prev, ok := b.locks[c.Lock]; ok {
		c = changehint.Merge(prev, c)
	}
	b.locks[c.Lock] = c
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) markResync() {
	b.mu.Lock()
	b.resync = true
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) markAdded() {
	b.mu.Lock()
	b.added = true
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) take() (changes []store.Change, resync, added bool, handoffs map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.locks {
		changes = append(changes, c)
	}
	clear(b.locks)
	resync, added = b.resync, b.added
	b.resync, b.added = false, false
	if len(b.handoffs) > 0 {
		handoffs = b.handoffs
		b.handoffs = map[string]string{}
	}
	return changes, resync, added, handoffs
}

// Bounds of the subscription to store notifications.
const (
	subscribeBackoffMin = 100 * time.Millisecond
	subscribeBackoffMax = 30 * time.Second
	// subscribeTimeoutMin and Max bound the time a Subscribe call may
	// take, between which it gets the trust window.
	subscribeTimeoutMin = time.Second
	subscribeTimeoutMax = 30 * time.Second
)

// errSubscribeTimeout is reported when Subscribe did not answer in time.
var errSubscribeTimeout = errors.New("masterjob: store notification subscription timed out")

// hub keeps one subscription to the store's notifications for the whole
// executor, beside the loops: Subscribe and every read of its channel run
// on the hub's goroutine, never on a loop's. It resubscribes with capped,
// jittered backoff when the subscription fails or ends, and hands each
// notification to every loop's inbox.
type hub struct {
	n       store.Notifier
	log     *slog.Logger
	timeout time.Duration
	inboxes func() []*inbox
	// members, if not nil, is signalled (without blocking) when a member
	// joined or left.
	members chan<- struct{}
	// fresh is cleared by a member change pushed, a resync and a new
	// subscription (Executor.membersFresh).
	fresh *atomic.Bool
	// pushing is set while a subscription is up.
	pushing *atomic.Bool
}

func (h *hub) run(ctx context.Context) {
	fails := 0
	for ctx.Err() == nil {
		ch, cancel, err := h.subscribe(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			wait := backoff(fails, subscribeBackoffMin, subscribeBackoffMax)
			if fails == 1 {
				h.log.Warn("cannot subscribe to store notifications; polling until it succeeds", "err", err, "retry_in", wait.Round(time.Millisecond).String())
			} else {
				h.log.Debug("cannot subscribe to store notifications", "err", err, "attempt", fails, "retry_in", wait.Round(time.Millisecond).String())
			}
			if !sleepCtx(ctx, wait) {
				return
			}
			continue
		}
		if fails > 0 {
			h.log.Info("subscribed to store notifications", "after_failures", fails)
			h.each((*inbox).markResync)
		}
		fails = 0
		// Members may have come and gone unpushed before this
		// subscription: the list read before it is not known current.
		h.fresh.Store(false)
		h.pushing.Store(true)
		for c := range ch {
			trace.Mark("notify."+string(c.Kind), c.Lock)
			switch c.Kind {
			case store.ChangeMember:
				// The balancer's, not the loops'.
				h.fresh.Store(false)
				h.membersChanged()
			case store.ChangeHistory:
				// Nothing the loops act on.
			case store.ChangeResync:
				// The store lost changes: read everything again, as after
				// a new subscription, the member list included.
				h.each((*inbox).markResync)
				h.fresh.Store(false)
				h.membersChanged()
			default:
				h.each(func(b *inbox) { b.notify(c) })
			}
		}
		h.pushing.Store(false)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// The store ended the subscription (a lost connection, say):
		// resubscribe, after a pause so that a store that ends every
		// subscription at once is not hammered.
		fails = 1
		wait := backoff(fails, subscribeBackoffMin, subscribeBackoffMax)
		h.log.Warn("store notifications ended; polling until resubscribed", "retry_in", wait.Round(time.Millisecond).String())
		h.each((*inbox).markResync)
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// membersChanged tells the balancer, without blocking, to read the member
// list again.
func (h *hub) membersChanged() {
	select {
	case h.members <- struct{}{}:
	default:
	}
}

func (h *hub) each(f func(*inbox)) {
	for _, b := range h.inboxes() {
		f(b)
	}
}

// subscribe calls Subscribe, bounded by the hub's timeout. On success it
// returns the channel and the function that ends the subscription. On
// failure it returns only once the store has let go of the subscription:
// Subscribe has returned, and its channel, if any, is closed.
func (h *hub) subscribe(ctx context.Context) (<-chan store.Change, context.CancelFunc, error) {
	sctx, cancel := context.WithCancel(ctx)
	type answer struct {
		ch  <-chan store.Change
		err error
	}
	ans := make(chan answer, 1)
	go func() {
		ch, err := h.n.Subscribe(sctx)
		ans <- answer{ch, err}
	}()
	timer := time.NewTimer(h.timeout)
	defer timer.Stop()
	var a answer
	select {
	case a = <-ans:
		if a.err == nil {
			return a.ch, cancel, nil
		}
		cancel()
		return nil, nil, a.err
	case <-timer.C:
		cancel()
		a = <-ans
		a.err = fmt.Errorf("%w after %v", errSubscribeTimeout, h.timeout)
	case <-ctx.Done():
		cancel()
		a = <-ans
		a.err = ctx.Err()
	}
	if a.ch != nil {
		for range a.ch { // the store closes it once sctx is done
		}
	}
	return nil, nil, a.err
}

// sleepCtx waits for d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
