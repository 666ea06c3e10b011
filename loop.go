package masterjob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/masterjob/masterjob/store"
)

// loop is the state of one Run: a single goroutine owns it. Store calls run
// in their own goroutines (at most one check, one renewal and one release
// at a time) so that the loop stays responsive and can enforce the trust
// window on every wake, whatever the store does.
type loop struct {
	e   *Executor
	cfg Config
	log *slog.Logger
	now func() time.Time // the executor's clock: monotonic, counting host suspend

	masters map[string]*mastership // includes masterships whose job is stopping
	// toRelease holds leases to release once: jobs that stopped, and leases
	// the store says this instance holds but the loop does not run.
	toRelease map[string]int64
	// holdoff keeps this instance from acquiring a lock until the time
	// given, after its job returned by itself: others get the first chance.
	holdoff map[string]time.Time

	started     bool      // the init delay has passed
	startAt     time.Time // when the init delay ends
	nextCheckAt time.Time // zero: no check scheduled
	nextRenewAt time.Time // zero: nothing to renew
	checkFails  int       // consecutive failed checks, for backoff
	renewFails  int       // consecutive failed renewals

	checking, renewing, releasing bool
	checkDone                     chan checkResult
	renewDone                     chan renewResult
	releaseDone                   chan releaseResult
	jobDone                       chan jobExit

	notify      <-chan string
	notifyStop  context.CancelFunc
	notifyFails int

	shutdown   bool
	shutdownBy time.Time
	jobCtx     context.Context // parent of job contexts: Run's values, not its cancellation
}

// mastership is one lease held by this instance and its running job.
type mastership struct {
	lease    Lease
	deadline time.Time // end of the trust window, monotonic
	expiry   time.Time // the latest the store could consider the lease ours
	clock    *leaseClock
	cancel   context.CancelCauseFunc
	stopping error // cause, once the job's context was cancelled
	lost     bool  // the lease is (or may be) gone: do not renew
}

type checkResult struct {
	began  time.Time
	states []store.LockState
	err    error
}

type renewResult struct {
	began   time.Time
	results []store.RenewResult
	err     error
}

type releaseResult struct {
	refs []store.LeaseRef
	err  error
}

type jobExit struct {
	lock  string
	token int64
	err   error
}

func newLoop(e *Executor) *loop {
	return &loop{
		e:           e,
		cfg:         e.cfg,
		log:         e.log,
		now:         e.now,
		masters:     map[string]*mastership{},
		toRelease:   map[string]int64{},
		holdoff:     map[string]time.Time{},
		checkDone:   make(chan checkResult, 1),
		renewDone:   make(chan renewResult, 1),
		releaseDone: make(chan releaseResult, 1),
		jobDone:     make(chan jobExit),
	}
}

func (l *loop) run(ctx context.Context) error {
	l.jobCtx = context.WithoutCancel(ctx)
	l.startAt = l.now().Add(l.cfg.InitDelay)
	l.nextCheckAt = l.startAt
	l.subscribe()
	defer func() {
		if l.notifyStop != nil {
			l.notifyStop()
		}
	}()

	ctxDone := ctx.Done()
	for {
		now := l.now()
		l.enforceDeadlines(now)
		if l.shutdown && l.idle() {
			return nil
		}
		if l.shutdown && !now.Before(l.shutdownBy) {
			return l.abandon()
		}
		l.startCalls(now)
		if l.shutdown && l.idle() {
			return nil
		}
		// A fresh timer each round, never already expired: an expired timer
		// in a select, or Reset, crashed the race-enabled runtime inside
		// testing/synctest bubbles (go1.26.8). A wake that is due now is
		// one nanosecond away, which changes nothing in real time.
		timer := time.NewTimer(max(l.nextWake().Sub(l.now()), time.Nanosecond))
		select {
		case <-ctxDone:
			ctxDone = nil
			l.beginShutdown()
		case <-timer.C:
		case <-l.e.added:
			if !l.shutdown {
				l.checkSoon(l.startAt)
			}
		case r := <-l.checkDone:
			l.checking = false
			l.onCheck(r)
		case r := <-l.renewDone:
			l.renewing = false
			l.onRenew(r)
		case r := <-l.releaseDone:
			l.releasing = false
			l.onRelease(r)
		case x := <-l.jobDone:
			l.onJobExit(x)
		case lock, ok := <-l.notify:
			if ok {
				l.onNotify(lock)
				break
			}
			l.notify = nil
			l.notifyStop()
			l.notifyStop = nil
			l.log.Warn("store notifications ended; relying on polling until resubscribed")
		}
		timer.Stop()
	}
}

// idle reports whether nothing is left to wait for during shutdown.
func (l *loop) idle() bool {
	return len(l.masters) == 0 && len(l.toRelease) == 0 && !l.checking && !l.renewing && !l.releasing
}

func (l *loop) nextWake() time.Time {
	wake := l.now().Add(time.Hour)
	consider := func(t time.Time) {
		if !t.IsZero() && t.Before(wake) {
			wake = t
		}
	}
	if !l.shutdown {
		if !l.checking { // a check asked for during one waits for its answer
			consider(l.nextCheckAt)
		}
	} else {
		consider(l.shutdownBy)
	}
	if !l.renewing && l.holdsRenewable() {
		consider(l.nextRenewAt)
	}
	for _, m := range l.masters {
		if !m.lost {
			consider(m.deadline)
		}
	}
	return wake
}

// checkSoon schedules a check at t, or now if t has passed, unless one is
// due earlier.
func (l *loop) checkSoon(t time.Time) {
	if now := l.now(); t.Before(now) {
		t = now
	}
	if l.nextCheckAt.IsZero() || t.Before(l.nextCheckAt) {
		l.nextCheckAt = t
	}
}

// enforceDeadlines demotes every master whose trust window has passed. It
// runs on every wake, so a process that was paused (SIGSTOP, GC) notices at
// its first instruction after resuming.
func (l *loop) enforceDeadlines(now time.Time) {
	for _, m := range l.masters {
		if m.lost || now.Before(m.deadline) {
			continue
		}
		cause := ErrTrustWindowPassed
		if !now.Before(m.expiry) {
			cause = ErrLeaseExpired
		}
		m.lost = true
		l.stop(m, cause, Demoted)
	}
}

// stop cancels m's job with cause (once) and reports the transition. A loss
// (kind Demoted or Lost) also reaches a job that is already stopping for a
// planned reason: its StopReason turns to the loss and its StopDeadline to
// now, so that it is killed at once rather than at the old expiry (another
// instance may be master already).
func (l *loop) stop(m *mastership, cause error, kind TransitionKind) {
	loss := kind == Demoted || kind == Lost
	if loss {
		at := l.now()
		if m.stopping == nil && errors.Is(cause, ErrTrustWindowPassed) {
			// The lease itself lasts until its expiry: the job may use the
			// safety margin to stop.
			at = m.expiry
		}
		m.clock.lose(cause, at)
	}
	if m.stopping != nil {
		if loss {
			l.log.Warn("lease lost while the job was stopping: stop it at once", "lock", m.lease.Lock, "token", m.lease.Token, "reason", cause, "stopping_for", m.stopping)
			l.e.obs.Transition(Transition{Lock: m.lease.Lock, Kind: kind, Token: m.lease.Token, Instance: l.e.holder.ID, Reason: cause})
		}
		return
	}
	m.stopping = cause
	lvl := slog.LevelInfo
	if loss {
		lvl = slog.LevelWarn
		l.e.obs.Transition(Transition{Lock: m.lease.Lock, Kind: kind, Token: m.lease.Token, Instance: l.e.holder.ID, Reason: cause})
	}
	l.log.Log(context.Background(), lvl, "stopping job", "lock", m.lease.Lock, "token", m.lease.Token, "reason", cause)
	m.cancel(cause)
}

// renewable returns the leases to renew: held and not lost, including those
// whose job is stopping for a planned reason (the lease must outlive the job).
func (l *loop) renewable() []store.LeaseRef {
	var refs []store.LeaseRef
	for _, m := range l.masters {
		if !m.lost {
			refs = append(refs, store.LeaseRef{Lock: m.lease.Lock, Token: m.lease.Token})
		}
	}
	return refs
}

// holdsRenewable reports whether renewable would return any lease, without
// building the list: nextWake runs on every wake of the loop.
func (l *loop) holdsRenewable() bool {
	for _, m := range l.masters {
		if !m.lost {
			return true
		}
	}
	return false
}

// followed returns the registered locks this instance does not hold and
// may acquire now.
func (l *loop) followed(now time.Time) []string {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	var locks []string
	for name := range l.e.jobs {
		if _, ok := l.masters[name]; ok {
			continue
		}
		if _, pending := l.toRelease[name]; pending {
			continue
		}
		if until, ok := l.holdoff[name]; ok {
			if now.Before(until) {
				continue
			}
			delete(l.holdoff, name)
		}
		locks = append(locks, name)
	}
	return locks
}

// startCalls starts the store calls that are due and not already running.
func (l *loop) startCalls(now time.Time) {
	if !l.releasing && len(l.toRelease) > 0 {
		l.startRelease()
	}
	if refs := l.renewable(); !l.renewing && len(refs) > 0 && !now.Before(l.nextRenewAt) {
		l.startRenew(now, refs)
	}
	if l.shutdown || l.checking || l.nextCheckAt.IsZero() || now.Before(l.nextCheckAt) {
		return
	}
	l.started = true
	if l.notify == nil && l.notifyStop == nil {
		l.subscribe()
	}
	locks := l.followed(now)
	if len(locks) == 0 {
		// StartMaster, a release or the end of a holdoff schedules the next.
		l.nextCheckAt = time.Time{}
		for _, until := range l.holdoff {
			l.checkSoon(until)
		}
		return
	}
	l.checking = true
	l.nextCheckAt = time.Time{}
	timeout := min(l.cfg.CheckMasterInterval, l.cfg.TrustWindow())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		began := l.now()
		states, err := l.e.st.Acquire(ctx, l.e.holder, locks, l.cfg.Tolerance)
		l.checkDone <- checkResult{began: began, states: states, err: err}
	}()
}

func (l *loop) startRenew(now time.Time, refs []store.LeaseRef) {
	// The call is useless after the earliest trust window among the leases
	// ends, so it is bounded by it (and by a heartbeat).
	deadline := now.Add(l.cfg.HeartbeatInterval)
	for _, r := range refs {
		if d := l.masters[r.Lock].deadline; d.Before(deadline) {
			deadline = d
		}
	}
	l.renewing = true
	go func() {
		// A timeout, not a deadline: deadline is on the executor's clock,
		// which counts host suspend; context deadlines run on the
		// monotonic clock.
		ctx, cancel := context.WithTimeout(context.Background(), deadline.Sub(now))
		defer cancel()
		began := l.now()
		res, err := l.e.st.Renew(ctx, l.e.holder.ID, refs, l.cfg.Tolerance)
		l.renewDone <- renewResult{began: began, results: res, err: err}
	}()
}

func (l *loop) startRelease() {
	refs := make([]store.LeaseRef, 0, len(l.toRelease))
	for lock, token := range l.toRelease {
		refs = append(refs, store.LeaseRef{Lock: lock, Token: token})
	}
	l.releasing = true
	timeout := min(l.cfg.HeartbeatInterval, l.cfg.SafetyMargin)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := l.e.st.Release(ctx, l.e.holder.ID, refs)
		l.releaseDone <- releaseResult{refs: refs, err: err}
	}()
}

func (l *loop) onCheck(r checkResult) {
	now := l.now()
	// A check asked for while this one was in flight (a pushed release, a
	// new registration) must not be lost: this check may have read the
	// store before that release.
	requested := l.nextCheckAt
	defer func() {
		if !requested.IsZero() {
			l.checkSoon(requested)
		}
	}()
	l.e.obs.Check(now.Sub(r.began), len(r.states), r.err)
	l.e.setStoreResult(r.err)
	if r.err != nil {
		l.checkFails++
		wait := backoff(l.checkFails, min(100*time.Millisecond, l.cfg.CheckMasterInterval), l.cfg.CheckMasterInterval)
		l.log.Warn("check failed; retrying", "err", r.err, "retry_in", wait, "attempt", l.checkFails)
		l.nextCheckAt = now.Add(wait)
		return
	}
	if l.checkFails > 0 {
		l.log.Info("store reachable again", "after_failures", l.checkFails)
	}
	l.checkFails = 0
	sleep := l.cfg.CheckMasterInterval
	for _, s := range r.states {
		switch {
		case s.Acquired:
			if l.shutdown || l.jobFor(s.Lock) == nil {
				l.toRelease[s.Lock] = s.Token
				continue
			}
			l.becomeMaster(s, r.began)
		case s.Holder == l.e.holder.ID && s.TTL > 0:
			// A lease the loop does not run: an acquisition whose answer was
			// lost, or a release that failed. Never adopt it (its job may
			// have run already): release it so a fresh token is issued.
			l.toRelease[s.Lock] = s.Token
		case s.Held() && !s.Disabled:
			// Wake when the current lease expires, not a full interval later.
			sleep = min(sleep, max(s.TTL, time.Millisecond))
		}
	}
	l.nextCheckAt = now.Add(sleep)
	for _, until := range l.holdoff {
		l.checkSoon(until)
	}
}

func (l *loop) jobFor(lock string) Job {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	return l.e.jobs[lock]
}

// becomeMaster starts the job of an acquired lease. The acquisition has
// committed: the store returned it.
func (l *loop) becomeMaster(s store.LockState, began time.Time) {
	lease := Lease{Lock: s.Lock, Token: s.Token, Instance: l.e.holder.ID}
	ttl := min(s.TTL, l.cfg.Tolerance)
	m := &mastership{
		lease:    lease,
		deadline: began.Add(ttl - l.cfg.SafetyMargin),
		expiry:   began.Add(ttl),
	}
	m.clock = newLeaseClock(l.now, m.expiry)
	if !l.now().Before(m.deadline) {
		// The acquisition took so long that the trust window is already
		// over: do not start a job that would have to stop at once.
		l.toRelease[s.Lock] = s.Token
		l.log.Warn("acquired a lease too late to trust it; releasing", "lock", s.Lock, "token", s.Token)
		return
	}
	l.masters[s.Lock] = m
	if len(l.masters) == 1 || l.nextRenewAt.IsZero() {
		l.nextRenewAt = began.Add(l.cfg.HeartbeatInterval)
	}
	l.e.mu.Lock()
	l.e.masters[s.Lock] = lease
	l.e.deadlines[s.Lock] = m.deadline
	job := l.e.jobs[s.Lock]
	l.e.mu.Unlock()

	ctx := context.WithValue(l.jobCtx, leaseClockKey{}, m.clock)
	ctx, m.cancel = context.WithCancelCause(ctx)
	l.log.Info("became master", "lock", lease.Lock, "token", lease.Token)
	l.e.obs.Transition(Transition{Lock: lease.Lock, Kind: Acquired, Token: lease.Token, Instance: lease.Instance})
	go func() {
		err := runJob(ctx, job, lease)
		l.jobDone <- jobExit{lock: lease.Lock, token: lease.Token, err: err}
	}()
}

// runJob runs job, turning a panic into an error so that the loop always
// learns that the job ended.
func runJob(ctx context.Context, job Job, lease Lease) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p}
		}
	}()
	return job.Run(ctx, lease)
}

type panicError struct{ value any }

func (p *panicError) Error() string { return fmt.Sprint("masterjob: job panicked: ", p.value) }

func (l *loop) onRenew(r renewResult) {
	now := l.now()
	l.e.obs.Renewal(now.Sub(r.began), len(r.results), r.err)
	l.e.setStoreResult(r.err)
	if r.err != nil {
		l.renewFails++
		if l.renewFails > l.cfg.MaxHeartbeatRetryCount {
			l.log.Error("heartbeat failed after retries; demoting", "err", r.err, "retries", l.cfg.MaxHeartbeatRetryCount)
			for _, m := range l.masters {
				if !m.lost {
					m.lost = true
					l.stop(m, ErrTrustWindowPassed, Demoted)
				}
			}
			l.renewFails = 0
			return
		}
		// Spread the remaining retries over what is left of the window.
		earliest := time.Time{}
		for _, m := range l.masters {
			if !m.lost && (earliest.IsZero() || m.deadline.Before(earliest)) {
				earliest = m.deadline
			}
		}
		wait := l.cfg.HeartbeatInterval / time.Duration(l.cfg.MaxHeartbeatRetryCount+1)
		if !earliest.IsZero() {
			left := l.cfg.MaxHeartbeatRetryCount - l.renewFails + 1
			wait = min(wait, earliest.Sub(now)/time.Duration(left+1))
		}
		wait = max(wait, time.Millisecond)
		l.log.Warn("heartbeat failed; retrying", "err", r.err, "retry_in", wait, "attempt", l.renewFails)
		l.nextRenewAt = now.Add(wait)
		return
	}
	l.renewFails = 0
	l.nextRenewAt = r.began.Add(l.cfg.HeartbeatInterval)
	for _, res := range r.results {
		m := l.masters[res.Lock]
		if m == nil || m.lease.Token != res.Token || m.lost {
			continue
		}
		if !res.Renewed {
			m.lost = true
			l.stop(m, ErrLeaseLost, Lost)
			continue
		}
		// A renewal counts from when it began, and only if the trust
		// window had not closed before it returned.
		if now.Before(m.deadline) {
			ttl := min(res.TTL, l.cfg.Tolerance)
			m.deadline = r.began.Add(ttl - l.cfg.SafetyMargin)
			m.expiry = r.began.Add(ttl)
			m.clock.set(m.expiry)
			l.e.mu.Lock()
			l.e.deadlines[res.Lock] = m.deadline
			l.e.mu.Unlock()
			l.e.obs.LeaseTTL(res.Lock, res.TTL)
		}
		if res.Revoked || res.Disabled {
			l.stop(m, ErrDisabled, Released)
		}
	}
}

func (l *loop) onJobExit(x jobExit) {
	m := l.masters[x.lock]
	if m == nil || m.lease.Token != x.token {
		return
	}
	if m.stopping == nil {
		// The job returned on its own: the mastership ends here.
		m.stopping = ErrJobReturned
		m.cancel(ErrJobReturned)
		if x.err != nil {
			l.log.Error("job returned an error; releasing the lease", "lock", x.lock, "token", x.token, "err", x.err)
		} else {
			l.log.Info("job returned; releasing the lease", "lock", x.lock, "token", x.token)
		}
		// Give others the first chance to take over.
		l.holdoff[x.lock] = l.now().Add(l.cfg.CheckMasterInterval)
	} else if x.err != nil && !errors.Is(x.err, context.Canceled) && !errors.Is(x.err, m.stopping) {
		l.log.Warn("job stopped with an error", "lock", x.lock, "token", x.token, "err", x.err)
	}
	delete(l.masters, x.lock)
	l.e.mu.Lock()
	delete(l.e.masters, x.lock)
	delete(l.e.deadlines, x.lock)
	l.e.mu.Unlock()
	// Stop, then release: the job has returned, so the next master cannot
	// start beside it. Releasing a lost lease is fenced and harmless.
	l.toRelease[x.lock] = x.token
	if !m.lost {
		l.e.obs.Transition(Transition{Lock: x.lock, Kind: Released, Token: x.token, Instance: l.e.holder.ID, Reason: m.stopping})
	}
	l.log.Info("job stopped", "lock", x.lock, "token", x.token, "reason", m.stopping)
}

func (l *loop) onRelease(r releaseResult) {
	if r.err != nil && !l.shutdown {
		// The lease expires by itself; no retry storm against a sick store.
		l.log.Warn("release failed; the lease will expire instead", "err", r.err)
	} else if r.err != nil {
		l.log.Warn("release on shutdown failed; the lease will expire instead", "err", r.err)
	}
	for _, ref := range r.refs {
		if l.toRelease[ref.Lock] == ref.Token {
			delete(l.toRelease, ref.Lock)
		}
	}
	// The locks are followed again: learn at once who holds them now and
	// when their leases expire, instead of waiting a full check interval.
	if !l.shutdown {
		l.checkSoon(l.now())
	}
}

func (l *loop) onNotify(lock string) {
	if l.shutdown {
		return
	}
	if m := l.masters[lock]; m != nil {
		if !m.lost {
			l.nextRenewAt = l.now() // see a revocation at once
		}
		return
	}
	if l.jobFor(lock) != nil && l.started {
		l.checkSoon(l.now())
	}
}

func (l *loop) beginShutdown() {
	l.shutdown = true
	l.shutdownBy = l.now().Add(l.cfg.ShutdownTimeout)
	l.nextCheckAt = time.Time{}
	for _, m := range l.masters {
		l.stop(m, ErrShutdown, Released)
	}
}

// abandon ends Run when jobs did not stop in time. Their leases are not
// released (a job may still run) and expire by themselves. Goroutines of
// store calls end within their own timeouts; job goroutines end when the
// jobs return.
func (l *loop) abandon() error {
	for _, m := range l.masters {
		l.log.Error("job did not stop within the shutdown timeout; its lease will expire", "lock", m.lease.Lock, "token", m.lease.Token)
	}
	go func(n int, done <-chan jobExit) {
		for range n {
			<-done
		}
	}(len(l.masters), l.jobDone)
	l.drainCalls()
	return ErrShutdownTimeout
}

// drainCalls waits for in-flight store calls; each is bounded by a timeout.
func (l *loop) drainCalls() {
	for l.checking || l.renewing || l.releasing {
		select {
		case <-l.checkDone:
			l.checking = false
		case <-l.renewDone:
			l.renewing = false
		case <-l.releaseDone:
			l.releasing = false
		}
	}
}

func (l *loop) subscribe() {
	n, ok := l.e.st.(store.Notifier)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := n.Subscribe(ctx)
	if err != nil {
		cancel()
		l.notifyFails++
		if l.notifyFails == 1 {
			l.log.Warn("cannot subscribe to store notifications; polling", "err", err)
		}
		return
	}
	l.notifyFails = 0
	l.notify, l.notifyStop = ch, cancel
}

// backoff returns a jittered exponential delay for the n-th consecutive
// failure: between half and all of base*2^(n-1), capped at max.
func backoff(n int, base, limit time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if d <= 1 {
		return max(d, time.Millisecond)
	}
	return d/2 + rand.N(d/2+1)
}
