package audit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// timedHistory records when each append was made and what it carried.
type timedHistory struct {
	store.History
	mu      sync.Mutex
	at      []time.Duration // since start
	batches [][]int64       // tokens
	start   time.Time
}

func (h *timedHistory) AppendEvents(ctx context.Context, events []store.Event) error {
	h.mu.Lock()
	h.at = append(h.at, time.Since(h.start))
	h.batches = append(h.batches, tokens(events))
	h.mu.Unlock()
	return h.History.AppendEvents(ctx, events)
}

func (h *timedHistory) appends() ([]time.Duration, [][]int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.at), slices.Clone(h.batches)
}

// TestDelayGathersABurst: with WithDelay, the transitions queued within the
// delay after the first go in one append, made once the delay has passed.
func TestDelayGathersABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &timedHistory{History: memstore.New(), start: time.Now()}
		r := newRecorder(t, h, quiet(), audit.WithDelay(100*time.Millisecond))
		r.Transition(transition(1))
		time.Sleep(60 * time.Millisecond)
		r.Transition(transition(2))
		time.Sleep(39 * time.Millisecond)
		synctest.Wait()
		if at, _ := h.appends(); len(at) != 0 {
			t.Fatalf("appended at %v, before the delay", at)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		at, batches := h.appends()
		if !slices.Equal(at, []time.Duration{100 * time.Millisecond}) || len(batches) != 1 || !slices.Equal(batches[0], []int64{1, 2}) {
			t.Fatalf("appends at %v carrying %v, want one at 100ms carrying [1 2]", at, batches)
		}
		// The next burst waits its own delay.
		r.Transition(transition(3))
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if at, _ := h.appends(); !slices.Equal(at, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}) {
			t.Errorf("appends at %v, want the second at 200ms", at)
		}
		closeRecorder(t, r)
	})
}

// TestCloseDoesNotWaitForTheDelay: Close appends what is queued at once.
func TestCloseDoesNotWaitForTheDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &timedHistory{History: memstore.New(), start: time.Now()}
		r := newRecorder(t, h, quiet(), audit.WithDelay(time.Hour))
		r.Transition(transition(1))
		closeRecorder(t, r)
		if at, batches := h.appends(); !slices.Equal(at, []time.Duration{0}) || len(batches) != 1 || !slices.Equal(batches[0], []int64{1}) {
			t.Errorf("appends at %v carrying %v, want [1] at once", at, batches)
		}
	})
}

// TestOrderedKeepsTheOrder: an entry appended through Ordered (the
// control API's) comes after the transitions queued before it, without
// waiting for the delay, and before those queued after it.
func TestOrderedKeepsTheOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		h := &timedHistory{History: ms, start: time.Now()}
		r := newRecorder(t, h, quiet(), audit.WithDelay(time.Hour))
		r.Transition(transition(1))
		r.Transition(transition(2))
		control := store.Event{Lock: "JOB", Kind: store.EventDisabled, Instance: "ops", Token: 100}
		if err := r.Ordered(ms).AppendEvents(context.Background(), []store.Event{control}); err != nil {
			t.Fatalf("AppendEvents: %v", err)
		}
		if at, batches := h.appends(); !slices.Equal(at, []time.Duration{0}) || len(batches) != 1 || !slices.Equal(batches[0], []int64{1, 2}) {
			t.Errorf("the recorder's appends at %v carrying %v, want [1 2] at once", at, batches)
		}
		r.Transition(transition(3))
		closeRecorder(t, r)
		if got := tokens(history(t, ms)); !slices.Equal(got, []int64{1, 2, 100, 3}) {
			t.Errorf("recorded %v, want [1 2 100 3]", got)
		}
		got, err := r.Ordered(ms).Events(context.Background(), store.EventFilter{Limit: 1})
		if err != nil || len(got) != 1 || got[0].Token != 3 {
			t.Errorf("Events(newest) = %v, %v; want the last transition, read from the store", got, err)
		}
	})
}

// TestOrderedWhileTheStoreFails: the transitions before it cannot be
// appended, so AppendEvents tries once anyway and returns the store's
// error rather than waiting for the outage's end.
func TestOrderedWhileTheStoreFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		r := newRecorder(t, ms, quiet(), audit.WithDelay(time.Hour), audit.WithRetryBackoff(time.Minute, time.Minute))
		down := errors.New("connection refused")
		ms.SetFailure(down)
		r.Transition(transition(1))
		start := time.Now()
		err := r.Ordered(ms).AppendEvents(context.Background(), []store.Event{{Lock: "JOB", Kind: store.EventEnabled, Instance: "ops"}})
		if !errors.Is(err, down) {
			t.Errorf("AppendEvents = %v, want the store's error", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("AppendEvents took %v, want no wait for a retry", d)
		}
		ms.SetFailure(nil)
		time.Sleep(2 * time.Minute) // the retry
		synctest.Wait()
		closeRecorder(t, r)
		if got := tokens(history(t, ms)); !slices.Equal(got, []int64{1}) {
			t.Errorf("recorded %v, want the transition, retried", got)
		}
	})
}

// TestOrderedRefusesInvalidLocks: like a store, it appends nothing
// when an event names an invalid lock.
func TestOrderedRefusesInvalidLocks(t *testing.T) {
	ms := memstore.New()
	r := newRecorder(t, ms, quiet())
	err := r.Ordered(ms).AppendEvents(context.Background(), []store.Event{{Lock: "JOB", Kind: store.EventEnabled}, {Lock: "", Kind: store.EventEnabled}})
	if !errors.Is(err, store.ErrInvalidLockName) {
		t.Errorf("AppendEvents = %v, want ErrInvalidLockName", err)
	}
	closeRecorder(t, r)
	if got := history(t, ms); len(got) != 0 {
		t.Errorf("recorded %v, want nothing", got)
	}
}

// TestOrderedCancelled: a caller that gives up while the transitions
// before it are being appended gets its context's cause.
func TestOrderedCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		g := &gatedHistory{History: ms, gate: make(chan struct{})}
		r := newRecorder(t, g, quiet())
		r.Transition(transition(1))
		synctest.Wait() // its append is in flight, blocked
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := r.Ordered(ms).AppendEvents(ctx, []store.Event{{Lock: "JOB", Kind: store.EventEnabled}})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("AppendEvents = %v, want the deadline", err)
		}
		close(g.gate)
		closeRecorder(t, r)
		if got := tokens(history(t, ms)); !slices.Equal(got, []int64{1}) {
			t.Errorf("recorded %v, want only the transition", got)
		}
	})
}
