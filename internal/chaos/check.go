//go:build linux

package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/masterjob/masterjob"
)

// Mastership is one interval during which an instance ran a lock's job, on
// the shared monotonic clock: from the job's start (after its acquisition
// committed) to its return, or to the moment the driver reaped the
// instance it had SIGKILLed.
type Mastership struct {
	Index  int    `json:"idx"`
	Gen    int    `json:"gen"`
	Lock   string `json:"lock"`
	Token  int64  `json:"token"`
	Start  int64  `json:"start"`
	Stop   int64  `json:"stop"`
	Reason string `json:"reason,omitempty"` // StopReason, or "killed"
	// Open is set when neither a stop nor a kill ended the interval (a job
	// left running by a process that exited on its own): Stop is then the
	// time the process was reaped.
	Open bool `json:"open,omitempty"`
	// Cancelled is when the job was told to stop (its context ended; in
	// runner mode, the child got SIGTERM); 0 if it never was (killed, or
	// its context ended by a kill of the child).
	Cancelled int64 `json:"cancelled,omitempty"`
	// Plan is how long the job takes to stop once told (0: at once), and
	// Policy what may end that early (see stopPolicies); How says what
	// ended it.
	Plan   int64  `json:"plan,omitempty"`
	Policy string `json:"policy,omitempty"`
	How    string `json:"how,omitempty"`
	// Child is set in runner mode: the interval is the life of the
	// runner's child, ended by its stop or by its death (its connection to
	// the driver closing).
	Child bool `json:"child,omitempty"`
}

// told returns when the job was told to stop, or its end if it never was.
func (m Mastership) told() int64 {
	if m.Cancelled > 0 {
		return m.Cancelled
	}
	return m.Stop
}

// describe summarises how the job stopped, for violations.
func (m Mastership) describe() string {
	told := "never told to stop"
	if m.Cancelled > 0 {
		told = "told to stop at " + ts(m.Cancelled)
	}
	how := m.How
	if how == "" {
		how = m.Reason // killed, or left open
	}
	return fmt.Sprintf("%s, stop plan %v (%s), stopped at %s (%s; stop reason then: %s)",
		told, dur(m.Plan), m.Policy, ts(m.Stop), how, m.Reason)
}

// StoreLoss is one store-side loss: the driver ended a lock's lease in the
// store behind its holder's back (LossDelete, LossExpire).
type StoreLoss struct {
	Lock string `json:"lock"`
	Mode string `json:"mode"`
	// Token and Holder are those of the lease ended; Token is 0 when no
	// lease was held.
	Token  int64  `json:"token"`
	Holder string `json:"holder,omitempty"`
	// Called and Returned bracket the statement.
	Called   int64 `json:"called"`
	Returned int64 `json:"returned"`
}

func (l StoreLoss) describe() string {
	if l.Token == 0 {
		return fmt.Sprintf("store-side %s of %s: no lease held", l.Mode, l.Lock)
	}
	return fmt.Sprintf("store-side %s of %s: ended token %d of %s", l.Mode, l.Lock, l.Token, l.Holder)
}

// Renewal is one renewal round trip of an instance, as its executor
// reported it: when it began and ended, and whether the store answered.
type Renewal struct {
	Index int   `json:"idx"`
	Gen   int   `json:"gen"`
	Began int64 `json:"began"`
	Ended int64 `json:"ended"`
	OK    bool  `json:"ok"`
}

// Reservation is a release reserved for a successor.
type Reservation struct {
	Index     int    `json:"idx"`
	Gen       int    `json:"gen"`
	Lock      string `json:"lock"`
	Token     int64  `json:"token"`
	Successor string `json:"successor"`
	At        int64  `json:"at"`
}

// Life is one instance process: its executor id, when its Run returned
// (Bye: after a graceful shutdown, its member record is gone) and when it
// exited (Gone); 0 when it did not.
type Life struct {
	ID    string `json:"id"`
	Index int    `json:"idx"`
	Gen   int    `json:"gen"`
	Hello int64  `json:"hello,omitempty"`
	Bye   int64  `json:"bye,omitempty"`
	Gone  int64  `json:"gone,omitempty"`
	// KilledAt: the process ended by the driver's SIGKILL, sent then (0:
	// it was not killed).
	KilledAt int64 `json:"killedAt,omitempty"`
	// LastCheck is when its last reported check round trip ended (its
	// observer's report; a runner's trace mark): a check still in flight
	// began after it.
	LastCheck int64 `json:"lastCheck,omitempty"`
}

// life calls f with the Life of instance index gen, if there is one.
func (tl *Timeline) life(index, gen int, f func(*Life)) {
	for i := range tl.Lives {
		if tl.Lives[i].Index == index && tl.Lives[i].Gen == gen {
			f(&tl.Lives[i])
		}
	}
}

// Demotion is an instance's report (its observer's transition) that it
// lost a lease: the store refused a renewal (lost), or its trust window
// closed (demoted).
type Demotion struct {
	Index  int    `json:"idx"`
	Gen    int    `json:"gen"`
	Lock   string `json:"lock"`
	Token  int64  `json:"token"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	At     int64  `json:"at"`
}

// Takeover is an acquisition of a lock whose previous lease had expired.
type Takeover struct {
	Lock       string `json:"lock"`
	Token      int64  `json:"token"`
	PrevHolder string `json:"prevHolder"`
	PrevToken  int64  `json:"prevToken"`
	At         int64  `json:"at"`
}

// Window is a period on the monotonic clock affecting one instance slot.
type Window struct {
	Index int    `json:"idx"`
	From  int64  `json:"from"`
	To    int64  `json:"to"`
	Cause string `json:"cause"`
}

func (w Window) contains(t int64) bool { return w.From <= t && t < w.To }

func (w Window) overlaps(from, to int64) bool { return w.From < to && from < w.To }

// ControlWindow is one disable of a lock and the enable that ended it.
type ControlWindow struct {
	Lock string `json:"lock"`
	// DisableCalled and DisableReturned bracket the Disable call.
	DisableCalled, DisableReturned int64
	// Token is the lock's token as Disable saw it: the lease it revoked, if
	// any. A mastership with a greater token was acquired after the disable.
	Token int64 `json:"token"`
	// EnableCalled and EnableReturned bracket the Enable call; zero if the
	// run ended first.
	EnableCalled, EnableReturned int64
}

// Timeline is everything a run observed, on the shared monotonic clock.
type Timeline struct {
	// From and To bound the checked period: from the moment every instance
	// first became ready to the end of the settling period.
	From, To    int64
	Instances   int
	Locks       []string
	Masterships []Mastership
	// Stopped holds the SIGSTOP..SIGCONT windows.
	Stopped []Window
	// Suspended holds the SIGTSTP..SIGCONT windows of runners (runner
	// mode): their commands are stopped with them.
	Suspended []Window
	// Down holds the windows when an instance was not healthy: not running
	// yet, killed and not yet restarted, SIGSTOPped, cut from the store (or
	// in a store outage).
	Down []Window
	// Degraded holds windows when an instance could reach the store but
	// slowly or with errors: added latency, a store restart.
	Degraded []Window
	// Unreachable holds the windows in which an instance's own store calls
	// failed although the driver cut nothing (a store too slow for the
	// calls' deadlines on a loaded host): reported by the instance, from the
	// start of the first failed call to the end of the next successful one.
	// Such an instance is not healthy: it cannot reach the store.
	Unreachable []Window
	// LeftToExpire counts the leases found held after the final shutdown
	// whose holder's store calls were failing as it shut down (its release
	// failed, and the lease expires instead): not a leak.
	LeftToExpire int
	// StoreBlocked holds the SIGSTOP windows of instances that were paused
	// holding SQLite's write lock: every instance was cut from the store.
	StoreBlocked []Window
	Controls     []ControlWindow
	// Losses holds the store-side losses the driver caused.
	Losses []StoreLoss
	// Demotions holds the instances' reports of lost leases.
	Demotions []Demotion
	// Acquisitions holds the instances' reports of acquisitions (the
	// observer's "acquired" transition; in runner mode the runner's
	// "became master" log line), in the Demotion shape (Kind "acquired").
	// One whose job never reported its start (the instance was killed or
	// paused in between) still held the lock in the store for up to a
	// lease: the gap check counts it as a master for that long.
	Acquisitions []Demotion
	// Takeovers holds the acquisitions that took over an expired lease,
	// with that lease's holder and token (both modes). A lease no
	// instance reported was acquired by a check in flight when its holder
	// was killed: the gap check counts it as a master (Unreported).
	Takeovers []Takeover
	// Renewals holds the instances' renewal round trips (executor mode).
	Renewals []Renewal
	// Reservations holds the releases an instance reserved for a named
	// successor (executor mode: the observer's "released" transition, At
	// when the job stopped, where the successor was chosen).
	Reservations []Reservation
	// Lives holds each instance process's executor id (a runner's, read
	// from its log) and when it said goodbye (Run returned) and exited.
	Lives []Life
	// Resumed holds, per instance, the pauses the instance saw itself: From
	// is its last clock reading before the pause, To its first after.
	Resumed []Window
	Writes  []SinkWrite
	// Wills are the last wills that runners' supervisors ran (runner
	// mode), as the wills recorded themselves.
	Wills []WillRun
	// RunnerStops are the moments runners began to stop their commands
	// (runner mode).
	RunnerStops []RunnerStop
	// Problems are violations the driver saw directly: crashed or leaked
	// processes, jobs left running, leases left held after shutdown.
	Problems []Violation
}

// RunnerStop is a runner's decision to stop its command: its job.cancel
// trace mark, sent before the runner signals the command. A command that
// the runner SIGKILLs reports no stop of its own, and its death reaches
// the driver a few milliseconds after it happened.
type RunnerStop struct {
	Index, Gen int
	Lock       string
	T          int64
}

// runnerStopped reports whether m's runner began to stop m's command from
// m's start up to t.
func (tl *Timeline) runnerStopped(m Mastership, t int64) bool {
	for _, r := range tl.RunnerStops {
		if r.Index == m.Index && r.Gen == m.Gen && r.Lock == m.Lock && r.T >= m.Start && r.T <= t {
			return true
		}
	}
	return false
}

// Violation kinds.
const (
	VOverlap         = "overlap"                 // two masterships of a lock at once
	VLateStop        = "late-stop-after-sigcont" // a paused master ran on too long after SIGCONT
	VStaleWrite      = "stale-write-accepted"    // the sink accepted a token lower than one it had accepted
	VTokenOrder      = "token-order"             // tokens did not grow with acquisitions
	VGap             = "no-master-gap"           // no master for too long while one was possible
	VDisabledRunning = "master-running-after-disable"
	VDisabledAcquire = "acquired-while-disabled"
	VCrash           = "crashed-instance"
	VLeak            = "leak" // a process, job or lease outlived the run
	VHarness         = "harness-error"
	// VRace: the race detector reported in a process of the run (an
	// instance, a runner, a supervisor, a last will), when the test binary
	// that runs them is built with -race. A report went to the process's
	// log, or to its command's output, where no check looked.
	VRace = "data-race"
	// VOrphan: a process a runner started (its child or a grandchild)
	// outlived the runner (runner mode).
	VOrphan = "orphan-outlived-runner"
	// VWillLingered: a runner's last will still ran a lease after the
	// runner died (its bound is the lease).
	VWillLingered = "last-will-lingered"
	// VWillMissing: a runner SIGKILLed while its command ran (not told to
	// stop) left no last will within the lease: the lease was left to
	// expire where the will would have released it at once.
	VWillMissing = "last-will-missing"
	// VLossRunning: a job ran on more than a heartbeat (plus slack) after
	// its instance learned that its lease was lost (a renewal refused, the
	// trust window closed), e.g. until the old expiry.
	VLossRunning = "job-ran-on-after-lease-loss"
	// VStoreLossRunning: a job ran on more than a heartbeat (plus slack)
	// after a store-side loss of its lease returned, while its instance
	// could renew.
	VStoreLossRunning = "job-ran-on-after-store-loss"
	// VReservedForDeparted: a release was reserved for a successor that
	// had left well before it (shut down: its member record deleted; or
	// died: its record stale), so every other instance had to wait for the
	// reservation to lapse.
	VReservedForDeparted = "reserved-for-departed"
	// VPausedWriter: a SIGSTOPped instance held SQLite's write lock and so
	// blocked every instance (a violation only with StrictSQLiteLock).
	VPausedWriter = "sqlite-write-lock-held-while-paused"
	// VSuspendedWriter: a runner suspended by SIGTSTP held SQLite's write
	// lock (it waits for its writes to end before it stops itself).
	VSuspendedWriter = "sqlite-write-lock-held-while-suspended"
	// VSuspendedRan: the command of a runner suspended by SIGTSTP ran
	// beside the next master's (wrote after that one started), or outlived
	// the SIGCONT by more than the stop grace.
	VSuspendedRan = "command-ran-while-runner-suspended"
)

// Violation is one broken promise.
type Violation struct {
	Kind   string `json:"kind"`
	Lock   string `json:"lock,omitempty"`
	At     int64  `json:"at,omitempty"`
	Detail string `json:"detail"`
}

// Limits are the bounds the checker applies.
type Limits struct {
	Heartbeat    time.Duration
	Tolerance    time.Duration
	Check        time.Duration
	GapBound     time.Duration
	StopGrace    time.Duration
	DisableSlack time.Duration
	LossSlack    time.Duration
}

// Findings is the checker's result.
type Findings struct {
	Violations []Violation
	// ExcusedOverlaps counts overlaps whose older master was SIGSTOPped.
	ExcusedOverlaps int
	// SuspendedOverlaps counts overlaps whose older master's runner was
	// suspended (SIGTSTP) with its command stopped: the command made no
	// write after the newer master started, and died within the stop
	// grace of SIGCONT.
	SuspendedOverlaps int
	// UnstartedAcquisitions counts the acquisitions whose job never
	// reported its start (Timeline.Acquisitions), counted as masters for a
	// lease by the gap check.
	UnstartedAcquisitions int
	// UnreportedAtDeath counts the leases no instance reported, learnt from
	// their successor's takeover, whose holder was killed: acquired by a
	// check in flight at the SIGKILL. The gap check counts each as a master
	// from its holder's last reported check until its death.
	UnreportedAtDeath int
	// GapsExcusedByFailingCalls counts the no-master gaps over the bound
	// that are not violations only because the instances that could have
	// taken the lock saw their own store calls fail (Timeline.Unreachable).
	GapsExcusedByFailingCalls int
	// ExcusedByLoss counts overlaps whose older master's lease was ended
	// by a store-side loss before the newer one started.
	ExcusedByLoss int
	// NeverRanAfterCont counts SIGSTOPped masters that showed no sign of
	// running (no resume seen, no write) between SIGCONT and their
	// SIGKILL, so that how late they stopped cannot be judged.
	NeverRanAfterCont int
	// MaxStopAfterCont is the longest a SIGSTOPped master's job ran after
	// SIGCONT when a newer master had started meanwhile.
	MaxStopAfterCont time.Duration
	// StopsAfterCont lists, for each excused overlap, how long the paused
	// master's job ran after SIGCONT.
	StopsAfterCont []time.Duration
	// ResumesAfterCont lists, for the same overlaps, how long after
	// SIGCONT the paused process ran again (its own pause detector).
	ResumesAfterCont []time.Duration
	// WritesAfterCont lists, for the same overlaps, when the paused job
	// first wrote after SIGCONT, if it did: when its process ran again.
	WritesAfterCont []time.Duration
	// RejectedLate counts writes the sink rejected because a newer token had
	// written first.
	RejectedLate int
	// LateAccepted counts writes of an older token accepted after a newer
	// mastership had started but before it had written: harmless (the sink
	// saw them in token order), counted for the record.
	LateAccepted int
	// MaxGap is the longest period with no master running, whatever the
	// cause; MaxEligibleGap the longest while the lock was enabled and an
	// instance healthy (the one bounded by GapBound).
	MaxGap, MaxEligibleGap time.Duration
	// MaxDisableStop is the longest a healthy master's job ran after Disable
	// returned before it was told to stop.
	MaxDisableStop time.Duration
	// MaxStoreLossStop is the longest a job ran after a store-side loss of
	// its lease returned, its instance able to renew; MaxLossStop the
	// longest a job ran after its instance reported the loss of its lease.
	MaxStoreLossStop, MaxLossStop time.Duration
	// WillsExpected counts the runners SIGKILLed while their command ran,
	// whose supervisor had to run their last will; WillsFailed the wills
	// that ran and exited non-zero (the store out of reach: the lease then
	// expires). WillStarts lists, for each expected will that ran, how long
	// after the command's death it started.
	WillsExpected, WillsFailed int
	WillStarts                 []time.Duration
	// StoreLossHits counts the store-side losses that ended a lease whose
	// job was running (StoreLossWhileStopping: while it was stopping).
	StoreLossHits, StoreLossWhileStopping int
}

// Check checks tl against masterjob's promises (see the package doc).
func Check(tl *Timeline, lim Limits) Findings {
	var f Findings
	f.Violations = append(f.Violations, tl.Problems...)
	byLock := map[string][]Mastership{}
	for _, m := range tl.Masterships {
		byLock[m.Lock] = append(byLock[m.Lock], m)
	}
	for _, lock := range tl.Locks {
		ms := byLock[lock]
		slices.SortFunc(ms, func(a, b Mastership) int { return cmp.Compare(a.Start, b.Start) })
		f.checkTokens(lock, ms)
		f.checkOverlaps(tl, lock, ms, lim)
		f.checkGaps(tl, lock, ms, lim)
		f.checkControls(tl, lock, ms, lim)
		f.checkLosses(tl, lock, ms, lim)
		f.checkReservations(tl, lock, lim)
	}
	f.checkSink(tl)
	f.checkWills(tl, lim)
	slices.SortStableFunc(f.Violations, func(a, b Violation) int { return cmp.Compare(a.At, b.At) })
	return f
}

func (f *Findings) add(kind, lock string, at int64, format string, args ...any) {
	f.Violations = append(f.Violations, Violation{Kind: kind, Lock: lock, At: at, Detail: fmt.Sprintf(format, args...)})
}

// checkTokens: every acquisition gets a greater token than all earlier ones.
func (f *Findings) checkTokens(lock string, ms []Mastership) {
	for i := 1; i < len(ms); i++ {
		if ms[i].Token <= ms[i-1].Token {
			f.add(VTokenOrder, lock, ms[i].Start, "mastership of instance %d gen %d started with token %d after token %d (instance %d gen %d)",
				ms[i].Index, ms[i].Gen, ms[i].Token, ms[i-1].Token, ms[i-1].Index, ms[i-1].Gen)
		}
	}
}

// checkOverlaps: no two masterships at once, unless the older master was
// SIGSTOPped before the newer started (and while the older ran, or, for a
// runner's child, when it started) and stopped its job within StopGrace of
// SIGCONT.
func (f *Findings) checkOverlaps(tl *Timeline, lock string, ms []Mastership, lim Limits) {
	for j := range ms {
		b := ms[j]
		for i := range j {
			a := ms[i]
			if a.Stop <= b.Start {
				continue
			}
			// a still ran when b started.
			if tl.lostInStore(lock, a.Token, b.Start) {
				// An outside writer ended a's lease: b could acquire before
				// a's next renewal told it. checkLosses holds a to
				// stopping within a heartbeat of the loss.
				f.ExcusedByLoss++
				continue
			}
			var excuse *Window
			for k := range tl.Stopped {
				w := tl.Stopped[k]
				if w.Index == a.Index && w.From <= b.Start && w.caught(a) {
					if excuse == nil || w.To > excuse.To {
						excuse = &tl.Stopped[k]
					}
				}
			}
			if excuse == nil {
				if sw, ok := tl.suspendedAt(a, b.Start); ok {
					f.checkSuspended(tl, lock, a, b, sw, lim)
					continue
				}
				f.add(VOverlap, lock, b.Start, "instance %d gen %d (token %d) ran until %s, %v after instance %d gen %d (token %d) started",
					a.Index, a.Gen, a.Token, ts(a.Stop), dur(a.Stop-b.Start), b.Index, b.Gen, b.Token)
				continue
			}
			f.ExcusedOverlaps++
			// The grace counts from when the process ran again: SIGCONT, or
			// later if the OS did not schedule it at once (its own pause
			// detector says when it ran). A later SIGSTOP of the same
			// instance does not count either.
			from := excuse.To
			resumed, seen := tl.resumedAfter(a.Index, excuse.To)
			if seen {
				f.ResumesAfterCont = append(f.ResumesAfterCont, dur(resumed-excuse.To))
				from = max(from, resumed)
			}
			after := max(0, a.Stop-from)
			for _, w := range tl.Stopped {
				if w.Index == a.Index && w.From >= excuse.To && w.From < a.Stop {
					after -= max(0, min(w.To, a.Stop)-max(w.From, from))
				}
			}
			after = max(0, after)
			f.StopsAfterCont = append(f.StopsAfterCont, dur(after))
			if first, ok := tl.firstWriteAfter(a, excuse.To); ok {
				f.WritesAfterCont = append(f.WritesAfterCont, dur(first-excuse.To))
			}
			f.MaxStopAfterCont = max(f.MaxStopAfterCont, dur(after))
			_, wrote := tl.firstWriteAfter(a, excuse.To)
			if dur(after) > lim.StopGrace && !seen && !wrote && a.Reason == "killed" {
				// No sign that the process ran at all between SIGCONT and
				// its SIGKILL (the host starved it): nothing to judge.
				f.NeverRanAfterCont++
				continue
			}
			if dur(after) > lim.StopGrace {
				ran := "its pause detector saw no resume"
				if seen {
					ran = fmt.Sprintf("its process ran again %v after SIGCONT", dur(resumed-excuse.To))
				}
				f.add(VLateStop, lock, excuse.To, "instance %d gen %d (token %d), SIGSTOPped at %s and continued at %s (%s), stopped its job %v after it ran again while token %d (instance %d) was master; %s",
					a.Index, a.Gen, a.Token, ts(excuse.From), ts(excuse.To), ran, dur(after), b.Token, b.Index, tl.firstWrites(a, excuse.To))
			}
		}
	}
}

// lostInStore reports whether a store-side loss ended token's lease of
// lock before t.
func (tl *Timeline) lostInStore(lock string, token, t int64) bool {
	for _, l := range tl.Losses {
		if l.Lock == lock && l.Token == token && l.Called <= t {
			return true
		}
	}
	return false
}

// checkSink replays the sink's log: it must never have accepted a token
// lower than one it had accepted before for the same lock.
func (f *Findings) checkSink(tl *Timeline) {
	hi := map[string]int64{}
	started := map[string][]Mastership{} // by lock, for the late-write count
	for _, m := range tl.Masterships {
		started[m.Lock] = append(started[m.Lock], m)
	}
	for _, w := range tl.Writes {
		if !w.Accepted {
			if w.Token < hi[w.Lock] {
				f.RejectedLate++
			}
			continue
		}
		if w.Token < hi[w.Lock] {
			f.add(VStaleWrite, w.Lock, w.At, "sink accepted token %d from instance %d after it had accepted token %d", w.Token, w.Instance, hi[w.Lock])
		}
		hi[w.Lock] = max(hi[w.Lock], w.Token)
		for _, m := range started[w.Lock] {
			if m.Token > w.Token && m.Start < w.At {
				f.LateAccepted++
				break
			}
		}
	}
}

// checkGaps: with the lock enabled and an instance healthy, a master runs
// again within GapBound. A SIGSTOPped master does not count as running.
func (f *Findings) checkGaps(tl *Timeline, lock string, ms []Mastership, lim Limits) {
	// Coverage: masterships minus their instance's SIGSTOP windows. A
	// mastership counts from its acquisition when the instance reported it
	// (the lock had a master while the job started, slowly on a loaded
	// host), else from its job's start.
	acquired := map[[2]int64]int64{}
	for _, a := range tl.Acquisitions {
		if a.Lock == lock {
			acquired[[2]int64{int64(a.Index), a.Token}] = a.At
		}
	}
	var cover [][2]int64
	for _, m := range ms {
		from := m.Start
		if at, ok := acquired[[2]int64{int64(m.Index), m.Token}]; ok && at < from {
			from = at
		}
		segs := [][2]int64{{from, m.Stop}}
		for _, w := range tl.paused() {
			if w.Index != m.Index {
				continue
			}
			var next [][2]int64
			for _, s := range segs {
				if !w.overlaps(s[0], s[1]) {
					next = append(next, s)
					continue
				}
				if s[0] < w.From {
					next = append(next, [2]int64{s[0], w.From})
				}
				if w.To < s[1] {
					next = append(next, [2]int64{w.To, s[1]})
				}
			}
			segs = next
		}
		cover = append(cover, segs...)
	}
	started := map[[2]int64]bool{}
	for _, m := range ms {
		started[[2]int64{int64(m.Index), m.Token}] = true
	}
	for _, a := range tl.Acquisitions {
		if a.Lock == lock && !started[[2]int64{int64(a.Index), a.Token}] {
			f.UnstartedAcquisitions++
			cover = append(cover, [2]int64{a.At, a.At + int64(lim.Tolerance)})
		}
	}
	cover = append(cover, f.unreportedAtDeath(tl, lock, ms)...)
	slices.SortFunc(cover, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	// Gaps inside [From, To].
	var gaps [][2]int64
	at := tl.From
	for _, c := range cover {
		if c[0] > at {
			gaps = append(gaps, [2]int64{at, min(c[0], tl.To)})
		}
		at = max(at, c[1])
		if at >= tl.To {
			break
		}
	}
	if at < tl.To {
		gaps = append(gaps, [2]int64{at, tl.To})
	}
	for _, g := range gaps {
		if g[1] <= g[0] {
			continue
		}
		f.MaxGap = max(f.MaxGap, dur(g[1]-g[0]))
		from, to := tl.longestEligible(lock, g[0], g[1])
		d := dur(to - from)
		f.MaxEligibleGap = max(f.MaxEligibleGap, d)
		if d <= lim.GapBound && len(tl.Unreachable) > 0 {
			// Would it have been a violation had instances whose own
			// store calls failed counted as healthy?
			strict := *tl
			strict.Unreachable = nil
			if from, to := strict.longestEligible(lock, g[0], g[1]); dur(to-from) > lim.GapBound {
				f.GapsExcusedByFailingCalls++
			}
		}
		if d > lim.GapBound {
			f.add(VGap, lock, from, "no master from %s to %s (%v); enabled with a healthy instance from %s to %s (%v > bound %v); healthy: %s",
				ts(g[0]), ts(g[1]), dur(g[1]-g[0]), ts(from), ts(to), d, lim.GapBound, tl.healthyAt(from+(to-from)/2))
		}
	}
}

// unreportedAtDeath returns, as cover for the gap check, the leases of lock
// that a successor took over (Timeline.Takeovers) but that no instance
// reported: acquired by a check in flight when its instance was killed, its
// answer or its report lost with the process. Such a lease held the lock
// in the store until it expired, as a master killed at that moment would
// have: it counts from the end of its holder's last reported check (the
// one in flight began later) until the holder was gone. A lease of an
// instance that was not killed is not excused: it should have reported it.
func (f *Findings) unreportedAtDeath(tl *Timeline, lock string, ms []Mastership) [][2]int64 {
	known := map[int64]bool{}
	for _, m := range ms {
		known[m.Token] = true
	}
	for _, a := range tl.Acquisitions {
		if a.Lock == lock {
			known[a.Token] = true
		}
	}
	var cover [][2]int64
	for _, t := range tl.Takeovers {
		if t.Lock != lock || t.PrevToken == 0 || known[t.PrevToken] {
			continue
		}
		known[t.PrevToken] = true // one takeover per lease is enough
		for _, l := range tl.Lives {
			if l.ID != t.PrevHolder || l.KilledAt == 0 || l.Gone == 0 {
				continue
			}
			from := max(l.LastCheck, l.Hello)
			if from > 0 && from < l.Gone {
				f.UnreportedAtDeath++
				cover = append(cover, [2]int64{from, l.Gone})
			}
		}
	}
	return cover
}

// eligible reports whether lock was enabled and some instance healthy at t.
func (tl *Timeline) eligible(lock string, t int64) bool {
	for _, c := range tl.Controls {
		end := c.EnableReturned
		if end == 0 {
			end = tl.To + 1
		}
		if c.Lock == lock && c.DisableCalled <= t && t < end {
			return false
		}
	}
	for i := range tl.Instances {
		if tl.healthy(i, t) {
			return true
		}
	}
	return false
}

func (tl *Timeline) healthy(i int, t int64) bool {
	for _, ws := range [][]Window{tl.Down, tl.Unreachable} {
		for _, w := range ws {
			if w.Index == i && w.contains(t) {
				return false
			}
		}
	}
	return true
}

func (tl *Timeline) healthyAt(t int64) string {
	var b strings.Builder
	for i := range tl.Instances {
		if tl.healthy(i, t) {
			fmt.Fprintf(&b, "%d ", i)
		}
	}
	return strings.TrimSpace(b.String())
}

// longestEligible returns the longest sub-period of [from, to] during which
// the lock stayed eligible: the liveness clock restarts each time it
// becomes eligible again.
func (tl *Timeline) longestEligible(lock string, from, to int64) (int64, int64) {
	points := []int64{from, to}
	add := func(t int64) {
		if from < t && t < to {
			points = append(points, t)
		}
	}
	for _, c := range tl.Controls {
		if c.Lock == lock {
			add(c.DisableCalled)
			add(c.EnableReturned)
		}
	}
	for _, ws := range [][]Window{tl.Down, tl.Unreachable} {
		for _, w := range ws {
			add(w.From)
			add(w.To)
		}
	}
	slices.Sort(points)
	points = slices.Compact(points)
	var bestFrom, bestTo int64
	runFrom := int64(-1)
	for k := 0; k+1 < len(points); k++ {
		a, b := points[k], points[k+1]
		if tl.eligible(lock, a+(b-a)/2) {
			if runFrom < 0 {
				runFrom = a
			}
			if b-runFrom > bestTo-bestFrom {
				bestFrom, bestTo = runFrom, b
			}
		} else {
			runFrom = -1
		}
	}
	return bestFrom, bestTo
}

// checkControls: after Disable returns, the master's job stops within one
// heartbeat (plus slack; longer only if its instance could not hear from
// the store), and no instance acquires the lock until Enable.
func (f *Findings) checkControls(tl *Timeline, lock string, ms []Mastership, lim Limits) {
	for _, c := range tl.Controls {
		if c.Lock != lock {
			continue
		}
		enable := c.EnableCalled
		if enable == 0 {
			enable = tl.To
		}
		for _, m := range ms {
			// A job that started before Disable was called was acquired
			// before it, whatever its token: a Disable of a lock whose
			// record had been deleted (a store-side loss) reports token 0.
			if m.Token > c.Token && m.Start > c.DisableCalled && m.Start < enable {
				f.add(VDisabledAcquire, lock, m.Start, "instance %d gen %d acquired token %d at %s: the lock was disabled at %s (token %d) and enabled only at %s",
					m.Index, m.Gen, m.Token, ts(m.Start), ts(c.DisableReturned), c.Token, ts(c.EnableCalled))
			}
			// The promise is that the job is told to stop within a
			// heartbeat; a job slow to stop then takes its time, bounded by
			// StopDeadline (the overlap and loss checks hold it to that).
			if m.Token > c.Token || m.Start >= c.DisableReturned || m.told() <= c.DisableReturned {
				continue
			}
			ran := dur(m.told() - c.DisableReturned)
			limit := c.DisableReturned + int64(lim.Heartbeat+lim.DisableSlack)
			why := "healthy"
			// Pauses last, as for a store-side loss: a pause that begins
			// after a heartbeat but within the trust window of a master cut
			// off from the store stops it from acting on that window.
			for _, ws := range [][]Window{tl.Down, tl.Degraded, tl.Unreachable} {
				for _, w := range ws {
					if w.Index == m.Index && w.Cause != "stop" && w.overlaps(c.DisableCalled, limit) {
						// It could not renew, so it learns of the revocation
						// no later than its trust window (< a lease) ends.
						limit = max(limit, c.DisableReturned+int64(lim.Tolerance+lim.DisableSlack))
						why = "cut off or slowed (" + w.Cause + ")"
					}
				}
			}
			if l2, w := tl.nextRenewal(m, c.DisableReturned, limit, lim.Tolerance, lim.DisableSlack); w != "" {
				limit, why = l2, w
			}
			if l2, paused := tl.pauseLimit(m.Index, c.DisableCalled, limit, lim); paused {
				limit, why = l2, "paused (SIGSTOP, SIGTSTP, or a stall it saw) while "+why
			}
			if why == "healthy" || strings.HasPrefix(why, "its next renewal") {
				f.MaxDisableStop = max(f.MaxDisableStop, ran)
			}
			if m.told() > limit {
				f.add(VDisabledRunning, lock, c.DisableReturned, "instance %d gen %d (token %d, %s) ran its job %v after Disable returned at %s before it was told to stop (limit %v)",
					m.Index, m.Gen, m.Token, why, ran, ts(c.DisableReturned), dur(limit-c.DisableReturned))
			}
		}
	}
}

// nextRenewal: a holder learns of a change made in the store at from (a
// Disable, a store-side loss) from its first renewal that begins after it
// and by limit. A slow one tells it late: the limit becomes that renewal's
// end plus slack. A failed one does not tell it at all: it learns by the
// end of its trust window, within a lease (tolerance) plus slack. It
// returns the limit, and why it moved ("" when it did not).
func (tl *Timeline) nextRenewal(m Mastership, from, limit int64, tolerance, slack time.Duration) (int64, string) {
	why := ""
	for _, r := range tl.Renewals {
		if r.Index != m.Index || r.Gen != m.Gen || r.Began < from || r.Began > limit {
			continue
		}
		if !r.OK {
			if l := from + int64(tolerance+slack); l > limit {
				limit, why = l, "its renewals failed"
			}
			continue
		}
		if r.Ended+int64(slack) > limit {
			limit = r.Ended + int64(slack)
			why = fmt.Sprintf("its next renewal took %v", dur(r.Ended-r.Began))
		}
		break
	}
	return limit, why
}

// checkReservations: a release is not reserved for a successor that had
// left before it. The releasing instance names its successor from its
// member list as its balancer last read it, and checks it again at the
// release. The balancer reads the list again after a pushed member change
// (at most every 100 ms) and at least every check interval: a peer that
// shut down (its record deleted) counts as gone a check interval (plus
// slack) later; one that died, once its record is stale (a check interval
// and a heartbeat) and the list read again (a check interval), plus slack. A releasing instance that was paused, cut off or slowed
// meanwhile could not read the list, and is excused.
func (f *Findings) checkReservations(tl *Timeline, lock string, lim Limits) {
	for _, r := range tl.Reservations {
		if r.Lock != lock {
			continue
		}
		for _, l := range tl.Lives {
			if l.ID != r.Successor {
				continue
			}
			var left, limit int64
			how := "shut down"
			switch {
			case l.Bye > 0:
				left, limit = l.Bye, l.Bye+int64(lim.Check+lim.DisableSlack)
			case l.Gone > 0:
				left, limit = l.Gone, l.Gone+int64(2*lim.Check+lim.Heartbeat+lim.DisableSlack)
				how = "died"
			default:
				continue
			}
			if r.At <= limit {
				continue
			}
			if _, paused := tl.pauseLimit(r.Index, left, r.At, lim); paused {
				continue
			}
			unhealthy := false
			for _, ws := range [][]Window{tl.Down, tl.Degraded, tl.Unreachable} {
				for _, w := range ws {
					if w.Index == r.Index && w.overlaps(left, r.At) {
						unhealthy = true
					}
				}
			}
			if !unhealthy {
				f.add(VReservedForDeparted, lock, r.At, "instance %d gen %d released token %d reserved for %s, which had %s %v before (limit %v)",
					r.Index, r.Gen, r.Token, r.Successor, how, dur(r.At-left), dur(limit-left))
			}
		}
	}
}

// checkLosses: once the store has refused a lease, the job stops within a
// heartbeat plus LossSlack, not at the lease's old expiry, whether it was
// running or already stopping for a planned reason (shutdown, disable).
// Two sources say when the store refused it:
//
//   - a store-side loss (the driver deleted or expired the lease): the
//     holder learns at its next renewal, within a heartbeat; longer only if
//     it could not reach the store (cut, outage, latency, a store restart:
//     then by the end of its trust window, within a lease), or its process
//     was paused;
//   - the instance's own report of a lost lease (its observer's "lost"
//     transition: a renewal refused; or "demoted" with ErrLeaseExpired):
//     the job must stop at once; longer only if the process was paused.
//
// A demotion with ErrTrustWindowPassed is not bounded here: it may come
// from exhausted renewal retries while the lease is still valid, and the
// job may use the lease up to its local expiry, which the overlap check
// holds it to.
func (f *Findings) checkLosses(tl *Timeline, lock string, ms []Mastership, lim Limits) {
	for _, l := range tl.Losses {
		if l.Lock != lock || l.Token == 0 {
			continue
		}
		for _, m := range ms {
			if m.Token != l.Token || m.Stop <= l.Called {
				continue
			}
			f.StoreLossHits++
			if m.Cancelled > 0 && m.Cancelled <= l.Called {
				f.StoreLossWhileStopping++
			}
			limit := l.Returned + int64(lim.Heartbeat+lim.LossSlack)
			why := "able to renew"
			for _, ws := range [][]Window{tl.Down, tl.Degraded, tl.Unreachable} {
				for _, w := range ws {
					switch w.Cause {
					case "stop", "sigterm", "killed":
						continue // a pause is below; a planned stop does not delay the renewal
					}
					if w.Index == m.Index && w.overlaps(l.Called, limit) {
						// It could not renew: it learns no later than its
						// trust window (< a lease) ends.
						limit = max(limit, l.Returned+int64(lim.Tolerance+lim.LossSlack))
						why = "cut off or slowed (" + w.Cause + ")"
					}
				}
			}
			if l2, w := tl.nextRenewal(m, l.Returned, limit, lim.Tolerance, lim.LossSlack); w != "" {
				limit, why = l2, w
			}
			limit, paused := tl.pauseLimit(m.Index, l.Called, limit, lim)
			if paused {
				why = "paused"
			}
			ran := dur(m.Stop - l.Returned)
			if why == "able to renew" || strings.HasPrefix(why, "its next renewal") {
				f.MaxStoreLossStop = max(f.MaxStoreLossStop, ran)
			}
			if m.Stop > limit {
				f.add(VStoreLossRunning, lock, l.Returned, "instance %d gen %d (token %d, %s) ran its job %v after the store-side %s of its lease returned at %s (limit %v); %s",
					m.Index, m.Gen, m.Token, why, ran, l.Mode, ts(l.Returned), dur(limit-l.Returned), m.describe())
			}
		}
	}
	for _, dm := range tl.Demotions {
		if dm.Lock != lock || (dm.Kind != "lost" && dm.Reason != masterjob.ErrLeaseExpired.Error()) {
			continue
		}
		for _, m := range ms {
			if m.Index != dm.Index || m.Gen != dm.Gen || m.Token != dm.Token || m.Stop <= dm.At {
				continue
			}
			limit, paused := tl.pauseLimit(m.Index, dm.At, dm.At+int64(lim.Heartbeat+lim.LossSlack), lim)
			ran := dur(m.Stop - dm.At)
			if !paused {
				f.MaxLossStop = max(f.MaxLossStop, ran)
			}
			if m.Stop > limit {
				f.add(VLossRunning, lock, dm.At, "instance %d gen %d (token %d) reported %s (%s) at %s and ran its job %v more (limit %v); %s",
					m.Index, m.Gen, m.Token, dm.Kind, dm.Reason, ts(dm.At), ran, dur(limit-dm.At), m.describe())
			}
		}
	}
}

// pauseLimit extends limit, a deadline for instance i to act on something
// that happened at from, by the pauses of i in between (SIGSTOPs, and the
// stalls its own pause detector saw): by their length, and at least to
// StopGrace after the process ran again. It reports whether any did.
func (tl *Timeline) pauseLimit(i int, from, limit int64, lim Limits) (int64, bool) {
	paused := false
	pauses := append(tl.paused(), tl.Resumed...)
	seen := map[int]bool{}
	for changed := true; changed; {
		changed = false
		for k, w := range pauses {
			if seen[k] || w.Index != i || !w.overlaps(from, limit) {
				continue
			}
			seen[k], changed, paused = true, true, true
			ran := w.To
			if r, ok := tl.resumedAfter(i, w.To); ok {
				ran = max(ran, r)
			}
			limit = max(limit+(w.To-max(w.From, from)), ran+int64(lim.StopGrace))
		}
	}
	return limit, paused
}

// firstWrites describes when the paused mastership a wrote again after
// SIGCONT at cont: evidence of when its process ran again.
func (tl *Timeline) firstWrites(a Mastership, cont int64) string {
	var sent []string
	for _, w := range tl.Writes {
		if w.Lock == a.Lock && w.Token == a.Token && w.Sent >= cont {
			verdict := "rejected"
			if w.Accepted {
				verdict = "accepted"
			}
			sent = append(sent, fmt.Sprintf("+%v (%s)", dur(w.Sent-cont).Round(time.Microsecond), verdict))
			if len(sent) == 5 {
				break
			}
		}
	}
	if len(sent) == 0 {
		return "its job wrote nothing after SIGCONT"
	}
	return "its job wrote after SIGCONT at " + strings.Join(sent, ", ")
}

// resumedAfter returns when instance i first ran after a pause that was
// going on at t (the pause detector's report).
func (tl *Timeline) resumedAfter(i int, t int64) (int64, bool) {
	best, ok := int64(0), false
	for _, w := range tl.Resumed {
		if w.Index == i && w.From <= t && w.To >= t && (!ok || w.To < best) {
			best, ok = w.To, true
		}
	}
	return best, ok
}

// firstWriteAfter returns when mastership a first sent a write at or after t.
func (tl *Timeline) firstWriteAfter(a Mastership, t int64) (int64, bool) {
	for _, w := range tl.Writes {
		if w.Lock == a.Lock && w.Token == a.Token && w.Sent >= t {
			return w.Sent, true
		}
	}
	return 0, false
}

// stopTakesEffect bounds how long after the driver's kill(2) of SIGSTOP
// (or SIGTSTP) returned a process may still run: the signal stops each
// thread when it next returns to user space.
const stopTakesEffect = 5 * time.Millisecond

// paused returns the windows in which an instance's jobs could not run:
// its SIGSTOPs, and its runner's suspensions (which stop the command too).
// Overlaps treat the two apart (checkOverlaps).
func (tl *Timeline) paused() []Window {
	return append(slices.Clone(tl.Stopped), tl.Suspended...)
}

// caught reports whether pause w of a's instance caught a running: it
// began while a ran, or was on when a reported its start in two cases. A
// runner's child reports its start itself: the runner may have acquired
// and let the child go just before it was paused. And a signal takes
// effect a moment after kill(2) returns: a job may report its start in
// between.
func (w Window) caught(a Mastership) bool {
	began := w.From >= a.Start ||
		(w.To > a.Start && (a.Child || a.Start-w.From <= int64(stopTakesEffect)))
	return began && a.Stop >= w.From
}

// suspendedAt returns the last SIGTSTP window of a's instance that caught
// a running (Window.caught) and began by t. It may have ended by then: a
// newer master can start just after the SIGCONT, before the resumed runner
// has killed its stopped command, which checkSuspended bounds by the stop
// grace, as the SIGSTOP excuse does.
func (tl *Timeline) suspendedAt(a Mastership, t int64) (Window, bool) {
	var last Window
	found := false
	for _, w := range tl.Suspended {
		if w.Index == a.Index && w.From <= t && w.caught(a) && (!found || w.From > last.From) {
			last, found = w, true
		}
	}
	return last, found
}

// checkSuspended judges an overlap of a, whose runner was suspended in sw,
// with b, which started meanwhile: a's command, stopped with its runner,
// must not have written after b started, and must have died within the stop
// grace of SIGCONT (it is killed while still stopped when its lease's trust
// window has closed).
func (f *Findings) checkSuspended(tl *Timeline, lock string, a, b Mastership, sw Window, lim Limits) {
	if first, ok := tl.firstWriteAfter(a, b.Start); ok && first < a.Stop {
		f.add(VSuspendedRan, lock, first, "instance %d gen %d (token %d) wrote at %s, while its runner was suspended (from %s) and instance %d gen %d (token %d) ran (since %s)",
			a.Index, a.Gen, a.Token, ts(first), ts(sw.From), b.Index, b.Gen, b.Token, ts(b.Start))
		return
	}
	if after := dur(a.Stop - sw.To); after > lim.StopGrace {
		f.add(VSuspendedRan, lock, a.Stop, "instance %d gen %d (token %d) ran until %s, %v after its runner's SIGCONT; instance %d gen %d (token %d) ran since %s",
			a.Index, a.Gen, a.Token, ts(a.Stop), after, b.Index, b.Gen, b.Token, ts(b.Start))
		return
	}
	f.SuspendedOverlaps++
}

// ts formats a monotonic reading as seconds, for messages.
func ts(t int64) string { return fmt.Sprintf("%.3fs", float64(t)/1e9) }

// checkWills requires a last will of every runner that the driver SIGKILLed
// while its command ran and had not been told to stop: the command was
// then still alive when the runner died (its death came after the kill),
// so its supervisor outlived the runner with a lease to release, and must
// run the will for that lease (lock and token) within the lease. Kills
// the checker cannot judge are left out: one that caught its runner
// paused or suspended (its supervisor may be stopped too, until a SIGCONT
// that may come after the lease), one that came after the runner began to
// stop the command itself (a SIGKILL of it, which the command cannot
// report, may have killed it before the kill of the runner: the driver
// learns of its death a few milliseconds late), and one too close to the
// end of the run for its will to have been seen.
func (f *Findings) checkWills(tl *Timeline, lim Limits) {
	for _, m := range tl.Masterships {
		if !m.Child || m.Reason != "killed" || m.Cancelled != 0 {
			continue
		}
		var killedAt int64
		tl.life(m.Index, m.Gen, func(l *Life) { killedAt = l.KilledAt })
		bound := m.Stop + int64(lim.Tolerance)
		if killedAt == 0 || m.Stop <= killedAt || bound+int64(time.Second) > tl.To || tl.pausedAt(m.Index, killedAt) ||
			tl.runnerStopped(m, killedAt) {
			continue
		}
		f.WillsExpected++
		ran := false
		for _, w := range tl.Wills {
			if w.Index == m.Index && w.Gen == m.Gen && w.Lock == m.Lock && w.Token == m.Token && w.Start >= killedAt && w.Start <= bound {
				ran = true
				f.WillStarts = append(f.WillStarts, dur(w.Start-m.Stop))
				if w.Exit > 0 {
					f.WillsFailed++
				}
				break
			}
		}
		if !ran {
			f.add(VWillMissing, m.Lock, m.Stop, "runner %d gen %d was SIGKILLed at %s while its command ran (token %d, died at %s); no last will released the lease within %v",
				m.Index, m.Gen, dur(killedAt-tl.From), m.Token, dur(m.Stop-tl.From), lim.Tolerance)
		}
	}
}

// pausedAt reports whether instance i was SIGSTOPped or suspended at t
// (a window's ends included). A pause later than a kill is the next
// generation's, which the dead runner's supervisor does not share.
func (tl *Timeline) pausedAt(i int, t int64) bool {
	return slices.ContainsFunc(tl.paused(), func(w Window) bool { return w.Index == i && w.From <= t && t <= w.To })
}
