package masterjob_test

// Regression tests for the holes a review of the loop found (issue 7,
// items 2 and 6 to 15). Each failed before its fix; the comment of each
// says how.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// stopTimes records, per lock, when its job's context was cancelled and
// why.
type stopTimes struct {
	mu      sync.Mutex
	started map[string]time.Time
	stopped map[string]time.Time
	causes  map[string]error
}

func newStopTimes() *stopTimes {
	return &stopTimes{started: map[string]time.Time{}, stopped: map[string]time.Time{}, causes: map[string]error{}}
}

// job runs until cancelled, then returns after linger.
func (s *stopTimes) job(linger time.Duration) masterjob.Job {
	return masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
		s.mu.Lock()
		s.started[l.Lock] = time.Now()
		s.mu.Unlock()
		<-ctx.Done()
		s.mu.Lock()
		s.stopped[l.Lock] = time.Now()
		s.causes[l.Lock] = context.Cause(ctx)
		s.mu.Unlock()
		time.Sleep(linger)
		return nil
	})
}

func (s *stopTimes) get(lock string) (started, stopped time.Time, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started[lock], s.stopped[lock], s.causes[lock]
}

// blockingSubscribe is a store whose first Subscribe fails and whose later
// ones block for a long time (a notification connection that hangs),
// returning early only if their context ends.
type blockingSubscribe struct {
	store.Store
	calls atomic.Int32
	block time.Duration
}

func (s *blockingSubscribe) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	if s.calls.Add(1) == 1 {
		return nil, store.ErrUnavailable
	}
	t := time.NewTimer(s.block)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, errors.Join(store.ErrUnavailable, errors.New("subscribe hung"))
}

// Item 2: Subscribe ran on the loop goroutine without a deadline. After a
// failed subscribe every due check resubscribed inline, and while it
// blocked no deadline was enforced: before the fix the job below ran on
// for seconds past the moment its lease could expire.
func TestHangingSubscribeDoesNotStallTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		// OTHER is held elsewhere, so a keeps checking it.
		if _, err := st.Acquire(context.Background(), store.Holder{ID: "x"}, []string{"OTHER"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		cut := &switchable{Store: st}
		view := &blockingSubscribe{Store: cut, block: 5 * time.Second}
		times := newStopTimes()
		a := newExec(t, view, "a", masterjob.WithCheckMasterInterval(500*time.Millisecond))
		_ = a.StartMaster("JOB", times.job(0))
		_ = a.StartMaster("OTHER", times.job(0))
		stop := startRun(a)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if len(a.Masters()) != 1 {
			t.Fatalf("a is not master of the free lock JOB 10ms after Run started: the loop is stalled (by a hanging Subscribe?): %v", a.Masters())
		}
		time.Sleep(600 * time.Millisecond) // a check is due: a resubscription too
		cut.cut(true)                      // renewals fail from now on
		expires := lockState(t, st, "JOB").ExpiresAt
		time.Sleep(2 * tolerance)
		synctest.Wait()
		_, stopped, _ := times.get("JOB")
		if stopped.IsZero() || !stopped.Before(expires) {
			t.Fatalf("job stopped at %v, lease expired at %v: a hanging Subscribe held the loop", stopped, expires)
		}
		cut.cut(false)
		_ = stop()
	})
}

// slowAcquire delays Acquire calls that name a given lock.
type slowAcquire struct {
	store.Store
	lock  string
	delay atomic.Int64
}

func (s *slowAcquire) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	for _, l := range locks {
		if l == s.lock {
			time.Sleep(time.Duration(s.delay.Load()))
		}
	}
	return s.Store.Acquire(ctx, h, locks, ttl)
}

// Item 6: a new mastership joined the shared renewal schedule. LOCK2's
// acquisition began at 0.5 s and answered at 2.1 s (slower than the trust
// window minus a heartbeat), so its window closed at 2.75 s, before the
// shared renewal at 3 s: before the fix it demoted itself spuriously.
func TestLateAcquisitionIsRenewedInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		if _, err := st.Acquire(context.Background(), store.Holder{ID: "x"}, []string{"LOCK2"}, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		view := &slowAcquire{Store: st, lock: "LOCK2"}
		times := newStopTimes()
		var demoted atomic.Int32
		obs := transitionFunc(func(tr masterjob.Transition) {
			if tr.Kind == masterjob.Demoted || tr.Kind == masterjob.Lost {
				demoted.Add(1)
			}
		})
		a := newExec(t, view, "a", masterjob.WithObserver(obs))
		_ = a.StartMaster("LOCK1", times.job(0))
		_ = a.StartMaster("LOCK2", times.job(0))
		stop := startRun(a)
		synctest.Wait()
		if len(a.Masters()) != 1 {
			t.Fatalf("precondition: %v", a.Masters())
		}
		// LOCK2's lease expires at 0.5 s; the check that takes it then
		// answers 1.6 s later.
		view.delay.Store(int64(1600 * time.Millisecond))
		time.Sleep(5 * tolerance)
		synctest.Wait()
		if got := len(a.Masters()); got != 2 {
			t.Fatalf("masters %v; want LOCK1 and LOCK2", a.Masters())
		}
		if n := demoted.Load(); n != 0 {
			_, stopped, cause := times.get("LOCK2")
			t.Fatalf("%d demotions; LOCK2 stopped at %v: %v", n, stopped, cause)
		}
		_ = stop()
	})
}

type transitionFunc func(masterjob.Transition)

func (f transitionFunc) Transition(t masterjob.Transition) { f(t) }
func (transitionFunc) Renewal(time.Duration, int, error)   {}
func (transitionFunc) Check(time.Duration, int, error)     {}
func (transitionFunc) LeaseTTL(string, time.Duration)      {}

// lateRenewAnswer applies renewals at once and answers them late.
type lateRenewAnswer struct {
	store.Store
	delay time.Duration
}

func (s *lateRenewAnswer) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	res, err := s.Store.Renew(ctx, id, refs, ttl)
	time.Sleep(s.delay)
	return res, err
}

func (s *lateRenewAnswer) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return s.Store.(store.Notifier).Subscribe(ctx)
}

// Item 7: a disable pushed while a renewal was in flight asked for an
// immediate renewal, which the returning renewal overwrote with the next
// heartbeat: before the fix the job stopped about a heartbeat after the
// disable (1.3 s here) instead of one renewal later.
func TestDisablePushedDuringRenewalIsNotLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const latency = 300 * time.Millisecond
		view := &lateRenewAnswer{Store: st, delay: latency}
		times := newStopTimes()
		a := newExec(t, view, "a")
		_ = a.StartMaster("JOB", times.job(0))
		stop := startRun(a)
		synctest.Wait()
		time.Sleep(heartbeat + 50*time.Millisecond) // a renewal began at 1 s and answers at 1.3 s
		disabled := time.Now()
		if _, err := st.Disable(context.Background(), "JOB", "test", "op"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * heartbeat)
		synctest.Wait()
		_, stopped, cause := times.get("JOB")
		if stopped.IsZero() {
			t.Fatal("job not stopped after disable")
		}
		if took := stopped.Sub(disabled); took > 2*latency+10*time.Millisecond {
			t.Fatalf("job stopped %v after the disable, want within two renewal round trips (%v)", took, 2*latency)
		}
		if !errors.Is(cause, masterjob.ErrDisabled) {
			t.Fatalf("cause %v", cause)
		}
		_ = stop()
	})
}

// failingRenewals fails the next n Renew calls.
type failingRenewals struct {
	store.Store
	n, failed atomic.Int32
}

func (s *failingRenewals) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	if s.n.Add(-1) >= 0 {
		s.failed.Add(1)
		return nil, store.ErrUnavailable
	}
	s.n.Store(0)
	return s.Store.Renew(ctx, id, refs, ttl)
}

// Item 8: the count of failed renewals survived the end of the last
// mastership. The first mastership below sees 3 failed renewals (all its
// retries but the last), then its job returns; the next mastership's first
// failed renewal then demoted it at once before the fix.
func TestRenewalFailuresResetWhenMastershipEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &failingRenewals{Store: st}
		var demoted atomic.Int32
		obs := transitionFunc(func(tr masterjob.Transition) {
			if tr.Kind == masterjob.Demoted {
				demoted.Add(1)
			}
		})
		var runs atomic.Int32
		a := newExec(t, view, "a", masterjob.WithObserver(obs), masterjob.WithCheckMasterInterval(time.Second))
		_ = a.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			if runs.Add(1) == 1 {
				view.n.Store(3)
				for view.failed.Load() < 3 && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				return nil // ends the mastership by itself
			}
			view.n.Store(1) // the next mastership's first renewal fails: a retry, not a demotion
			<-ctx.Done()
			return nil
		}))
		stop := startRun(a)
		time.Sleep(5 * time.Second) // the holdoff, then a new mastership
		synctest.Wait()
		if n := demoted.Load(); n != 0 {
			t.Fatalf("%d demotions: the new mastership's single failed renewal demoted it (the count of the last mastership's failures survived)", n)
		}
		if runs.Load() != 2 {
			t.Fatalf("%d masterships, want 2", runs.Load())
		}
		_ = stop()
	})
}

// Item 8: a huge MaxHeartbeatRetryCount was accepted and turned into 1 ms
// retries.
func TestMaxHeartbeatRetryCountIsBounded(t *testing.T) {
	_, err := masterjob.LoadConfig(masterjob.WithLookupEnv(noEnv), masterjob.WithMaxHeartbeatRetryCount(1<<40))
	if !errors.Is(err, masterjob.ErrInvalidConfig) || !strings.Contains(err.Error(), "maxHeartbeatRetryCount") {
		t.Fatalf("err = %v, want an ErrInvalidConfig naming maxHeartbeatRetryCount", err)
	}
}

// Item 9: the check was bounded by min(CheckMasterInterval, trust window).
// With a 100 ms check interval and a store answering in 300 ms, every check
// timed out before the fix and the instance was never elected.
func TestShortCheckIntervalSlowStoreStillElects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &slowAcquire{Store: st, lock: "JOB"}
		view.delay.Store(int64(300 * time.Millisecond))
		times := newStopTimes()
		a := newExec(t, view, "a", masterjob.WithCheckMasterInterval(100*time.Millisecond))
		_ = a.StartMaster("JOB", times.job(0))
		stop := startRun(a)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if started, _, _ := times.get("JOB"); started.IsZero() {
			t.Fatal("never elected: every check timed out")
		}
		_ = stop()
	})
}

// lingeringSubscription closes its channel a while after its context ends,
// as a backend whose listener takes time to shut down would, and records
// when it did.
type lingeringSubscription struct {
	store.Store
	closed atomic.Bool
}

func (s *lingeringSubscription) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	ch := make(chan store.Change)
	go func() {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond)
		s.closed.Store(true)
		close(ch)
	}()
	return ch, nil
}

// Item 10: Run returned before the subscription had ended.
func TestRunWaitsForTheSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		view := &lingeringSubscription{Store: memstore.New()}
		a := newExec(t, view, "a")
		_ = a.StartMaster("JOB", newStopTimes().job(0))
		stop := startRun(a)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if !view.closed.Load() {
			t.Fatal("Run returned while the store's subscription was still running")
		}
	})
}

// countingStore counts Acquire calls.
type countingStore struct {
	store.Store
	acquires atomic.Int32
}

func (s *countingStore) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	s.acquires.Add(1)
	return s.Store.Acquire(ctx, h, locks, ttl)
}

// Item 11: Run with a context already done acquired the lease, then
// released it, burning a token and waking followers.
func TestRunWithCancelledContextAcquiresNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &countingStore{Store: st}
		a := newExec(t, view, "a")
		_ = a.StartMaster("JOB", newStopTimes().job(0))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := a.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if n := view.acquires.Load(); n != 0 {
			t.Fatalf("%d Acquire calls after Run's context was done", n)
		}
		if ls := lockState(t, st, "JOB"); ls.Token != 0 {
			t.Fatalf("a token was issued: %+v", ls)
		}
	})
}

// slowRelease answers releases of one lock late, whatever its context
// says (a stalled network).
type slowRelease struct {
	store.Store
	lock  string
	delay time.Duration
}

func (s *slowRelease) Release(ctx context.Context, id string, refs []store.LeaseRef) error {
	for _, r := range refs {
		if r.Lock == s.lock {
			time.Sleep(s.delay)
		}
	}
	return s.Store.Release(context.Background(), id, refs)
}

// Item 12: when a shutdown timed out, the releases of the jobs that did
// stop were dropped: their leases waited to expire. MID stops at once but
// its release hangs for 2.5 s; FAST stops at 1.5 s, while MID's release is
// in flight; SLOW never stops, so the shutdown times out at 2 s. Before the
// fix FAST's lease was left to expire.
func TestShutdownTimeoutReleasesWhatStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const shutdown = 2 * time.Second
		view := &slowRelease{Store: st, lock: "MID", delay: 2500 * time.Millisecond}
		a := newExec(t, view, "a", masterjob.WithShutdownTimeout(shutdown))
		_ = a.StartMaster("MID", newStopTimes().job(0))
		_ = a.StartMaster("FAST", newStopTimes().job(1500*time.Millisecond))
		release := make(chan struct{})
		_ = a.StartMaster("SLOW", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			<-release
			return nil
		}))
		stop := startRun(a)
		synctest.Wait()
		if len(a.Masters()) != 3 {
			t.Fatalf("precondition: %v", a.Masters())
		}
		if err := stop(); !errors.Is(err, masterjob.ErrShutdownTimeout) {
			t.Fatalf("Run: %v, want ErrShutdownTimeout", err)
		}
		if ls := lockState(t, st, "FAST"); ls.Holder != "" {
			t.Fatalf("FAST stopped but its lease was not released: %+v", ls)
		}
		if ls := lockState(t, st, "SLOW"); ls.Holder != "a" {
			t.Fatalf("SLOW still runs, its lease must be left to expire: %+v", ls)
		}
		close(release)
		synctest.Wait()
	})
}

// blockingWriter blocks every write while blocked is set, as a full pipe
// on stderr would.
type blockingWriter struct {
	mu      sync.Mutex
	blocked bool
	unblock chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	b, ch := w.blocked, w.unblock
	w.mu.Unlock()
	if b {
		<-ch
	}
	return len(p), nil
}

func (w *blockingWriter) block() {
	w.mu.Lock()
	w.blocked, w.unblock = true, make(chan struct{})
	w.mu.Unlock()
}

func (w *blockingWriter) release() {
	w.mu.Lock()
	if w.blocked {
		close(w.unblock)
	}
	w.blocked = false
	w.mu.Unlock()
}

// Item 15: logging was synchronous on the loop goroutine, so a blocked
// stderr blocked the enforcement of trust windows: before the fix the job
// below was never stopped while the log output was blocked.
func TestBlockedLogOutputDoesNotBlockDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &switchable{Store: st}
		w := &blockingWriter{}
		times := newStopTimes()
		a := newExec(t, view, "a", masterjob.WithLogger(slog.New(slog.NewTextHandler(w, nil))))
		_ = a.StartMaster("JOB", times.job(0))
		stop := startRun(a)
		synctest.Wait()
		w.block()
		view.cut(true) // every failure logs
		expires := lockState(t, st, "JOB").ExpiresAt
		time.Sleep(2 * tolerance)
		synctest.Wait()
		_, stopped, _ := times.get("JOB")
		w.release()
		if stopped.IsZero() || !stopped.Before(expires) {
			t.Fatalf("job stopped at %v, lease expired at %v: a blocked log write held the loop", stopped, expires)
		}
		view.cut(false)
		_ = stop()
	})
}

// A shutdown whose jobs all stopped in time, but whose last release is
// still in flight when the shutdown timeout ends, is not a timeout: Run
// returns nil once the release is done (found by the chaos harness: the
// CLI exited 1 after a clean stop).
func TestShutdownWaitsForReleaseOfStoppedJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		const shutdown = 2 * time.Second
		view := &slowRelease{Store: st, lock: "JOB", delay: 500 * time.Millisecond}
		a := newExec(t, view, "a", masterjob.WithShutdownTimeout(shutdown))
		_ = a.StartMaster("JOB", newStopTimes().job(shutdown-100*time.Millisecond))
		stop := startRun(a)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatalf("Run: %v, want nil: the job stopped within the shutdown timeout", err)
		}
		if ls := lockState(t, st, "JOB"); ls.Holder != "" {
			t.Fatalf("lease not released: %+v", ls)
		}
	})
}

// lateAcquire commits acquisitions whatever the call's context says and
// answers delay later, as a store that answers past the call's deadline.
type lateAcquire struct {
	store.Store
	delay time.Duration
}

func (s *lateAcquire) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	st, err := s.Store.Acquire(context.WithoutCancel(ctx), h, locks, ttl)
	time.Sleep(s.delay)
	return st, err
}

// linesWith returns the lines of log that contain substr.
func linesWith(log, substr string) []string {
	var lines []string
	for l := range strings.SplitSeq(log, "\n") {
		if strings.Contains(l, substr) {
			lines = append(lines, l)
		}
	}
	return lines
}

// A call that acquires many leases and answers after the trust window
// logs one line, naming how many, not one line per lock: the scale run
// (10 instances × 10,000 locks on a saturated host) wrote 71,940 such lines
// in a minute.
func TestLateAcquisitionsLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		// A store that commits and answers after the trust window
		// (tolerance − margin), past the call's deadline.
		view := &lateAcquire{Store: st, delay: tolerance}
		var logs syncbuf.Buffer
		a := newExec(t, view, "a", masterjob.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		times := newStopTimes()
		for i := range 20 {
			_ = a.StartMaster(fmt.Sprintf("L%02d", i), times.job(0))
		}
		stop := startRun(a)
		time.Sleep(tolerance + 100*time.Millisecond) // the first check's answer, not the second's
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if started, _, _ := times.get(fmt.Sprintf("L%02d", i)); !started.IsZero() {
				t.Errorf("L%02d's job started from an acquisition that answered after the trust window", i)
			}
		}
		lines := linesWith(logs.String(), "too late to trust")
		if len(lines) != 1 || !strings.Contains(lines[0], "leases=20") {
			t.Fatalf("%d lines about the late acquisition, want 1 naming 20 leases:\n%s", len(lines), strings.Join(lines, "\n"))
		}
		t.Log(lines[0])
	})
}
