//go:build linux

package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
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
	// Down holds the windows when an instance was not healthy: not running
	// yet, killed and not yet restarted, SIGSTOPped, cut from the store (or
	// in a store outage).
	Down []Window
	// Degraded holds windows when an instance could reach the store but
	// slowly or with errors: added latency, a store restart.
	Degraded []Window
	// StoreBlocked holds the SIGSTOP windows of instances that were paused
	// holding SQLite's write lock: every instance was cut from the store.
	StoreBlocked []Window
	Controls     []ControlWindow
	// Resumed holds, per instance, the pauses the instance saw itself: From
	// is its last clock reading before the pause, To its first after.
	Resumed []Window
	Writes  []SinkWrite
	// Problems are violations the driver saw directly: crashed or leaked
	// processes, jobs left running, leases left held after shutdown.
	Problems []Violation
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
	// VPausedWriter: a SIGSTOPped instance held SQLite's write lock and so
	// blocked every instance (a violation only with StrictSQLiteLock).
	VPausedWriter = "sqlite-write-lock-held-while-paused"
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
	GapBound     time.Duration
	StopGrace    time.Duration
	DisableSlack time.Duration
}

// Findings is the checker's result.
type Findings struct {
	Violations []Violation
	// ExcusedOverlaps counts overlaps whose older master was SIGSTOPped.
	ExcusedOverlaps int
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
	// returned.
	MaxDisableStop time.Duration
}

// Check checks tl against the promises of the design.
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
	}
	f.checkSink(tl)
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
// SIGSTOPped before the newer started and stopped its job within StopGrace
// of SIGCONT.
func (f *Findings) checkOverlaps(tl *Timeline, lock string, ms []Mastership, lim Limits) {
	for j := range ms {
		b := ms[j]
		for i := range j {
			a := ms[i]
			if a.Stop <= b.Start {
				continue
			}
			// a still ran when b started.
			var excuse *Window
			for k := range tl.Stopped {
				w := tl.Stopped[k]
				if w.Index == a.Index && w.From <= b.Start && w.From >= a.Start && a.Stop >= w.From {
					if excuse == nil || w.To > excuse.To {
						excuse = &tl.Stopped[k]
					}
				}
			}
			if excuse == nil {
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
	// Coverage: masterships minus their instance's SIGSTOP windows.
	var cover [][2]int64
	for _, m := range ms {
		segs := [][2]int64{{m.Start, m.Stop}}
		for _, w := range tl.Stopped {
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
		if d > lim.GapBound {
			f.add(VGap, lock, from, "no master from %s to %s (%v); enabled with a healthy instance from %s to %s (%v > bound %v); healthy: %s",
				ts(g[0]), ts(g[1]), dur(g[1]-g[0]), ts(from), ts(to), d, lim.GapBound, tl.healthyAt(from+(to-from)/2))
		}
	}
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
	for _, w := range tl.Down {
		if w.Index == i && w.contains(t) {
			return false
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
	for _, w := range tl.Down {
		add(w.From)
		add(w.To)
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
			if m.Token > c.Token && m.Start < enable {
				f.add(VDisabledAcquire, lock, m.Start, "instance %d gen %d acquired token %d at %s: the lock was disabled at %s (token %d) and enabled only at %s",
					m.Index, m.Gen, m.Token, ts(m.Start), ts(c.DisableReturned), c.Token, ts(c.EnableCalled))
			}
			if m.Token > c.Token || m.Start >= c.DisableReturned || m.Stop <= c.DisableReturned {
				continue
			}
			ran := dur(m.Stop - c.DisableReturned)
			limit := c.DisableReturned + int64(lim.Heartbeat+lim.DisableSlack)
			why := "healthy"
			for _, w := range tl.Stopped {
				if w.Index == m.Index && w.overlaps(c.DisableCalled, limit) {
					limit = max(limit, w.To+int64(lim.StopGrace))
					why = "SIGSTOPped"
				}
			}
			for _, ws := range [][]Window{tl.Down, tl.Degraded} {
				for _, w := range ws {
					if w.Index == m.Index && w.Cause != "stop" && w.overlaps(c.DisableCalled, limit) {
						// It could not renew, so it learns of the revocation
						// no later than its trust window (< a lease) ends.
						limit = max(limit, c.DisableReturned+int64(lim.Tolerance+lim.DisableSlack))
						why = "cut off or slowed (" + w.Cause + ")"
					}
				}
			}
			if why == "healthy" {
				f.MaxDisableStop = max(f.MaxDisableStop, ran)
			}
			if m.Stop > limit {
				f.add(VDisabledRunning, lock, c.DisableReturned, "instance %d gen %d (token %d, %s) ran its job %v after Disable returned at %s (limit %v)",
					m.Index, m.Gen, m.Token, why, ran, ts(c.DisableReturned), dur(limit-c.DisableReturned))
			}
		}
	}
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

// ts formats a monotonic reading as seconds, for messages.
func ts(t int64) string { return fmt.Sprintf("%.3fs", float64(t)/1e9) }
