package masterjob

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	backoffpkg "github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store"
)

// loop elects and runs the jobs of one timing class (the locks that share a
// Config) during one Run: a single goroutine owns its state. Store calls run
// in their own goroutines (at most one check, one renewal and one release
// at a time) so that the loop stays responsive and can enforce the trust
// window on every wake, whatever the store does. Store notifications arrive
// through the executor's notification hub, never from a call the loop makes.
type loop struct {
	e   *Executor
	cfg Config
	log *slog.Logger
	now func() time.Time // the executor's clock: monotonic, counting host suspend

	masters map[string]*mastership // includes masterships whose job is stopping
	// live counts the masterships not lost (those renewed). firstDeadline
	// is a lower bound of their trust windows' ends: every live
	// mastership's deadline is at or after it (zero when none is live).
	// The loop wakes on every event, and at 10,000 masterships a pass over
	// them on each wake (a job exit, a push) made a wave of losses
	// quadratic; with these, a wake passes over them only when the bound
	// is due, and a renewal, which moves the deadlines, makes it exact.
	live          int
	firstDeadline time.Time
	// infos caches the parsed descriptions of the instances whose leases a
	// check sees: a handful of instances hold thousands of locks.
	infos infoCache
	// toRelease holds leases to release once: jobs that stopped, and leases
	// the store says this instance holds but the loop does not run.
	toRelease map[string]pendingRelease
	// holdoff keeps this instance from acquiring a lock until the time
	// given, after its job returned by itself: others get the first chance.
	holdoff map[string]time.Time
	// known is the latest master seen of each followed lock, for the log.
	known map[string]knownMaster
	// holders is the latest holder of each followed lock this instance
	// knows of, from its checks and from pushes that name the acquirer
	// (sooner than known): when the lock is freed, the first in line is
	// chosen without it (it released the lock, or died).
	holders map[string]string
	// seen is what the last check saw of each followed lock, for choosing
	// which free locks to ask for when balancing.
	seen map[string]seenLock
	// toAdopt holds the leases the store pushed as transferred to this
	// instance (store.Transfers), to read before their jobs start.
	toAdopt map[string]int64

	started     bool      // the init delay has passed
	runStart    time.Time // when Run started
	startAt     time.Time // when the init delay ends
	nextCheckAt time.Time // zero: no check scheduled
	nextRenewAt time.Time // zero: nothing to renew
	checkFails  int       // consecutive failed checks, for backoff
	renewFails  int       // consecutive failed renewals
	lastErr     string    // message of the last failure logged at warning level
	renewAgain  bool      // a renewal was asked for while one was in flight
	leftUntil   time.Time // balancing: when the free locks the check left to others are due
	recheck     bool      // the check's answer calls for another check at once
	// sweepAt is when the next check reads every followed lock again
	// (zero: the next check does). With balancing, the checks between
	// sweeps leave out the locks others hold until a known time.
	sweepAt time.Time
	// pushed holds the followed locks the store pushed a change of since
	// the last check.
	pushed map[string]bool
	// hinted: the store sets the hints of every lease change it pushes
	// (store.LeaseHinter), so a lease change without them may have freed
	// the lock.
	hinted bool
	// line is who may take a freed lock first, made once per batch of
	// pushes (onInbox) when one of them needs it.
	line *lineup

	checking, renewing, releasing, adopting bool
	checkDone                               chan checkResult
	adoptDone                               chan checkResult
	renewDone                               chan renewResult
	releaseDone                             chan releaseResult
	jobDone                                 chan jobExit
	inbox                                   *inbox // store notifications and registrations

	shutdown   bool
	shutdownBy time.Time
	stopCause  error           // why the executor shuts down: ErrShutdown, maybe wrapping Run's cause
	jobCtx     context.Context // parent of job contexts: Run's values, not its cancellation
}

// mastership is one lease held by this instance and its running job.
type mastership struct {
	lease     Lease
	deadline  time.Time // end of the trust window, on the executor's clock
	expiry    time.Time // the latest the store could consider the lease ours
	renewBy   time.Time // when its next renewal is due
	clock     *leaseClock
	cancel    context.CancelCauseFunc
	stopping  error  // cause, once the job's context was cancelled
	lost      bool   // the lease is (or may be) gone: do not renew
	successor string // a hand-off: release reserved for this instance
	// listSuccessor: successor was named by this instance from its member
	// list (by its shutdown, or by balancing), and is checked again at the
	// release (it may have left or died meanwhile). An operator's choice
	// is not: it may name an instance outside this one's list.
	listSuccessor bool
	// rebalance: the hand-off is a balancing move, released reserved for
	// the successor rather than given (see onJobExit).
	rebalance bool
}

// pendingRelease is a lease to release, with the successor it is reserved
// for after a hand-off.
type pendingRelease struct {
	token     int64
	successor string
	reserve   time.Duration
	// transfer: give the lock to successor in the releasing commit
	// (store.Transfers) rather than reserve it.
	transfer bool
	// expiry is the lease's expiry as its last renewal showed it (zero
	// when unknown or lost): until then the release is worth waiting for.
	expiry time.Time
	// released, for a mastership that ended, is its Released transition:
	// reported once the release has returned (committed or failed), so
	// that what observers do on it (the audit recorder's history append)
	// reaches the store after the hand-off rather than beside it
	// (TestReleasedReportedAfterTheRelease).
	released *Transition
}

// seenLock is a followed lock as a check saw it.
type seenLock struct {
	// freeSince is when it was (or, for a lease seen held, will be) free,
	// on the executor's clock; zero while it is disabled or reserved for
	// another instance.
	freeSince time.Time
	// mine: it is reserved for this instance (a hand-off to it).
	mine bool
	// holder held it when seen, until freeSince (unless it releases it).
	holder string
}

// knownMaster is the master of a followed lock as the last check saw it.
type knownMaster struct {
	holder string
	token  int64
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

func newLoop(e *Executor, cfg Config, log *slog.Logger) *loop {
	return &loop{
		e:           e,
		cfg:         cfg,
		log:         log,
		now:         e.now,
		masters:     map[string]*mastership{},
		toRelease:   map[string]pendingRelease{},
		holdoff:     map[string]time.Time{},
		known:       map[string]knownMaster{},
		holders:     map[string]string{},
		seen:        map[string]seenLock{},
		toAdopt:     map[string]int64{},
		checkDone:   make(chan checkResult, 1),
		adoptDone:   make(chan checkResult, 1),
		renewDone:   make(chan renewResult, 1),
		releaseDone: make(chan releaseResult, 1),
		jobDone:     make(chan jobExit),
		inbox:       newInbox(),
		infos:       infoCache{},
		hinted:      store.HintsLeases(e.st),
	}
}

func (l *loop) run(ctx context.Context) error {
	l.jobCtx = context.WithoutCancel(ctx)
	if l.runStart.IsZero() {
		l.runStart = l.now()
	}
	l.startAt = l.runStart.Add(l.cfg.InitDelay)
	l.nextCheckAt = l.startAt

	ctxDone := ctx.Done()
	for {
		// Shutdown first: a Run whose context is already done acquires
		// nothing.
		select {
		case <-ctxDone:
			ctxDone = nil
			l.beginShutdown(ctx)
		default:
		}
		now := l.now()
		if checkLoopInvariants {
			l.checkInvariants()
		}
		l.enforceDeadlines(now)
		if l.shutdown && l.idle() {
			return nil
		}
		if l.shutdown && !now.Before(l.shutdownBy) {
			if len(l.masters) == 0 {
				// Every job stopped in time; only releases are left,
				// each bounded by its own timeout.
				l.finishReleases()
				return nil
			}
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
		wake := l.nextWake(now)
		timer := time.NewTimer(max(wake.Sub(l.now()), time.Nanosecond))
		select {
		case <-ctxDone:
		case <-timer.C:
		case <-l.inbox.wake:
			l.onInbox()
		case r := <-l.checkDone:
			l.checking = false
			l.onCheck(r)
		case r := <-l.adoptDone:
			l.adopting = false
			l.onAdopt(r)
		case r := <-l.renewDone:
			l.renewing = false
			l.onRenew(r)
		case r := <-l.releaseDone:
			l.releasing = false
			l.onRelease(r)
		case x := <-l.jobDone:
			l.onJobExit(x)
		}
		timer.Stop()
	}
}

// idle reports whether nothing is left to wait for during shutdown.
func (l *loop) idle() bool {
	return len(l.masters) == 0 && len(l.toRelease) == 0 && !l.checking && !l.renewing && !l.releasing && !l.adopting
}

// nextWake returns when the loop must wake next; now is the loop's reading
// of this round, to bound the wait.
func (l *loop) nextWake(now time.Time) time.Time {
	wake := now.Add(time.Hour)
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
	if l.live > 0 {
		consider(l.firstDeadline)
	}
	return wake
}

// checkSoon schedules a check at t, or now if t has passed, unless one is
// due earlier.
func (l *loop) checkSoon(t time.Time) { l.checkAt(t, l.now()) }

// checkAt is checkSoon with the loop's reading of now.
func (l *loop) checkAt(t, now time.Time) {
	if t.Before(now) {
		t = now
	}
	if l.nextCheckAt.IsZero() || t.Before(l.nextCheckAt) {
		l.nextCheckAt = t
	}
}

// renewSoon schedules a renewal at t unless one is due earlier. A renewal
// asked for while one is in flight runs when that one returns: the one in
// flight may have read the store before whatever prompted the request.
func (l *loop) renewSoon(t time.Time) {
	if l.renewing {
		l.renewAgain = true
		return
	}
	if l.nextRenewAt.IsZero() || t.Before(l.nextRenewAt) {
		l.nextRenewAt = t
	}
}

// enforceDeadlines demotes every master whose trust window has passed. It
// runs on every wake, so a process that was paused (SIGSTOP, GC, a host
// suspend: the executor's clock counts it) notices at its first instruction
// after resuming.
func (l *loop) enforceDeadlines(now time.Time) {
	if l.live == 0 || now.Before(l.firstDeadline) {
		return
	}
	first := time.Time{}
	for _, m := range l.masters {
		if m.lost {
			continue
		}
		if now.Before(m.deadline) {
			if first.IsZero() || m.deadline.Before(first) {
				first = m.deadline
			}
			continue
		}
		cause := ErrTrustWindowPassed
		if !now.Before(m.expiry) {
			cause = ErrLeaseExpired
		}
		l.markLost(m)
		l.stop(m, cause, Demoted)
	}
	l.firstDeadline = first
}

// checkLoopInvariants makes the loop check, on every wake, what it keeps
// instead of recomputing (live, firstDeadline); set by the package's tests.
var checkLoopInvariants = false

// checkInvariants panics when live or firstDeadline disagree with the
// masterships: a deadline before the bound would be enforced late.
func (l *loop) checkInvariants() {
	live := 0
	for lock, m := range l.masters {
		if m.lost {
			continue
		}
		live++
		if m.deadline.Before(l.firstDeadline) {
			panic(fmt.Sprintf("masterjob: loop invariant: %s's trust window ends at %v, before the bound %v", lock, m.deadline, l.firstDeadline))
		}
	}
	if live != l.live || (live > 0 && l.firstDeadline.IsZero()) {
		panic(fmt.Sprintf("masterjob: loop invariant: %d live masterships, counted %d (bound %v)", live, l.live, l.firstDeadline))
	}
}

// markLost marks m lost: it is no longer renewed, and its deadline no
// longer enforced.
func (l *loop) markLost(m *mastership) {
	if !m.lost {
		m.lost = true
		l.live--
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
		// Cancel before anything else (the log below, the observers): the
		// job must learn first.
		m.clock.lose(cause, at)
	}
	if m.stopping != nil {
		if loss {
			l.e.obs.Transition(Transition{Lock: m.lease.Lock, Kind: kind, Token: m.lease.Token, Instance: l.e.holder.ID, Reason: cause})
			l.log.Warn("lease lost while the job was stopping: stop it at once", "lock", m.lease.Lock, "token", m.lease.Token,
				"reason", cause, "stopping_for", m.stopping)
		}
		return
	}
	m.stopping = cause
	m.cancel(cause)
	trace.Mark("job.cancel", m.lease.Lock)
	if loss {
		l.e.obs.Transition(Transition{Lock: m.lease.Lock, Kind: kind, Token: m.lease.Token, Instance: l.e.holder.ID, Reason: cause})
		l.log.Warn("stopping job: mastership lost", "lock", m.lease.Lock, "token", m.lease.Token, "reason", cause)
		return
	}
	l.log.Info("stopping job", "lock", m.lease.Lock, "token", m.lease.Token, "reason", cause)
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
func (l *loop) holdsRenewable() bool { return l.live > 0 }

// followed returns the locks of this timing class this instance does not
// hold and may acquire now.
func (l *loop) followed(now time.Time) []string {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	var locks []string
	for name, reg := range l.e.jobs {
		if reg.cfg != l.cfg {
			continue
		}
		if _, ok := l.masters[name]; ok {
			continue
		}
		if _, pending := l.toRelease[name]; pending {
			continue
		}
		if until, ok := l.holdoff[name]; ok {
			// A lock handed back to this instance (reserved for it, as the
			// last check saw) is taken whatever the holdoff.
			if now.Before(until) && !l.seen[name].mine {
				continue
			}
			delete(l.holdoff, name)
		}
		locks = append(locks, name)
	}
	return locks
}

// markPushed records that the store pushed a change of lock
// (pushedLeftOut).
func (l *loop) markPushed(lock string) {
	if l.pushed == nil {
		l.pushed = map[string]bool{}
	}
	l.pushed[lock] = true
}

// pushedLeftOut returns, and forgets, the locks the store pushed a change of
// since the last check that this check does not ask for (held off, or
// left to others by balancing): the check reads them without taking them,
// so that a lock handed to this instance (reserved for it) is seen and
// taken at once. A second round trip only after such a push.
func (l *loop) pushedLeftOut(asked []string) []string {
	if len(l.pushed) == 0 {
		return nil
	}
	for _, lk := range asked {
		delete(l.pushed, lk)
	}
	var out []string
	for lk := range l.pushed {
		if l.masters[lk] == nil && l.jobFor(lk) != nil {
			out = append(out, lk)
		}
	}
	clear(l.pushed)
	return out
}

// startCalls starts the store calls that are due and not already running.
func (l *loop) startCalls(now time.Time) {
	// Not while a check runs: the push may be of this instance's own
	// acquisition by that check, which onCheck then drops from toAdopt.
	if !l.adopting && !l.checking && len(l.toAdopt) > 0 {
		l.startAdopt()
	}
	if !l.releasing && len(l.toRelease) > 0 {
		l.startRelease()
	}
	if !l.renewing && l.holdsRenewable() && !now.Before(l.nextRenewAt) {
		l.e.announce()
		l.startRenew(now, l.renewable())
	}
	if l.shutdown || l.checking || l.nextCheckAt.IsZero() || now.Before(l.nextCheckAt) {
		return
	}
	l.started = true
	// Sweeps read every followed lock once per check interval; without a
	// subscription to the store's notifications, once per heartbeat, since
	// nothing would tell of a release. Not at every check: checks come when
	// leases fall due, and a sweep then reads one probe per holder, as any
	// check does (asking for all of a dead holder's locks would take them
	// all, beyond this instance's share).
	every := l.cfg.CheckMasterInterval
	if !l.e.pushing.Load() {
		every = l.cfg.HeartbeatInterval
	}
	if l.sweepAt.Sub(now) > every {
		l.sweepAt = now.Add(every) // the notifications stopped meanwhile
	}
	sweep := !now.Before(l.sweepAt)
	if sweep {
		l.sweepAt = now.Add(every)
	}
	followed := l.followed(now)
	locks, leftUntil := l.checkList(now, followed, sweep)
	if !sweep && len(locks) == len(followed) {
		// checkList draws each lock it asks for from followed, once: this
		// check reads every followed lock, as the sweep would (it would
		// leave out nothing more). It stands for the sweep, which would
		// otherwise read the same locks again a moment later, a round
		// trip per check interval on an idle cluster.
		l.sweepAt = now.Add(every)
	}
	peek := l.pushedLeftOut(locks)
	if len(locks) == 0 && len(peek) == 0 {
		// StartMaster, a release or the end of a holdoff schedules the next.
		l.nextCheckAt = time.Time{}
		for _, until := range l.holdoff {
			l.checkSoon(until)
		}
		if !leftUntil.IsZero() {
			l.checkSoon(leftUntil)
		}
		return
	}
	l.checking = true
	l.nextCheckAt = time.Time{}
	l.leftUntil = leftUntil
	// A check is useful only if it answers within the trust window: a
	// lease acquired later is not trusted (becomeMaster releases it). The
	// check interval plays no part: a short interval must not time out
	// every check of a slow store.
	timeout := l.cfg.TrustWindow()
	l.e.announce()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		began := l.now()
		var peeked []store.LockState
		if len(peek) > 0 {
			// Locks the store pushed a change of that this check would
			// not take: read first (a round trip only after such a push),
			// and take in this check those handed to this instance.
			if ps, err := l.e.st.Locks(ctx, peek...); err == nil {
				for _, s := range ps {
					if s.ReservedFor == l.e.holder.ID && s.ReservedTTL > 0 && !s.Held() && !s.Disabled {
						locks = append(locks, s.Lock)
					} else {
						peeked = append(peeked, s)
					}
				}
			}
		}
		if trace.Enabled() {
			for _, lk := range locks {
				trace.Mark("acquire.sent", lk)
			}
		}
		states, err := l.e.st.Acquire(ctx, l.e.holder, locks, l.cfg.Tolerance)
		if err == nil {
			states = append(states, peeked...)
		}
		if trace.Enabled() {
			for _, s := range states {
				if s.Acquired {
					trace.Mark("acquire.done", s.Lock)
				}
			}
			// Every check, whatever its result: the chaos harness's runner
			// mode learns from it that a check still in flight at a kill
			// began after this moment.
			trace.Mark("check.done", "")
		}
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
	l.renewAgain = false
	go func() {
		// A timeout, not a deadline: deadline is on the executor's clock,
		// which counts host suspend; context deadlines run on the
		// monotonic clock.
		ctx, cancel := context.WithTimeout(context.Background(), deadline.Sub(now))
		defer cancel()
		began := l.now()
		markAll("renew.sent", refs)
		res, err := l.e.st.Renew(ctx, l.e.holder.ID, refs, l.cfg.Tolerance)
		if err != nil {
			markAll("renew.failed", refs)
		} else {
			markAll("renew.done", refs)
		}
		l.renewDone <- renewResult{began: began, results: res, err: err}
	}()
}

func (l *loop) startRelease() {
	refs := make([]store.LeaseRef, 0, len(l.toRelease))
	var given []store.LeaseRef // to transfer
	var until time.Time        // the latest lease expiry among them
	for lock, p := range l.toRelease {
		if p.expiry.After(until) {
			until = p.expiry
		}
		r := store.LeaseRef{Lock: lock, Token: p.token, Successor: p.successor, Reserve: p.reserve}
		if p.transfer {
			given = append(given, r)
		} else {
			refs = append(refs, r)
		}
	}
	l.releasing = true
	// A release that does not commit leaves the lock without a master
	// until its lease expires: until then it is worth waiting for (on a
	// starved host or store a release can take longer than a heartbeat;
	// TestSlowReleaseStillHandsOver), never past a shutdown's bound.
	now := l.now()
	floor := min(l.cfg.HeartbeatInterval, l.cfg.SafetyMargin)
	timeout := max(floor, until.Sub(now))
	if l.shutdown {
		timeout = max(floor, min(timeout, l.shutdownBy.Sub(now)))
	}
	tr, _ := l.e.st.(store.Transfers)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		if len(given) > 0 {
			markAll("release.sent", given)
			err = tr.Transfer(ctx, l.e.holder.ID, given, l.cfg.Tolerance)
			markAll("release.done", given)
		}
		if len(refs) > 0 {
			markAll("release.sent", refs)
			err = errors.Join(err, l.e.st.Release(ctx, l.e.holder.ID, refs))
			markAll("release.done", refs)
		}
		l.releaseDone <- releaseResult{refs: append(refs, given...), err: err}
	}()
}

// startAdopt reads the leases the store pushed as transferred to this
// instance. The read is what makes them trustworthy: it began after the
// transfer committed, and the store measured the TTL it returns at its
// moment, so the lease cannot end before the read's start plus that TTL
// (the rule of every acquisition). No job starts on the push alone.
func (l *loop) startAdopt() {
	locks := make([]string, 0, len(l.toAdopt))
	for lock := range l.toAdopt {
		locks = append(locks, lock)
	}
	l.adopting = true
	timeout := l.cfg.TrustWindow()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		began := l.now()
		for _, lk := range locks {
			trace.Mark("adopt.sent", lk)
		}
		states, err := l.e.st.Locks(ctx, locks...)
		for _, lk := range locks {
			trace.Mark("adopt.done", lk)
		}
		l.adoptDone <- checkResult{began: began, states: states, err: err}
	}()
}

// onAdopt starts the jobs of the transferred leases the read confirmed.
func (l *loop) onAdopt(r checkResult) {
	if r.err != nil {
		// A check reads them too, and adopts what it finds (onCheck).
		l.failed("reading leases handed to this instance failed; checking instead", r.err)
		clear(l.toAdopt)
		l.checkSoon(l.now())
		return
	}
	var late []string
	for _, s := range r.states {
		token, ok := l.toAdopt[s.Lock]
		if !ok {
			continue
		}
		delete(l.toAdopt, s.Lock)
		if s.Holder != l.e.holder.ID || s.Token != token || s.TTL <= 0 {
			continue // gone since (expired, or released: fenced anyway)
		}
		if !l.adopt(s, r.began) {
			late = append(late, s.Lock)
		}
	}
	clear(l.toAdopt) // names the read did not return: nothing to adopt
	l.warnLate(late, r.began)
}

// adopt starts the job of s, a lease of this instance's that the loop
// does not run, seen by a read that began at began: a lease a peer
// transferred to it. A lease whose token this loop ran already (a
// release that failed: the job ran and stopped) is never adopted, nor one
// it is about to release; those, and leases it cannot run now, are
// released so that a fresh token is issued.
//
// It returns false when the read answered after the trust window the
// lease would have had (the lease is let go), true otherwise.
func (l *loop) adopt(s store.LockState, began time.Time) bool {
	if m := l.masters[s.Lock]; m != nil {
		l.superseded(m, s.Token) // adopted or acquired already, or newer
		return true
	}
	// A lease whose job ran, or that this loop let go, is never adopted: a
	// read that began before the release committed still shows it, and
	// adopting it trusted a lease already ended (a chaos run found a job
	// started on a lease its own instance had released as acquired too
	// late, then a second job of the lock on the next acquisition).
	// (Every lease queued for release is settled.)
	if s.Token <= l.e.settledToken(s.Lock) || l.shutdown || !l.started || s.Revoked || s.Disabled || l.jobFor(s.Lock) == nil {
		l.letGo(s.Lock, s.Token)
		return true
	}
	delete(l.seen, s.Lock)
	return l.becomeMaster(s, began)
}

// warnLate logs the leases a call that began at began acquired or read
// too late to trust, and that the loop let go. One line per call, not per
// lock: a call of thousands of locks that answers late on an overloaded
// host would log thousands.
func (l *loop) warnLate(late []string, began time.Time) {
	if len(late) == 0 {
		return
	}
	l.log.Warn("acquired or found leases too late to trust them; releasing them: the store answered after the trust window closed (an overloaded store or host; a longer masterJobTolerance, or fewer locks per instance, gives calls more time)",
		"leases", len(late), "locks", sample(late, 5), "took", l.now().Sub(began).Round(time.Millisecond).String(),
		"trust_window", (l.cfg.Tolerance - l.cfg.SafetyMargin).String())
}

// letGo queues the release of a lease of this instance's that no job runs
// with, and settles its token: no later read of the lease, even one that
// began before the release committed, makes the loop adopt it.
func (l *loop) letGo(lock string, token int64) {
	l.queueRelease(lock, pendingRelease{token: token})
	l.e.settle(lock, token)
}

// queueRelease queues rel, a release of lock. The same lease queued
// already keeps its entry (its successor, its transition). Another one it
// replaces will not be released by this loop: its transition, if any, is
// reported now.
func (l *loop) queueRelease(lock string, rel pendingRelease) {
	if old, ok := l.toRelease[lock]; ok {
		if old.token == rel.token {
			return
		}
		if old.released != nil {
			l.e.obs.Transition(*old.released)
		}
	}
	l.toRelease[lock] = rel
}

// superseded handles a lease of this instance's with token, seen for a
// lock whose mastership m it still has (its job running or stopping). The
// same lease, or an older one a read began before, changes nothing. A
// newer one means the store no longer holds m's lease: m is lost, and its
// job stops at once. The newer lease is neither started nor released: a
// second job of the lock must not start beside the one stopping, and a
// release would let another instance's start there. A check adopts it once
// the job has stopped (the check begins after that), or it expires.
func (l *loop) superseded(m *mastership, token int64) {
	if token <= m.lease.Token {
		return
	}
	l.log.Warn("the store holds a newer lease of this instance's for a lock whose job still runs: stopping the job",
		"lock", m.lease.Lock, "token", m.lease.Token, "newer_token", token)
	l.markLost(m)
	l.stop(m, ErrLeaseLost, Lost)
}

// failed logs a failed store call: at warning level when its message is
// new, at debug level while the same failure repeats, so that an outage
// writes one warning, not one per attempt.
func (l *loop) failed(msg string, err error, attrs ...any) {
	attrs = append(attrs, "err", err)
	if s := err.Error(); s != l.lastErr {
		l.lastErr = s
		l.log.Warn(msg, attrs...)
		return
	}
	l.log.Debug(msg, attrs...)
}

// recovered logs that the store answers again after failures.
func (l *loop) recovered(what string, failures int) {
	if failures > 0 {
		l.log.Info("store reachable again", "call", what, "after_failures", failures)
	}
	l.lastErr = ""
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
		l.failed("check failed; retrying", r.err, "retry_in", wait.Round(time.Millisecond).String(), "attempt", l.checkFails)
		l.nextCheckAt = now.Add(wait)
		return
	}
	l.recovered("check", l.checkFails)
	l.checkFails = 0
	sleep := l.cfg.CheckMasterInterval
	renewed := map[string]time.Time{} // holder: the earliest expiry seen of its leases
	var late []string                 // acquired, but answered after the trust window
	for _, s := range r.states {
		switch {
		case s.Acquired:
			delete(l.seen, s.Lock)
			if m := l.masters[s.Lock]; m != nil {
				// Adopted from its push while this check ran (the same
				// token), or newer.
				l.superseded(m, s.Token)
				continue
			}
			if l.shutdown || l.jobFor(s.Lock) == nil {
				l.letGo(s.Lock, s.Token)
				continue
			}
			if !l.becomeMaster(s, r.began) {
				late = append(late, s.Lock)
			}
		case s.Holder == l.e.holder.ID && s.TTL > 0:
			// A lease the loop does not run: one a peer transferred to
			// this instance (its push lost, or not yet read), an
			// acquisition whose answer was lost, or a release that failed.
			// adopt starts the first two, counting from this check's
			// start as for an acquisition, and releases the last (its job
			// ran already) so that a fresh token is issued.
			if !l.adopt(s, r.began) {
				late = append(late, s.Lock)
			}
		default:
			l.noteMaster(s)
			l.see(s, r.began, renewed)
			if s.Held() && !s.Disabled {
				// Wake when the current lease expires, not a full interval later.
				sleep = min(sleep, max(s.TTL, time.Millisecond))
			}
			if s.ReservedFor != "" && s.ReservedFor != l.e.holder.ID && s.ReservedTTL > 0 {
				// Reserved for a successor: wake when that lapses.
				sleep = min(sleep, max(s.ReservedTTL, time.Millisecond))
			}
		}
	}
	l.extendHolders(renewed, r.began)
	for lock, token := range l.toAdopt {
		if m := l.masters[lock]; m != nil && m.lease.Token == token {
			delete(l.toAdopt, lock) // this check's own acquisition
		}
	}
	l.warnLate(late, r.began)
	l.nextCheckAt = now.Add(sleep)
	if !l.sweepAt.IsZero() {
		l.checkSoon(l.sweepAt)
	}
	for _, until := range l.holdoff {
		l.checkSoon(until)
	}
	if !l.leftUntil.IsZero() {
		l.checkSoon(l.leftUntil)
		l.leftUntil = time.Time{}
	}
	if l.recheck {
		l.recheck = false
		l.checkSoon(now)
	}
}

// noteMaster logs the master of a followed lock when it changed since the
// last check: who runs the job while this instance stands by.
func (l *loop) noteMaster(s store.LockState) {
	l.e.setLeader(leaderOf(s, l.e.holder.ID, l.infos))
	cur := knownMaster{}
	if s.Held() {
		cur = knownMaster{holder: s.Holder, token: s.Token}
		l.holders[s.Lock] = s.Holder
	}
	prev, seen := l.known[s.Lock]
	if seen && prev == cur {
		return
	}
	l.known[s.Lock] = cur
	switch {
	case s.Disabled:
		l.log.Info("standing by: lock disabled", "lock", s.Lock, "reason", s.Reason, "by", s.ChangedBy)
	case cur.holder == "":
		l.log.Info("standing by: no master", "lock", s.Lock)
	default:
		l.log.Info("standing by: another instance is master", "lock", s.Lock,
			slog.Group("master", holderAttrs(s.Holder, l.infos, s.HolderInfo, s.Token)...),
			"ttl", s.TTL.Round(time.Millisecond).String())
	}
}

// holderAttrs describes a lease holder for the log: its id and token, and
// the host and pid of its description.
func holderAttrs(id string, infos infoCache, info string, token int64) []any {
	attrs := []any{"instance", id, "token", token}
	if d, ok := infos.parse(info); ok {
		if d.Host != "" {
			attrs = append(attrs, "host", d.Host)
		}
		if d.PID != 0 {
			attrs = append(attrs, "pid", d.PID)
		}
	}
	return attrs
}

func (l *loop) jobFor(lock string) Job {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	if reg := l.e.jobs[lock]; reg != nil && reg.cfg == l.cfg {
		return reg.job
	}
	return nil
}

// renewDue is when a lease trusted from began for ttl needs its next
// renewal: at the same point of its trust window as a full lease's, a
// heartbeat after began. A store may report less than the tolerance (a
// lease given by a transfer and read a little later; etcd reports
// another's lease in whole seconds, cut down): a renewal a heartbeat
// away could then come after the window closed, and the job would stop
// at once.
func (l *loop) renewDue(began time.Time, ttl time.Duration) time.Time {
	window, full := max(ttl-l.cfg.SafetyMargin, 0), l.cfg.Tolerance-l.cfg.SafetyMargin
	if window >= full {
		return began.Add(l.cfg.HeartbeatInterval)
	}
	return began.Add(time.Duration(float64(l.cfg.HeartbeatInterval) * float64(window) / float64(full)))
}

// becomeMaster starts the job of an acquired lease. The acquisition has
// committed: the store returned it. It returns false, and queues the
// lease's release, when the answer came after the trust window closed.
// The lock has no mastership in the loop: its callers see to it
// (superseded), so that no lock ever has two.
func (l *loop) becomeMaster(s store.LockState, began time.Time) bool {
	lease := Lease{Lock: s.Lock, Token: s.Token, Instance: l.e.holder.ID}
	ttl := min(s.TTL, l.cfg.Tolerance)
	m := &mastership{
		lease:    lease,
		deadline: began.Add(ttl - l.cfg.SafetyMargin),
		expiry:   began.Add(ttl),
		// The renewal is due a heartbeat after the acquisition began, as
		// for a renewal: an acquisition that answered late (a slow store)
		// must not wait for the shared schedule, which could come after
		// its trust window closed.
		renewBy: l.renewDue(began, ttl),
	}
	m.clock = newLeaseClock(l.now, m.expiry)
	if !l.now().Before(m.deadline) {
		// The acquisition took so long that the trust window is already
		// over: do not start a job that would have to stop at once.
		l.letGo(s.Lock, s.Token)
		return false
	}
	delete(l.known, s.Lock)
	l.masters[s.Lock] = m
	l.live++
	if l.firstDeadline.IsZero() || m.deadline.Before(l.firstDeadline) {
		l.firstDeadline = m.deadline
	}
	if !l.renewing && (l.nextRenewAt.IsZero() || m.renewBy.Before(l.nextRenewAt)) {
		// (A renewal in flight schedules the next from every mastership's
		// renewBy when it returns.)
		l.nextRenewAt = m.renewBy
	}
	l.e.mu.Lock()
	l.e.masters[s.Lock] = lease
	l.e.deadlines[s.Lock] = m.deadline
	l.e.settled[s.Lock] = max(l.e.settled[s.Lock], s.Token)
	job := l.e.jobs[s.Lock].job
	l.e.mu.Unlock()

	ctx := context.WithValue(l.jobCtx, leaseClockKey{}, m.clock)
	ctx, m.cancel = context.WithCancelCause(ctx)
	info, _ := l.infos.parse(l.e.holder.Info)
	l.e.setLeader(Leader{Lock: s.Lock, Instance: lease.Instance, Info: info, Token: lease.Token, Self: true, TTL: s.TTL})
	tr := Transition{Lock: lease.Lock, Kind: Acquired, Token: lease.Token, Instance: lease.Instance}
	if s.PrevExpired {
		if s.PrevHolder != l.e.holder.ID {
			l.e.suspect(s.PrevHolder, "took over its expired lease of "+s.Lock)
		}
		tr.Takeover, tr.PrevHolder, tr.PrevToken = true, s.PrevHolder, s.PrevToken
		l.log.Info("became master: took over an expired lease", "lock", lease.Lock, "token", lease.Token,
			slog.Group("previous", "instance", s.PrevHolder, "token", s.PrevToken))
	} else {
		l.log.Info("became master", "lock", lease.Lock, "token", lease.Token)
	}
	l.e.obs.Transition(tr)
	trace.Mark("job.start", lease.Lock)
	go func() {
		err := runJob(ctx, job, lease)
		l.jobDone <- jobExit{lock: lease.Lock, token: lease.Token, err: err}
	}()
	return true
}

// sample returns the first n of names, for a log line about many locks.
func sample(names []string, n int) []string {
	if len(names) <= n {
		return names
	}
	return names[:n:n]
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
					l.markLost(m)
					l.stop(m, ErrTrustWindowPassed, Demoted)
				}
			}
			l.renewFails = 0
			l.renewAgain = false
			return
		}
		l.nextRenewAt = now.Add(l.retryWait(now))
		l.renewAgain = false
		l.failed("heartbeat failed; retrying", r.err, "retry_in", l.nextRenewAt.Sub(now).Round(time.Millisecond).String(), "attempt", l.renewFails)
		return
	}
	l.recovered("heartbeat", l.renewFails)
	l.renewFails = 0
	for _, res := range r.results {
		m := l.masters[res.Lock]
		if m == nil || m.lease.Token != res.Token || m.lost {
			continue
		}
		if !res.Renewed {
			l.markLost(m)
			l.stop(m, ErrLeaseLost, Lost)
			continue
		}
		m.renewBy = r.began.Add(l.cfg.HeartbeatInterval)
		// A renewal counts from when it began, and only if the trust
		// window had not closed before it returned.
		if now.Before(m.deadline) {
			ttl := min(res.TTL, l.cfg.Tolerance)
			m.renewBy = l.renewDue(r.began, ttl)
			m.deadline = r.began.Add(ttl - l.cfg.SafetyMargin)
			m.expiry = r.began.Add(ttl)
			m.clock.set(m.expiry)
			l.e.mu.Lock()
			l.e.deadlines[res.Lock] = m.deadline
			l.e.mu.Unlock()
			l.e.obs.LeaseTTL(res.Lock, res.TTL)
		}
		switch {
		case res.Revoked || res.Disabled:
			l.stop(m, ErrDisabled, Released)
		case res.HandoffRequested:
			l.handOff(m, res.HandoffTo, false)
		}
	}
	// The next renewal is due when the first lease needs it: the ones this
	// call renewed, a heartbeat after it began; masterships that started
	// while it was in flight, a heartbeat after their acquisition began.
	// The deadlines moved: the bound becomes exact again.
	l.nextRenewAt, l.firstDeadline = time.Time{}, time.Time{}
	for _, m := range l.masters {
		if m.lost {
			continue
		}
		if l.nextRenewAt.IsZero() || m.renewBy.Before(l.nextRenewAt) {
			l.nextRenewAt = m.renewBy
		}
		if l.firstDeadline.IsZero() || m.deadline.Before(l.firstDeadline) {
			l.firstDeadline = m.deadline
		}
	}
	if l.renewAgain {
		l.renewAgain = false
		l.nextRenewAt = now
	}
}

// retryWait returns the jittered wait before retrying a failed renewal: the
// remaining retries are spread over what is left of the earliest trust
// window, and jittered so that instances that failed together do not
// retry in lockstep.
func (l *loop) retryWait(now time.Time) time.Duration {
	left := time.Duration(l.cfg.MaxHeartbeatRetryCount - l.renewFails + 1) // retries left, this one included
	wait := l.cfg.HeartbeatInterval / time.Duration(l.cfg.MaxHeartbeatRetryCount+1)
	if l.live > 0 {
		// firstDeadline is at or before the earliest trust window's end:
		// at worst the retries come a little sooner.
		wait = min(wait, l.firstDeadline.Sub(now)/(left+1))
	}
	wait = max(wait, minRetryWait)
	return wait/2 + rand.N(wait/2+1)
}

// minRetryWait is the shortest wait between renewal attempts.
const minRetryWait = 2 * time.Millisecond

func (l *loop) onJobExit(x jobExit) {
	trace.Mark("job.stopped", x.lock)
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
	} else {
		attrs := []any{"lock", x.lock, "token", x.token, "reason", m.stopping}
		if loss := m.clock.lossCause(); loss != nil && loss != m.stopping {
			attrs = append(attrs, "lost", loss)
		}
		if x.err != nil && !errors.Is(x.err, context.Canceled) && !errors.Is(x.err, m.stopping) {
			attrs = append(attrs, "err", x.err)
		}
		l.log.Info("job stopped", attrs...)
	}
	delete(l.masters, x.lock)
	if !m.lost {
		l.live--
	}
	l.e.mu.Lock()
	delete(l.e.masters, x.lock)
	delete(l.e.deadlines, x.lock)
	l.e.mu.Unlock()
	if len(l.masters) == 0 {
		// Nothing left to renew: the next mastership starts afresh.
		l.renewFails = 0
		l.nextRenewAt = time.Time{}
	}
	// Stop, then release: the job has returned, so the next master cannot
	// start beside it. Releasing a lost lease is fenced and harmless.
	rel := pendingRelease{token: x.token}
	if !m.lost {
		rel.expiry = m.expiry
	}
	if m.successor != "" && !m.lost && (!m.listSuccessor || l.e.livePeer(m.successor)) {
		rel.successor, rel.reserve = m.successor, handoffReserve(l.cfg)
		// Given in the releasing commit to a successor known alive (a
		// dead one would hold it for a whole lease; a reservation lapses
		// sooner), on stores that can; not a balancing move. A lock
		// reserved for the receiver is taken by the receiver's own check,
		// in the same count of its share as the free locks it takes; a
		// lock given lands outside that count, beside a check that may be
		// taking free locks at that moment, and the receivers overshot
		// (TestBalanceMovesEachLockOnceWhenInstancesStartTogether: over
		// share + slack after 6 check intervals in 7 of 30 runs under
		// -race, converging later). A move's speed matters little.
		_, can := l.e.st.(store.Transfers)
		rel.transfer = can && !m.rebalance && l.e.livePeer(m.successor)
	}
	if errors.Is(m.stopping, ErrHandoff) && !m.lost {
		// Do not take the lock back at once: the successor (or, after a
		// hand-off to anyone, another instance) gets it.
		if _, _, peers, _ := l.e.balanceNow().share(l.e.suspected); peers != 1 {
			l.holdoff[x.lock] = l.now().Add(l.cfg.CheckMasterInterval)
		}
	}
	if !m.lost {
		rel.released = &Transition{Lock: x.lock, Kind: Released, Token: x.token, Instance: l.e.holder.ID,
			Reason: m.stopping, Successor: rel.successor}
	}
	l.queueRelease(x.lock, rel)
	l.e.setLeader(Leader{Lock: x.lock}) // unknown until the next check
}

func (l *loop) onRelease(r releaseResult) {
	if r.err != nil {
		// The lease expires by itself; no retry storm against a sick store.
		l.failed("release failed; the lease will expire instead", r.err)
	}
	l.noteHandOff(r)
	for _, ref := range r.refs {
		if p, ok := l.toRelease[ref.Lock]; ok && p.token == ref.Token {
			delete(l.toRelease, ref.Lock)
			if p.released != nil {
				l.e.obs.Transition(*p.released)
			}
		}
	}
	// The locks are followed again: learn at once who holds them now and
	// when their leases expire, instead of waiting a full check interval.
	if !l.shutdown {
		l.checkSoon(l.now())
	}
}

// noteHandOff records, for Run's settleAfterHandOff, when a shutdown's
// release to a named successor committed.
func (l *loop) noteHandOff(r releaseResult) {
	if !l.shutdown || r.err != nil || !slices.ContainsFunc(r.refs, func(ref store.LeaseRef) bool { return ref.Successor != "" }) {
		return
	}
	now := l.now()
	l.e.mu.Lock()
	if run := l.e.run; run != nil && now.After(run.handedOver) {
		run.handedOver = now
	}
	l.e.mu.Unlock()
}

// handOff stops m's job to hand the lease over to successor ("" for any
// other instance): an operator's request seen in a renewal, or balancing
// (fromList: a peer of this instance's member list, checked again at the
// release). The lease is released, reserved for the successor, once the
// job stopped.
func (l *loop) handOff(m *mastership, successor string, fromList bool) {
	if m.stopping != nil || m.lost || successor == l.e.holder.ID {
		return
	}
	m.successor, m.listSuccessor = successor, fromList
	l.stop(m, ErrHandoff, Released)
}

// see records what a check saw of a followed lock, and in renewed the
// earliest expiry it saw of each holder's leases.
func (l *loop) see(s store.LockState, began time.Time, renewed map[string]time.Time) {
	switch {
	case s.Disabled:
		delete(l.seen, s.Lock)
	case s.ReservedFor != "" && s.ReservedTTL > 0:
		if s.ReservedFor == l.e.holder.ID {
			// Handed to this instance: take it now, whatever the share.
			l.seen[s.Lock] = seenLock{freeSince: began, mine: true}
			l.recheck = true
		} else {
			l.seen[s.Lock] = seenLock{freeSince: began.Add(s.ReservedTTL)}
		}
	case s.Held():
		until := began.Add(s.TTL)
		l.seen[s.Lock] = seenLock{freeSince: until, holder: s.Holder}
		// Its holder renews all its leases together: those of its leases
		// this check did not ask for (balancing probes one per holder)
		// live as long. Noted here, applied once per check
		// (extendHolders): a pass over every lock for each answer made a
		// check of thousands of locks quadratic, and held the loop, which
		// enforces the trust windows, for seconds.
		if u, ok := renewed[s.Holder]; !ok || until.Before(u) {
			renewed[s.Holder] = until
		}
	default:
		prev, ok := l.seen[s.Lock]
		if ok && prev.holder != "" && prev.holder != l.e.holder.ID && !prev.freeSince.After(began) && !l.e.suspected(prev.holder) {
			// Its holder's lease ran out (it is free, and its expiry as
			// last seen has passed: not a release, which frees a lock
			// early): the holder is probably dead. Leave it out of the
			// shares now, not when its member record expires, so that its
			// locks spread over the others, and check again with the new
			// shares.
			l.e.suspect(prev.holder, "its lease of "+s.Lock+" ran out")
			l.recheck = true
		}
		if !ok || prev.freeSince.IsZero() || prev.freeSince.After(began) {
			prev = seenLock{freeSince: began}
		}
		prev.mine, prev.holder = false, ""
		l.seen[s.Lock] = prev
	}
}

// extendHolders moves forward, to the expiry a check saw of a holder's
// leases (renewed), the locks of that holder that fall due before a
// heartbeat after the check's start (began) and that the check did not ask
// for: a holder renews all its leases together, once per heartbeat. Not
// only those due at began: a store that renews a holder's leases in
// several calls of its own (Redis, so many keys a script) gives them
// expiries milliseconds apart, and each would be probed in turn. A lock
// its holder lost meanwhile is still read by the next sweep, within a
// check interval. One pass over the seen locks per check.
func (l *loop) extendHolders(renewed map[string]time.Time, began time.Time) {
	if len(renewed) == 0 {
		return
	}
	horizon := began.Add(l.cfg.HeartbeatInterval)
	for lk, o := range l.seen {
		if until, ok := renewed[o.holder]; ok && o.freeSince.Before(horizon) && o.freeSince.Before(until) {
			o.freeSince = until
			l.seen[lk] = o
		}
	}
}

// checkList returns the locks a check asks for. Without balancing, every
// followed lock. With it:
//   - locks held by others until a time the last answer told, or reserved
//     for another until then, are asked for only by a sweep (once per
//     check interval, after notifications may have been missed, and once
//     per heartbeat while the store's notifications are not subscribed): until
//     then nothing can free them but a release or a hand-off, which the
//     store pushes (onNotify makes a pushed lock free in seen). At 10,000
//     locks, reading them all at every check, and a check on every push,
//     kept the store busy enough to make renewals late;
//   - locks reserved for this instance, and disabled ones, are asked for:
//     the answer tells who holds them and until when;
//   - locks whose holder's lease should have run out by now (the last
//     answer's TTL has passed) are asked for one per holder, as a probe:
//     a holder renews all its leases together, so one answer tells
//     whether it lives (see refreshes the others) or is gone (see
//     suspects it, and a new check follows with the new shares);
//   - free locks, up to this instance's share; those beyond it are left to
//     others for a grace of half a check interval, then taken up to the
//     share plus the slack, and after a second grace by anyone, so that no
//     lock waits long for a master.
//
// It also returns when the first of the locks it left out is due (zero if
// none was). Balancing adds no round trip: what is left out is not read.
func (l *loop) checkList(now time.Time, locks []string, sweep bool) (take []string, due time.Time) {
	capacity := l.e.capacity()
	if capacity < 0 || len(locks) == 0 {
		return locks, time.Time{}
	}
	share, slack, _, _ := l.e.balanceNow().share(l.e.suspected)
	grace := l.cfg.CheckMasterInterval / 2
	out := locks[:0:0]
	var free, starving []string
	probed := map[string]bool{}
	suspects := map[string]bool{} // asked once per holder, not per lock
	suspected := func(holder string) bool {
		v, ok := suspects[holder]
		if !ok {
			v = l.e.suspected(holder)
			suspects[holder] = v
		}
		return v
	}
	leave := func(at time.Time) {
		if due.IsZero() || at.Before(due) {
			due = at
		}
	}
	for _, lk := range locks {
		s, ok := l.seen[lk]
		switch {
		case !ok:
			free = append(free, lk) // never seen: free as far as we know
		case s.freeSince.After(now) && !s.mine && !sweep:
			leave(s.freeSince)
		case s.mine, s.freeSince.IsZero(), s.freeSince.After(now), !now.Before(s.freeSince.Add(2 * grace)):
			out = append(out, lk)
		case s.holder != "" && !suspected(s.holder):
			if !probed[s.holder] {
				probed[s.holder] = true
				out = append(out, lk)
			}
		case !now.Before(s.freeSince.Add(grace)):
			starving = append(starving, lk)
		default:
			free = append(free, lk)
		}
	}
	me := l.e.holder.ID
	// Free locks beyond this instance's share wait for the grace.
	if len(free) > capacity {
		sortByRank(me, free)
		for _, lk := range free[capacity:] {
			since := now
			if s, ok := l.seen[lk]; ok {
				since = s.freeSince
			} else {
				l.seen[lk] = seenLock{freeSince: now}
			}
			leave(since.Add(grace))
		}
		free = free[:capacity]
	}
	out = append(out, free...)
	// Locks nobody took within the grace (the peers' preferences
	// overlapped, or a peer counted in the shares is dead) are taken up to
	// the share plus the slack; after a second grace, by anyone.
	if len(starving) > 0 {
		part := max(0, share+slack-l.e.heldCount()-len(free))
		if len(starving) > part {
			sortByRank(me, starving)
			for _, lk := range starving[part:] {
				leave(l.seen[lk].freeSince.Add(2 * grace))
			}
			starving = starving[:part]
		}
		out = append(out, starving...)
	}
	return out, due
}

// onInbox handles what the notification hub and StartMaster left in the
// inbox.
func (l *loop) onInbox() {
	changes, resync, added, handoffs := l.inbox.take()
	if l.shutdown {
		// A lease a peer transferred to this instance as it shuts down:
		// release it rather than leave the lock without a master until
		// it expires.
		for _, c := range changes {
			if holder, token, ok := c.Acquisition(); ok && holder == l.e.holder.ID && l.masters[c.Lock] == nil && token > l.e.settledToken(c.Lock) {
				l.letGo(c.Lock, token)
			}
		}
		return
	}
	for lock, to := range handoffs {
		if m := l.masters[lock]; m != nil && m.stopping == nil {
			l.handOff(m, to, true)
			m.rebalance = m.stopping != nil
		}
	}
	if added {
		l.checkSoon(l.startAt)
	}
	if resync && l.started {
		// Notifications may have been missed (while unsubscribed, or the
		// store says it lost some): read every lock again, and renew now,
		// since what was lost may be a disable or a hand-off request of a
		// lock this instance holds.
		l.sweepAt = time.Time{}
		l.checkSoon(l.now())
		if l.holdsRenewable() {
			l.renewSoon(l.now())
		}
	}
	now := l.now() // one reading for a batch of thousands of changes
	l.line = nil   // and one lineup
	for _, c := range changes {
		l.onNotify(c, now)
	}
}

// takenCheckDelay is how long after the push of another instance's
// acquisition a follower checks the lock (onNotify).
const takenCheckDelay = 100 * time.Millisecond

// lineup returns the batch's lineup, making it on first use.
func (l *loop) lineup() lineup {
	if l.line == nil {
		u := l.e.lineUp()
		l.line = &u
	}
	return *l.line
}

// freedHeadStart is how long after the push of a release or an expiry a
// follower that is not first in line waits before it checks (onNotify):
// long enough for the first in line's acquisition to commit first on a
// database server nearby, short beside a failover.
const freedHeadStart = 5 * time.Millisecond

// onNotify acts on a store's push about one lock: a master renews at once
// (to see a revocation or a hand-off request), a follower checks. The
// change's hints spare the calls that would only tell what this instance
// already knows, which all fall in the busiest moment of a hand-off: the
// new master's renewal on the push of its own acquisition, the check of a
// follower that already saw the acquisition (the race's loser, say), and
// the checks of the followers a release was not reserved for.
func (l *loop) onNotify(c store.Change, now time.Time) {
	lock := c.Lock
	holder, token, acquired := c.Acquisition()
	if m := l.masters[lock]; m != nil {
		switch {
		case m.lost:
		case c.Kind == store.ChangeControl && c.Revoked == m.lease.Token && m.stopping == nil:
			// A Disable revoked this lease: stop now, as the renewal
			// that would say so would. Stopping early is always safe.
			l.stop(m, ErrDisabled, Released)
		case !(acquired && holder == l.e.holder.ID && token == m.lease.Token):
			l.renewSoon(now) // see a revocation at once
		}
		return
	}
	if acquired && holder == l.e.holder.ID {
		// A lease of this instance's it does not run: transferred to it
		// by a peer (store.Transfers), or this instance's own
		// acquisition pushed before the check that made it returned
		// (adopt then finds it running). Read it, then start its job.
		if token > l.e.settledToken(lock) {
			l.toAdopt[lock] = token
		}
		return
	}
	if l.jobFor(lock) != nil && l.started {
		if c.Kind == store.ChangeControl && c.Revoked != 0 {
			// A Disable that revoked another instance's lease: there is
			// nothing to take. The holder's release and the Enable are
			// pushed in turn; a check now would only read the lock
			// disabled, a store call per follower while the master
			// stops its job.
			return
		}
		if acquired {
			l.holders[lock] = holder
			// Taken by another instance: handed over to it, or its own
			// check. Unless the last check saw that very lease, a check
			// learns its expiry and the holder's description by reading
			// the lock (pushedLeftOut: it is held, so not asked for), a
			// little later, so that it does not compete with the new
			// master's start.
			if l.known[lock] != (knownMaster{holder: holder, token: token}) {
				l.markPushed(lock)
				l.checkAt(now.Add(min(takenCheckDelay, l.cfg.HeartbeatInterval)), now)
			}
			return
		}
		if c.ReservedFor != "" && c.ReservedFor != l.e.holder.ID {
			// Reserved for another instance, which takes it now: its
			// acquisition is pushed in turn. Should it not come, the
			// reservation lapses (it is as long as ours, unless that
			// instance's configuration differs, which the check then
			// tells) and the lock is checked then.
			l.checkAt(now.Add(handoffReserve(l.cfg)), now)
			return
		}
		l.markPushed(lock)
		// It changed (released, most likely): what the last check saw
		// of its holder no longer holds. Balancing treats it as free
		// from now, so it is taken only within this instance's share.
		if s, ok := l.seen[lock]; ok && !s.mine && s.freeSince.After(now) {
			l.seen[lock] = seenLock{freeSince: now}
		}
		at := now
		last := l.holders[lock]
		if c.Kind == store.ChangeControl {
			// Enabled: the last holder stepped aside for the Disable and
			// is a candidate like any other. Every member counts it
			// alike, it included, so that one acquisition goes out.
			last = ""
		}
		if (c.Kind == store.ChangeControl || l.hinted) && !l.lineup().first(lock, last) {
			// Enabled, released or expired, and another live member is
			// first in line for it: let its acquisition go out alone (a
			// push tells when it lands) and check after a delay,
			// should that member not take it. An Enable waits
			// takenCheckDelay: the member list is as settled as it
			// gets. A release or an expiry is often a failover, while
			// the list still shows a member that left or died a moment
			// ago, who may be named first: a head start bounds what
			// that costs. A lease change counts only from a store that
			// hints every one: without hints, a lease given to this
			// instance looks like a release.
			delay := freedHeadStart
			if c.Kind == store.ChangeControl {
				delay = takenCheckDelay
			}
			at = now.Add(min(delay, l.cfg.HeartbeatInterval))
		}
		l.checkAt(at, now)
	}
}

// beginShutdown stops every job. The cause the jobs see is ErrShutdown,
// wrapping the cause of Run's context when it has one (the CLI's "the
// command exited", say), so that logs tell why.
func (l *loop) beginShutdown(ctx context.Context) {
	l.shutdown = true
	l.shutdownBy = l.now().Add(l.cfg.ShutdownTimeout)
	l.nextCheckAt = time.Time{}
	l.stopCause = ErrShutdown
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) && !errors.Is(c, ErrShutdown) {
		l.stopCause = fmt.Errorf("%w: %w", ErrShutdown, c)
	}
	// A graceful shutdown hands the masterships to the live peers, each to
	// the one with the fewest masterships for its weight, so that they
	// spread evenly instead of going to whoever checks first (with
	// balancing; otherwise to anyone).
	var running []*mastership
	for _, m := range l.masters {
		if m.stopping == nil {
			running = append(running, m)
		}
	}
	succ := l.e.successors(len(running))
	if len(succ) > 0 {
		// Named from the list as last read. The check at the release
		// (livePeer) must see a peer that left or stopped writing since:
		// read the list again now, unless the pushes say nothing changed
		// since that read and every successor has written its record
		// within stale of now (a read would then cost the store a round
		// trip, and the host CPU, in the middle of the hand-off for
		// nothing); and read at once a change pushed from now on.
		l.e.urgentMembers.Store(true)
		if !l.e.memberListCurrent() || l.e.overdueSuccessor(succ) {
			l.e.readMembersNow()
		}
		l.log.Debug("shutdown: handing masterships to peers", "successors", succ)
	}
	for i, m := range running {
		if len(succ) > 0 {
			m.successor, m.listSuccessor = succ[i], true
		}
	}
	for _, m := range l.masters {
		l.stop(m, l.stopCause, Released)
	}
}

// abandon ends Run when jobs did not stop in time. Their leases are not
// released (a job may still run) and expire by themselves; the leases of
// jobs that did stop, even at the last moment, are released. Goroutines of
// store calls end within their own timeouts; job goroutines end when the
// jobs return.
func (l *loop) abandon() error {
	for more := true; more; { // jobs that stopped at the same moment
		select {
		case x := <-l.jobDone:
			l.onJobExit(x)
		default:
			more = false
		}
	}
	for _, m := range l.masters {
		l.log.Error("job did not stop within the shutdown timeout; its lease will expire", "lock", m.lease.Lock, "token", m.lease.Token)
	}
	go func(n int, done <-chan jobExit) {
		for range n {
			<-done
		}
	}(len(l.masters), l.jobDone)
	l.finishReleases()
	return ErrShutdownTimeout
}

// finishReleases waits for the store calls in flight, then releases what
// is still to be released.
func (l *loop) finishReleases() {
	l.drainCalls()
	if len(l.toRelease) > 0 {
		l.startRelease()
		l.drainCalls()
	}
}

// drainCalls waits for in-flight store calls; each is bounded by a timeout.
func (l *loop) drainCalls() {
	for l.checking || l.renewing || l.releasing || l.adopting {
		select {
		case <-l.checkDone:
			l.checking = false
		case <-l.adoptDone:
			l.adopting = false
		case <-l.renewDone:
			l.renewing = false
		case r := <-l.releaseDone:
			l.releasing = false
			l.onRelease(r)
		}
	}
}

// markAll records a trace mark for each lease.
func markAll(event string, refs []store.LeaseRef) {
	if trace.Enabled() {
		for _, r := range refs {
			trace.Mark(event, r.Lock)
		}
	}
}

// backoff is backoff.Delay.
var backoff = backoffpkg.Delay

// sortByRank sorts locks by their rendezvous rank for instance me, the
// highest first. Each rank is hashed once, not at every comparison.
func sortByRank(me string, locks []string) {
	type ranked struct {
		lock string
		rank uint64
	}
	rs := make([]ranked, len(locks))
	for i, lk := range locks {
		rs[i] = ranked{lk, rank(me, lk)}
	}
	slices.SortFunc(rs, func(a, b ranked) int { return cmp.Or(cmp.Compare(b.rank, a.rank), cmp.Compare(a.lock, b.lock)) })
	for i, r := range rs {
		locks[i] = r.lock
	}
}
