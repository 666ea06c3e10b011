package masterjob_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// Timings for executor tests: a 3 s lease, a 750 ms safety margin, so the
// trust window is 2.25 s after a renewal began.
const (
	heartbeat = time.Second
	tolerance = 3 * time.Second
	margin    = 750 * time.Millisecond
	checkIntv = 5 * time.Second
)

func noEnv(string) (string, bool) { return "", false }

func newExec(t *testing.T, st store.Store, id string, opts ...masterjob.Option) *masterjob.Executor {
	t.Helper()
	base := []masterjob.Option{
		masterjob.WithLookupEnv(noEnv),
		masterjob.WithInstanceID(id),
		masterjob.WithInitDelay(0),
		masterjob.WithHeartbeatInterval(heartbeat),
		masterjob.WithTolerance(tolerance),
		masterjob.WithCheckMasterInterval(checkIntv),
		masterjob.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	e, err := masterjob.New(st, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// event is one start or stop of a job, on the (fake) clock.
type event struct {
	instance string
	start    bool
	token    int64
	at       time.Time
	cause    error
}

// recorder is a StartStop job shared by several instances that records
// starts and stops and checks that at most one instance runs at a time.
type recorder struct {
	mu      sync.Mutex
	t       *testing.T
	events  []event
	running map[string]int64 // instance -> token
	overlap bool
}

func newRecorder(t *testing.T) *recorder { return &recorder{t: t, running: map[string]int64{}} }

func (r *recorder) job() masterjob.Job {
	return masterjob.StartStop(
		func(ctx context.Context, l masterjob.Lease) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if _, ok := r.running[l.Instance]; ok {
				r.t.Errorf("%s: start while already running", l.Instance)
			}
			if len(r.running) > 0 {
				r.overlap = true
				r.t.Errorf("%s started (token %d) while %v run", l.Instance, l.Token, r.running)
			}
			r.running[l.Instance] = l.Token
			r.events = append(r.events, event{instance: l.Instance, start: true, token: l.Token, at: time.Now()})
			return nil
		},
		func(ctx context.Context, l masterjob.Lease) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if tok, ok := r.running[l.Instance]; !ok || tok != l.Token {
				r.t.Errorf("%s: stop of token %d without a matching start", l.Instance, l.Token)
			}
			delete(r.running, l.Instance)
			r.events = append(r.events, event{instance: l.Instance, token: l.Token, at: time.Now(), cause: masterjob.StopReason(ctx)})
			return nil
		})
}

// waitTakeover waits (on the bubble's clock) until instance to runs the
// job, for at most limit, and returns when from last stopped it and when to
// last started it (zero if it did not).
func (r *recorder) waitTakeover(from, to string, limit time.Duration) (fromStop, toStart time.Time) {
	for t0 := time.Now(); r.runningNow()[to] == 0 && time.Since(t0) < limit; {
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
	}
	for _, ev := range r.snapshot() {
		if ev.instance == from && !ev.start {
			fromStop = ev.at
		}
		if ev.instance == to && ev.start {
			toStart = ev.at
		}
	}
	return fromStop, toStart
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

func (r *recorder) runningNow() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for k, v := range r.running {
		out[k] = v
	}
	return out
}

// startRun runs e in the background and returns a function that cancels it
// and returns Run's error.
func startRun(e *masterjob.Executor) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// runIdle creates instance id on st with an idle job on lock, and runs it.
func runIdle(t *testing.T, st store.Store, id, lock string) (*masterjob.Executor, func() error) {
	t.Helper()
	e := newExec(t, st, id)
	if err := e.StartMaster(lock, idle()); err != nil {
		t.Fatal(err)
	}
	return e, startRun(e)
}

func lockState(t *testing.T, st store.Store, lock string) store.LockState {
	t.Helper()
	ls, err := st.Locks(context.Background(), lock)
	if err != nil {
		t.Fatal(err)
	}
	return ls[0]
}

func TestSingleInstanceRunsAndReleasesOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		rec := newRecorder(t)
		e := newExec(t, st, "a")
		if err := e.StartMaster("JOB", rec.job()); err != nil {
			t.Fatal(err)
		}
		stop := startRun(e)
		synctest.Wait()
		if got := rec.runningNow(); got["a"] == 0 {
			t.Fatalf("job not started at once on a free lock (cold start): %v", got)
		}
		if m := e.Masters(); len(m) != 1 || m[0].Lock != "JOB" || m[0].Token != rec.runningNow()["a"] {
			t.Fatalf("Masters() = %v", m)
		}
		time.Sleep(10 * heartbeat) // renewals keep it
		synctest.Wait()
		if ls := lockState(t, st, "JOB"); ls.Holder != "a" || ls.TTL <= 0 {
			t.Fatalf("lease not kept by renewals: %+v", ls)
		}
		if ev := rec.snapshot(); len(ev) != 1 {
			t.Fatalf("events during steady mastership: %+v", ev)
		}
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		ev := rec.snapshot()
		if len(ev) != 2 || ev[1].start || !errors.Is(ev[1].cause, masterjob.ErrShutdown) {
			t.Fatalf("want start then stop(ErrShutdown), got %+v", ev)
		}
		if ls := lockState(t, st, "JOB"); ls.Holder != "" {
			t.Fatalf("lease not released on shutdown: %+v", ls)
		}
		if err := e.Run(context.Background()); !errors.Is(err, masterjob.ErrClosed) {
			t.Fatalf("second Run: %v, want ErrClosed", err)
		}
	})
}

func TestOneMasterAndGracefulHandoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		rec := newRecorder(t)
		stops := map[string]func() error{}
		for _, id := range []string{"a", "b", "c"} {
			e := newExec(t, st, id)
			if err := e.StartMaster("JOB", rec.job()); err != nil {
				t.Fatal(err)
			}
			stops[id] = startRun(e)
		}
		for round := 0; round < 2; round++ {
			synctest.Wait()
			run := rec.runningNow()
			if len(run) != 1 {
				t.Fatalf("round %d: running = %v, want exactly one", round, run)
			}
			var master string
			for id := range run {
				master = id
			}
			t0 := time.Now()
			if err := stops[master](); err != nil {
				t.Fatal(err)
			}
			delete(stops, master)
			synctest.Wait()
			run = rec.runningNow()
			if len(run) != 1 {
				t.Fatalf("round %d: after graceful stop of %s running = %v", round, master, run)
			}
			// The store pushes the release: the takeover costs no fake time.
			if took := time.Since(t0); took > 0 {
				t.Fatalf("graceful handoff took %v of store time, want immediate", took)
			}
		}
		for _, s := range stops {
			_ = s()
		}
	})
}

// hidden hides the Notifier capability of a store, as a polling-only
// backend would.
type hidden struct{ store.Store }

func TestFollowerWakesAtLeaseExpiryNotAtCheckInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		rec := newRecorder(t)
		// a's view of the store: it can be cut off.
		aView := &switchable{Store: st}
		a := newExec(t, aView, "a")
		_ = a.StartMaster("JOB", rec.job())
		stopA := startRun(a)
		synctest.Wait()
		b := newExec(t, hidden{st}, "b", masterjob.WithCheckMasterInterval(time.Minute))
		_ = b.StartMaster("JOB", rec.job())
		stopB := startRun(b)
		synctest.Wait()
		if run := rec.runningNow(); run["a"] == 0 || len(run) != 1 {
			t.Fatalf("running = %v", run)
		}
		time.Sleep(heartbeat / 2)
		aView.cut(true) // a partition between a and the store
		expires := lockState(t, st, "JOB").ExpiresAt
		// b must take over right after the lease expires, not a minute later.
		aStop, bStart := rec.waitTakeover("a", "b", time.Minute)
		if aStop.IsZero() || !aStop.Before(expires) {
			t.Fatalf("a stopped at %v, not before its lease expired at %v", aStop, expires)
		}
		if bStart.Before(expires) || bStart.Sub(expires) > 50*time.Millisecond {
			t.Fatalf("b started %v after expiry, want within 50ms (lease %v after last renewal)", bStart.Sub(expires), tolerance)
		}
		aView.cut(false)
		_ = stopA()
		_ = stopB()
	})
}

// switchable is a store whose connection can be cut: every call fails with
// store.ErrUnavailable while cut.
type switchable struct {
	store.Store
	mu     sync.Mutex
	isCut  bool
	hangOn bool
}

func (s *switchable) cut(v bool)  { s.mu.Lock(); s.isCut = v; s.mu.Unlock() }
func (s *switchable) hang(v bool) { s.mu.Lock(); s.hangOn = v; s.mu.Unlock() }

func (s *switchable) fail(ctx context.Context) error {
	s.mu.Lock()
	c, h := s.isCut, s.hangOn
	s.mu.Unlock()
	if h {
		<-ctx.Done()
		return errors.Join(store.ErrUnavailable, ctx.Err())
	}
	if c {
		return store.ErrUnavailable
	}
	return nil
}

func (s *switchable) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	if err := s.fail(ctx); err != nil {
		return nil, err
	}
	return s.Store.Acquire(ctx, h, locks, ttl)
}

func (s *switchable) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	if err := s.fail(ctx); err != nil {
		return nil, err
	}
	return s.Store.Renew(ctx, id, refs, ttl)
}

func (s *switchable) Release(ctx context.Context, id string, refs []store.LeaseRef) error {
	if err := s.fail(ctx); err != nil {
		return err
	}
	return s.Store.Release(ctx, id, refs)
}

func TestSelfDemotionBeforeExpiry(t *testing.T) {
	for _, mode := range []string{"renewals fail", "renewals hang"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := memstore.New()
				view := &switchable{Store: st}
				rec := newRecorder(t)
				e := newExec(t, view, "a")
				_ = e.StartMaster("JOB", rec.job())
				stop := startRun(e)
				synctest.Wait()
				time.Sleep(3 * heartbeat)
				synctest.Wait()
				ls := lockState(t, st, "JOB")
				if mode == "renewals fail" {
					view.cut(true)
				} else {
					view.hang(true)
				}
				time.Sleep(2 * tolerance)
				synctest.Wait()
				ev := rec.snapshot()
				if len(ev) != 2 {
					t.Fatalf("want start and stop, got %+v", ev)
				}
				stopAt := ev[1].at
				// The store extended the lease at the last successful renewal;
				// the job must be stopped before that lease expires, by at
				// least the safety margin minus one heartbeat of slack.
				expires := lockState(t, st, "JOB").ExpiresAt
				if !stopAt.Before(expires) {
					t.Fatalf("job stopped at %v, after the lease expired at %v", stopAt, expires)
				}
				if expires.Sub(stopAt) < margin {
					t.Fatalf("job stopped only %v before expiry, want at least the margin %v", expires.Sub(stopAt), margin)
				}
				if !errors.Is(ev[1].cause, masterjob.ErrTrustWindowPassed) {
					t.Fatalf("stop cause %v, want ErrTrustWindowPassed", ev[1].cause)
				}
				if ls.Holder != "a" {
					t.Fatalf("precondition: %+v", ls)
				}
				if len(e.Masters()) != 0 {
					t.Fatalf("still master after demotion: %v", e.Masters())
				}
				// The store comes back: the instance recovers without restart.
				view.cut(false)
				view.hang(false)
				time.Sleep(checkIntv + tolerance)
				synctest.Wait()
				if rec.runningNow()["a"] == 0 {
					t.Fatalf("did not become master again after the store came back: %+v", rec.snapshot())
				}
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// lateRenew delays renewal answers (not their effect): a renewal that
// returns after the trust window must not revive the mastership.
type lateRenew struct {
	store.Store
	mu    sync.Mutex
	delay time.Duration
}

func (s *lateRenew) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	res, err := s.Store.Renew(context.Background(), id, refs, ttl)
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	time.Sleep(d) // the answer is stuck in a stalled network; ctx is ignored on purpose
	return res, err
}

func TestLateRenewalDoesNotReviveMastership(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &lateRenew{Store: st}
		rec := newRecorder(t)
		e := newExec(t, view, "a", masterjob.WithCheckMasterInterval(time.Hour))
		_ = e.StartMaster("JOB", rec.job())
		stop := startRun(e)
		synctest.Wait()
		view.mu.Lock()
		view.delay = 2 * tolerance
		view.mu.Unlock()
		time.Sleep(tolerance)
		synctest.Wait()
		ev := rec.snapshot()
		if len(ev) < 2 || ev[0].token != 1 || ev[1].start || !errors.Is(ev[1].cause, masterjob.ErrTrustWindowPassed) {
			t.Fatalf("want token 1 demoted while its renewal hangs, got %+v", ev)
		}
		time.Sleep(3 * tolerance) // the late answers for token 1 arrive
		synctest.Wait()
		// The stopped job released its lease, so the instance may become
		// master again, but only through a new acquisition: token 1 never
		// runs again, whatever its late renewals said.
		for _, ev := range rec.snapshot()[2:] {
			if ev.token == 1 {
				t.Fatalf("a late renewal revived token 1: %+v", rec.snapshot())
			}
		}
		for _, m := range e.Masters() {
			if m.Token == 1 {
				t.Fatalf("Masters() = %v: token 1 revived", e.Masters())
			}
		}
		view.mu.Lock()
		view.delay = 0
		view.mu.Unlock()
		_ = stop()
	})
}

// lostAnswer commits Acquire in the store but reports an error to the
// caller once, as when the answer is lost on the network.
type lostAnswer struct {
	store.Store
	mu   sync.Mutex
	lose int
}

func (s *lostAnswer) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	res, err := s.Store.Acquire(ctx, h, locks, ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose > 0 {
		s.lose--
		return nil, store.ErrUnavailable
	}
	return res, err
}

func TestNoStartWithoutCommittedAcquisition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &switchable{Store: st}
		view.cut(true)
		rec := newRecorder(t)
		e := newExec(t, view, "a")
		_ = e.StartMaster("JOB", rec.job())
		stop := startRun(e)
		time.Sleep(3 * checkIntv)
		synctest.Wait()
		if ev := rec.snapshot(); len(ev) != 0 {
			t.Fatalf("job started without an acquisition: %+v", ev)
		}
		_ = stop()

		// An acquisition that committed but whose answer was lost starts
		// nothing on its own: the job starts once a read of the store
		// (the lease's push, or the next check) shows the lease held by
		// this instance with a token no job of it ever ran, and counts
		// its trust window from that read's start.
		lossy := &lostAnswer{Store: st, lose: 1}
		e2 := newExec(t, lossy, "b")
		_ = e2.StartMaster("JOB", rec.job())
		stop2 := startRun(e2)
		time.Sleep(3 * checkIntv)
		synctest.Wait()
		ev := rec.snapshot()
		if len(ev) != 1 || ev[0].instance != "b" || ev[0].token != 1 {
			t.Fatalf("want one start by b with token 1 (adopted once read), got %+v", ev)
		}
		_ = stop2()
	})
}

func TestDisableStopsWithinHeartbeatAndEnableStartsOnce(t *testing.T) {
	for _, push := range []bool{true, false} {
		name := "push"
		if !push {
			name = "poll"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := memstore.New()
				var view store.Store = st
				if !push {
					view = hidden{st}
				}
				rec := newRecorder(t)
				var execs []*masterjob.Executor
				var stops []func() error
				for _, id := range []string{"a", "b", "c"} {
					e := newExec(t, view, id)
					_ = e.StartMaster("JOB", rec.job())
					execs = append(execs, e)
					stops = append(stops, startRun(e))
				}
				synctest.Wait()
				t0 := time.Now()
				ch, err := execs[0].Disable(context.Background(), "JOB", "maintenance")
				if err != nil || !ch.Changed {
					t.Fatalf("Disable: %+v %v", ch, err)
				}
				synctest.Wait()
				for len(rec.runningNow()) > 0 && time.Since(t0) < 10*heartbeat {
					time.Sleep(10 * time.Millisecond)
					synctest.Wait()
				}
				took := time.Since(t0)
				limit := heartbeat
				if push {
					limit = 0
				}
				if took > limit {
					t.Fatalf("job stopped %v after disable, want within %v", took, limit)
				}
				ev := rec.snapshot()
				if last := ev[len(ev)-1]; last.start || !errors.Is(last.cause, masterjob.ErrDisabled) {
					t.Fatalf("last event %+v, want stop with ErrDisabled", last)
				}
				time.Sleep(5 * checkIntv)
				synctest.Wait()
				if len(rec.snapshot()) != 2 {
					t.Fatalf("someone started while disabled: %+v", rec.snapshot())
				}
				if ls := lockState(t, st, "JOB"); ls.Holder != "" || !ls.Disabled || ls.Reason != "maintenance" {
					t.Fatalf("after disable: %+v", ls)
				}
				t1 := time.Now()
				if _, err := execs[1].Enable(context.Background(), "JOB"); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				for len(rec.runningNow()) == 0 && time.Since(t1) < 2*checkIntv {
					time.Sleep(10 * time.Millisecond)
					synctest.Wait()
				}
				if push && time.Since(t1) > 0 {
					t.Fatalf("enable took %v with push", time.Since(t1))
				}
				time.Sleep(3 * checkIntv)
				synctest.Wait()
				if n := len(rec.snapshot()); n != 3 || len(rec.runningNow()) != 1 {
					t.Fatalf("after enable want exactly one start, got %+v", rec.snapshot())
				}
				for _, s := range stops {
					_ = s()
				}
			})
		})
	}
}

func TestJobReturningReleasesAndOthersTakeOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		var mu sync.Mutex
		starts := map[string]int{}
		job := masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			mu.Lock()
			starts[l.Instance]++
			n := starts[l.Instance]
			mu.Unlock()
			if l.Instance == "a" && n == 1 {
				return errors.New("boom") // a's first run fails at once
			}
			<-ctx.Done()
			return nil
		})
		a := newExec(t, st, "a")
		_ = a.StartMaster("JOB", job)
		stopA := startRun(a)
		synctest.Wait()
		b := newExec(t, st, "b")
		_ = b.StartMaster("JOB", job)
		stopB := startRun(b)
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		got := map[string]int{"a": starts["a"], "b": starts["b"]}
		mu.Unlock()
		if got["a"] != 1 || got["b"] != 1 {
			t.Fatalf("starts = %v, want a once (returned) then b once", got)
		}
		if m := b.Masters(); len(m) != 1 {
			t.Fatalf("b not master: %v", m)
		}
		_ = stopA()
		_ = stopB()
	})
}

func TestStopRunsOncePerStartOverManyTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		rec := newRecorder(t)
		views := map[string]*switchable{}
		stops := map[string]func() error{}
		for _, id := range []string{"a", "b", "c"} {
			views[id] = &switchable{Store: st}
			e := newExec(t, views[id], id)
			_ = e.StartMaster("JOB", rec.job())
			stops[id] = startRun(e)
		}
		ctl := newExec(t, st, "ctl")
		for i := 0; i < 30; i++ {
			synctest.Wait()
			switch i % 3 {
			case 0: // cut the master off for a while
				for id := range rec.runningNow() {
					views[id].cut(true)
					time.Sleep(tolerance + heartbeat)
					views[id].cut(false)
				}
			case 1:
				_, _ = ctl.Disable(context.Background(), "JOB", "x")
				time.Sleep(2 * heartbeat)
				_, _ = ctl.Enable(context.Background(), "JOB")
			case 2:
				time.Sleep(checkIntv)
			}
			time.Sleep(tolerance + checkIntv)
		}
		for _, s := range stops {
			_ = s()
		}
		starts, stopsN := 0, 0
		for _, ev := range rec.snapshot() {
			if ev.start {
				starts++
			} else {
				stopsN++
			}
		}
		if starts != stopsN || starts < 20 {
			t.Fatalf("starts %d, stops %d (want equal, and many)", starts, stopsN)
		}
		rec.mu.Lock()
		overlap := rec.overlap
		rec.mu.Unlock()
		if overlap {
			t.Fatal("two instances ran the job at once")
		}
	})
}

func TestShutdownTimeoutWhenJobIgnoresContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		release := make(chan struct{})
		e := newExec(t, st, "a", masterjob.WithShutdownTimeout(time.Second))
		_ = e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			<-release
			return nil
		}))
		stop := startRun(e)
		synctest.Wait()
		if err := stop(); !errors.Is(err, masterjob.ErrShutdownTimeout) {
			t.Fatalf("Run = %v, want ErrShutdownTimeout", err)
		}
		if ls := lockState(t, st, "JOB"); ls.Holder != "a" {
			t.Fatalf("the lease of a job that may still run was released: %+v", ls)
		}
		close(release)
		synctest.Wait()
	})
}

func TestStartMasterValidation(t *testing.T) {
	e := newExec(t, memstore.New(), "a")
	if err := e.StartMaster("", masterjob.JobFunc(nil)); !errors.Is(err, store.ErrInvalidLockName) {
		t.Fatalf("empty name: %v", err)
	}
	long := string(make([]byte, 201))
	for i := range []byte(long) {
		_ = i
	}
	if err := e.StartMaster(string(bytesOf('x', 201)), masterjob.JobFunc(func(context.Context, masterjob.Lease) error { return nil })); !errors.Is(err, store.ErrInvalidLockName) {
		t.Fatalf("long name: %v", err)
	}
	ok := masterjob.JobFunc(func(context.Context, masterjob.Lease) error { return nil })
	if err := e.StartMaster("X", ok); err != nil {
		t.Fatal(err)
	}
	if err := e.StartMaster("X", ok); !errors.Is(err, masterjob.ErrDuplicateLock) {
		t.Fatalf("duplicate: %v", err)
	}
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// Stop, then release: when renewals fail and the master demotes itself,
// its lease must not be released while the job is still stopping, or a
// follower could start beside it.
func TestDemotionReleasesOnlyAfterJobStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		// Renewals fail, everything else works: the release would get through.
		view := &renewFails{Store: st}
		stopped := make(chan struct{})
		e := newExec(t, view, "a", masterjob.WithMaxHeartbeatRetryCount(0))
		_ = e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
			<-ctx.Done()
			time.Sleep(margin / 2) // slow to stop
			close(stopped)
			return nil
		}))
		stop := startRun(e)
		synctest.Wait()
		view.fail.Store(true)
		time.Sleep(heartbeat + time.Millisecond) // the renewal fails: demotion
		synctest.Wait()
		select {
		case <-stopped:
			t.Fatal("precondition: the job stopped at once")
		default:
		}
		if ls := lockState(t, st, "JOB"); ls.Holder != "a" {
			t.Fatalf("lease released while the job was still stopping: %+v", ls)
		}
		<-stopped
		synctest.Wait()
		if ls := lockState(t, st, "JOB"); ls.Holder == "a" && ls.Token == 1 {
			t.Fatalf("lease not released after the job stopped: %+v", ls)
		}
		_ = stop()
	})
}

type renewFails struct {
	store.Store
	fail atomic.Bool
}

func (s *renewFails) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	if s.fail.Load() {
		return nil, store.ErrUnavailable
	}
	return s.Store.Renew(ctx, id, refs, ttl)
}

// slowAnswer applies Acquire at once but answers late, as a slow network
// would, so that a release can happen between the read and the answer.
type slowAnswer struct {
	store.Store
	delay time.Duration
}

func (s *slowAnswer) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	res, err := s.Store.Acquire(ctx, h, locks, ttl)
	time.Sleep(s.delay)
	return res, err
}

// Subscribe passes the store's notifications on: embedding store.Store
// alone would hide the Notifier capability, and with it the push this
// test is about.
func (s *slowAnswer) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return s.Store.(store.Notifier).Subscribe(ctx)
}

// A release pushed while a follower's check is in flight must still wake
// the follower: the check read the store before the release.
func TestReleasePushedDuringCheckIsNotLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		rec := newRecorder(t)
		a := newExec(t, st, "a")
		_ = a.StartMaster("JOB", rec.job())
		stopA := startRun(a)
		synctest.Wait()
		const answerDelay = 50 * time.Millisecond
		b := newExec(t, &slowAnswer{Store: st, delay: answerDelay}, "b", masterjob.WithCheckMasterInterval(time.Hour))
		_ = b.StartMaster("JOB", rec.job())
		stopB := startRun(b) // b's first check starts now and answers in 50ms
		time.Sleep(10 * time.Millisecond)
		released := time.Now()
		if err := stopA(); err != nil { // a releases while b's check is in flight
			t.Fatal(err)
		}
		for rec.runningNow()["b"] == 0 && time.Since(released) < time.Minute {
			time.Sleep(time.Millisecond)
		}
		// b's stale answer arrives 40ms after the release; its next check
		// (another 50ms) takes the lock. Without the pushed wake-up b would
		// wait for a's lease to expire (3s).
		if took := time.Since(released); took > 2*answerDelay {
			t.Fatalf("b took over %v after the release, want within %v", took, 2*answerDelay)
		}
		_ = stopB()
	})
}
