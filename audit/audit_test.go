package audit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func history(t *testing.T, h store.History) []store.Event {
	t.Helper()
	got, err := h.Events(context.Background(), store.EventFilter{Limit: store.MaxEventsLimit})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	slices.Reverse(got) // oldest first
	return got
}

func transition(i int) masterjob.Transition {
	return masterjob.Transition{Lock: "JOB", Kind: masterjob.Acquired, Token: int64(i), Instance: "i-1"}
}

func tokens(events []store.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Token
	}
	return out
}

func seq(from, to int) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, int64(i))
	}
	return out
}

// newRecorder returns a Recorder that is closed (abandoning what it still
// holds) when the test ends, even if it fails early.
func newRecorder(t *testing.T, h store.History, log *slog.Logger, opts ...audit.Option) *audit.Recorder {
	t.Helper()
	r := audit.NewRecorder(h, log, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func closeRecorder(t *testing.T, r *audit.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestTransitionsBecomeEvents: every kind maps to its event, with the
// token, the instance and the reason's text; Close flushes.
func TestTransitionsBecomeEvents(t *testing.T) {
	ms := memstore.New()
	r := newRecorder(t, ms, quiet())
	in := []masterjob.Transition{
		{Lock: "A", Kind: masterjob.Acquired, Token: 7, Instance: "host-1"},
		{Lock: "A", Kind: masterjob.Released, Token: 7, Instance: "host-1", Reason: masterjob.ErrDisabled},
		{Lock: "B", Kind: masterjob.Lost, Token: 8, Instance: "host-2", Reason: fmt.Errorf("renew: %w", masterjob.ErrLeaseLost)},
		{Lock: "B", Kind: masterjob.Demoted, Token: 9, Instance: "host-2", Reason: masterjob.ErrTrustWindowPassed},
	}
	for _, tr := range in {
		r.Transition(tr)
	}
	closeRecorder(t, r)
	want := []store.Event{
		{Lock: "A", Kind: store.EventAcquired, Token: 7, Instance: "host-1"},
		{Lock: "A", Kind: store.EventReleased, Token: 7, Instance: "host-1", Reason: masterjob.ErrDisabled.Error()},
		{Lock: "B", Kind: store.EventLost, Token: 8, Instance: "host-2", Reason: "renew: " + masterjob.ErrLeaseLost.Error()},
		{Lock: "B", Kind: store.EventDemoted, Token: 9, Instance: "host-2", Reason: masterjob.ErrTrustWindowPassed.Error()},
	}
	got := history(t, ms)
	if len(got) != len(want) {
		t.Fatalf("recorded %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g := got[i]
		g.ID, g.At = 0, time.Time{}
		if g != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, g, want[i])
		}
	}
	// After Close, transitions are ignored.
	r.Transition(transition(99))
	if n := len(history(t, ms)); n != len(want) {
		t.Errorf("a transition after Close was recorded (%d events)", n)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// gatedHistory blocks each append until the test lets it through, and
// records the size of every batch.
type gatedHistory struct {
	store.History
	gate    chan struct{}
	mu      sync.Mutex
	batches []int
}

func (g *gatedHistory) AppendEvents(ctx context.Context, events []store.Event) error {
	g.mu.Lock()
	g.batches = append(g.batches, len(events))
	g.mu.Unlock()
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.History.AppendEvents(ctx, events)
}

// TestBatches: events that queue while an append is in flight go in the
// next appends, at most a batch each, in order.
func TestBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		g := &gatedHistory{History: ms, gate: make(chan struct{})}
		r := newRecorder(t, g, quiet(), audit.WithBatchSize(100))
		r.Transition(transition(1))
		synctest.Wait() // the first append is in flight, blocked
		for i := 2; i <= 251; i++ {
			r.Transition(transition(i))
		}
		close(g.gate)
		closeRecorder(t, r)
		if !slices.Equal(g.batches, []int{1, 100, 100, 50}) {
			t.Errorf("batch sizes %v, want [1 100 100 50]", g.batches)
		}
		if got := tokens(history(t, ms)); !slices.Equal(got, seq(1, 251)) {
			t.Errorf("recorded tokens %v, want 1..251 in order", got)
		}
	})
}

// TestOutageDropsOldest: while the store is down, transitions return at
// once, the queue keeps the newest events, drops are counted and logged,
// and everything queued is recorded once the store is back.
func TestOutageDropsOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		var logs syncbuf.Buffer
		r := newRecorder(t, ms, slog.New(slog.NewTextHandler(&logs, nil)),
			audit.WithQueueSize(10), audit.WithRetryBackoff(time.Second, 4*time.Second))
		ms.SetFailure(errors.New("connection refused"))
		for i := 1; i <= 25; i++ {
			r.Transition(transition(i))
		}
		synctest.Wait() // the failed batch is back in the queue, the recorder waits
		if got := r.Dropped(); got != 15 {
			t.Errorf("Dropped() = %d during the outage, want 15", got)
		}
		if got := r.Queued(); got != 10 {
			t.Errorf("Queued() = %d during the outage, want 10", got)
		}
		time.Sleep(time.Minute) // a long outage: retries with capped backoff
		synctest.Wait()
		if got := r.Queued(); got != 10 {
			t.Errorf("Queued() = %d after a long outage, want 10", got)
		}
		ms.SetFailure(nil)
		time.Sleep(5 * time.Second) // longer than the capped backoff
		synctest.Wait()
		if got := tokens(history(t, ms)); !slices.Equal(got, seq(16, 25)) {
			t.Errorf("recorded %v after the outage, want the newest ten, 16..25", got)
		}
		closeRecorder(t, r)
		out := logs.String()
		for _, want := range []string{"cannot record history", "queue full", "dropped=15", "recording history again"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
		if n := strings.Count(out, "cannot record history"); n != 1 {
			t.Errorf("the failure was logged %d times at the default level, want once per outage:\n%s", n, out)
		}
	})
}

// blockedHistory never answers before the call's context ends.
type blockedHistory struct{ store.History }

func (blockedHistory) AppendEvents(ctx context.Context, _ []store.Event) error {
	<-ctx.Done()
	return fmt.Errorf("blocked: %w", store.ErrUnavailable)
}

// TestNeverBlocks: a store that hangs does not slow Transition down, and
// memory stays bounded by the queue size.
func TestNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder(t, blockedHistory{}, quiet(), audit.WithQueueSize(100))
		start := time.Now()
		for i := range 100000 {
			r.Transition(transition(i))
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Transition waited %v on the fake clock", d)
		}
		if q := r.Queued(); q > 100 {
			t.Errorf("Queued() = %d, above the queue size 100", q)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := r.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not recorded") {
			t.Errorf("Close on a hung store = %v, want a deadline error counting lost events", err)
		}
		if d := r.Dropped(); d != 100000 {
			t.Errorf("Dropped() = %d after Close gave up, want every event (100000)", d)
		}
	})
}

// TestCloseRetriesUntilDeadline: Close keeps retrying a failing store until
// its context ends, and records what it can if the store comes back first.
func TestCloseRetriesUntilDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		r := newRecorder(t, ms, quiet(), audit.WithRetryBackoff(100*time.Millisecond, time.Second))
		ms.SetFailure(errors.New("down"))
		for i := 1; i <= 3; i++ {
			r.Transition(transition(i))
		}
		go func() {
			time.Sleep(3 * time.Second)
			ms.SetFailure(nil)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got := tokens(history(t, ms)); !slices.Equal(got, seq(1, 3)) {
			t.Errorf("recorded %v, want 1..3", got)
		}
	})
}

// TestClosedStoreDiscards: a closed store will never accept the events:
// they are counted as dropped, not retried forever.
func TestClosedStoreDiscards(t *testing.T) {
	ms := memstore.New()
	_ = ms.Close()
	r := newRecorder(t, ms, quiet())
	r.Transition(transition(1))
	closeRecorder(t, r)
	if d := r.Dropped(); d != 1 {
		t.Errorf("Dropped() = %d, want 1", d)
	}
}

// TestInvalidLockSkipped: a transition of a name the store would refuse
// does not poison the batch it would have joined.
func TestInvalidLockSkipped(t *testing.T) {
	ms := memstore.New()
	r := newRecorder(t, ms, quiet())
	r.Transition(masterjob.Transition{Lock: "", Kind: masterjob.Acquired})
	r.Transition(transition(1))
	closeRecorder(t, r)
	if got := tokens(history(t, ms)); !slices.Equal(got, []int64{1}) {
		t.Errorf("recorded %v, want only the valid transition", got)
	}
}

// TestWithExecutor: an executor observed by a Recorder leaves its
// transitions in the store's history: acquired, then released when the lock
// is disabled, with the reason.
func TestWithExecutor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		r := newRecorder(t, ms, quiet())
		e, err := masterjob.New(ms,
			masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
			masterjob.WithInstanceID("exec-1"),
			masterjob.WithInitDelay(0),
			masterjob.WithHeartbeatInterval(time.Second),
			masterjob.WithTolerance(3*time.Second),
			masterjob.WithLogger(quiet()),
			masterjob.WithObserver(r))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if _, err := ms.Disable(context.Background(), "JOB", "maintenance", "ops"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		closeRecorder(t, r)
		got := history(t, ms)
		if len(got) != 2 || got[0].Kind != store.EventAcquired || got[1].Kind != store.EventReleased {
			t.Fatalf("history %+v, want acquired then released", got)
		}
		if got[0].Instance != "exec-1" || got[0].Token != got[1].Token || got[0].Token <= 0 {
			t.Errorf("events %+v: want instance exec-1 and the lease's token on both", got)
		}
		if got[1].Reason != masterjob.ErrDisabled.Error() {
			t.Errorf("released with reason %q, want %q", got[1].Reason, masterjob.ErrDisabled.Error())
		}
	})
}
