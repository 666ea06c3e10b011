//go:build linux

package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report summarises a run.
type Report struct {
	RunID     string
	Store     string // the store URL, password redacted
	Seed      uint64
	Instances int
	Locks     int
	Timing    Timing
	GapBound  time.Duration
	Duration  time.Duration
	// Faults counts the injected faults by kind; FaultsTotal is their sum.
	// Combos counts the combos by variant ("sigterm+store-loss", ...).
	Faults      map[string]int
	FaultsTotal int
	Combos      map[string]int
	// Runner is set for a run in runner mode, DirectChild when its child
	// ran without sh -c; SlowStop is the fraction of jobs slow to stop.
	Runner, DirectChild bool
	SlowStop            float64
	SlowStopMax         time.Duration
	// Violations lists every broken promise, in time order.
	Violations []Violation
	// Masterships counts the mastership intervals; StopReasons counts how
	// they ended.
	Masterships  int
	StopReasons  map[string]int
	SinkAccepted int
	SinkRejected int
	Findings     Findings
	// StoreBlocked counts the SIGSTOPs that caught an instance holding
	// SQLite's write lock, and StoreBlockedFor their total length.
	StoreBlocked    int
	StoreBlockedFor time.Duration
	// Unreachable counts the periods in which an instance's own store calls
	// failed (Timeline.Unreachable); UnprovokedUnreachable those of them
	// that overlap no fault on that instance (a cut, latency, a store
	// restart, a pause, a kill) nor a store blocked for all, which only a
	// loaded host (or a bug) explains; UnprovokedFor is their total length
	// and UnprovokedMax the longest.
	Unreachable, UnprovokedUnreachable int
	UnprovokedFor, UnprovokedMax       time.Duration
	// Overruns lists, for each of those periods that a fault explains and
	// that went on after every fault on that instance (and every store
	// blocked for all) that it overlaps had ended, how long after: the
	// time an instance took to reach the store again once it could (its
	// client reconnecting, its retry's backoff, the call itself).
	Overruns []time.Duration
	// AfterKill lists, in runner mode, for each mastership whose runner
	// was SIGKILLed, how long after its command died the next mastership
	// of the lock began: about the lease when the lease had to expire,
	// a fraction of it when the runner's last will released it.
	AfterKill []time.Duration
	// LeftToExpire counts the leases left held at the end by an instance
	// whose store calls were failing as it shut down (Timeline.LeftToExpire).
	LeftToExpire int
	// Dir is the kept work directory (logs, events.jsonl, trace.log), if kept.
	Dir string
}

// OK reports whether the run found no violation.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

func newReport(cfg Config, runID string, tl *Timeline, faults []FaultRecord, f Findings) *Report {
	r := &Report{
		RunID: runID, Store: redactURL(cfg.StoreURL), Seed: cfg.Seed,
		Instances: cfg.Instances, Locks: cfg.Locks, Timing: cfg.Timing, GapBound: cfg.gapBound(),
		Faults: map[string]int{}, Violations: append([]Violation{}, f.Violations...), Masterships: len(tl.Masterships),
		StopReasons: map[string]int{}, Findings: f, Combos: map[string]int{},
		Runner: cfg.Runner, DirectChild: cfg.DirectChild, SlowStop: cfg.SlowStop, SlowStopMax: cfg.SlowStopMax,
	}
	for _, fr := range faults {
		r.Faults[fr.Kind]++
		r.FaultsTotal++
		if fr.Variant != "" {
			r.Combos[fr.Variant]++
		}
	}
	for _, w := range tl.Unreachable {
		r.Unreachable++
		if end, ok := tl.provokedUntil(w); ok {
			if w.To > end {
				r.Overruns = append(r.Overruns, dur(w.To-end))
			}
			continue
		}
		r.UnprovokedUnreachable++
		r.UnprovokedFor += dur(w.To - w.From)
		r.UnprovokedMax = max(r.UnprovokedMax, dur(w.To-w.From))
	}
	r.LeftToExpire = tl.LeftToExpire
	for _, w := range tl.StoreBlocked {
		r.StoreBlocked++
		r.StoreBlockedFor += dur(w.To - w.From)
	}
	if cfg.Runner {
		r.AfterKill = afterKill(tl.Masterships)
	}
	for _, m := range tl.Masterships {
		reason := m.Reason
		if reason == "" {
			reason = "(none)"
		}
		r.StopReasons[strings.TrimPrefix(reason, "masterjob: ")]++
	}
	for _, w := range tl.Writes {
		if w.Accepted {
			r.SinkAccepted++
		} else {
			r.SinkRejected++
		}
	}
	return r
}

// WriteSummary prints the report for people.
func (r *Report) WriteSummary(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("masterjob chaos run %s", r.RunID)
	p("  store:        %s", r.Store)
	p("  seed:         %d", r.Seed)
	p("  instances:    %d, locks: %d", r.Instances, r.Locks)
	p("  timing:       heartbeat %v, tolerance %v, check %v, init delay %v, write every %v, shutdown timeout %v",
		r.Timing.Heartbeat, r.Timing.Tolerance, r.Timing.Check, r.Timing.InitDelay, r.Timing.WriteEvery, r.Timing.ShutdownTimeout)
	mode := "executor (in-process jobs)"
	if r.Runner {
		mode = "runner (`masterjob run`, child under sh -c 'CHILD & wait')"
		if r.DirectChild {
			mode = "runner (`masterjob run`, child run directly)"
		}
	}
	p("  mode:         %s; %.0f%% of jobs slow to stop (up to %v)", mode, 100*r.SlowStop, r.SlowStopMax)
	p("  duration:     %v", r.Duration.Round(time.Millisecond))
	var parts []string
	for _, k := range FaultKinds {
		if n := r.Faults[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	p("  faults:       %d (%s)", r.FaultsTotal, strings.Join(parts, ", "))
	if len(r.Combos) > 0 {
		p("    combos:     %s", countList(r.Combos))
	}
	p("  masterships:  %d (stopped by: %s)", r.Masterships, countList(r.StopReasons))
	p("  sink writes:  %d accepted, %d rejected (%d rejected as late writes of a superseded token)",
		r.SinkAccepted, r.SinkRejected, r.Findings.RejectedLate)
	p("  late writes accepted before the newer master wrote: %d", r.Findings.LateAccepted)
	p("  overlaps excused by SIGSTOP: %d", r.Findings.ExcusedOverlaps)
	p("    paused process ran again after SIGCONT: %s", quantiles(r.Findings.ResumesAfterCont))
	p("    paused job ran on after that:           %s", quantiles(r.Findings.StopsAfterCont))
	if n := r.Findings.NeverRanAfterCont; n > 0 {
		p("    paused process never ran again before its SIGKILL (host starved it; not judged): %d", n)
	}
	if n := r.Findings.SuspendedOverlaps; n > 0 {
		p("  overlaps with a command stopped with its suspended runner (no write after the next master started): %d", n)
	}
	if r.Runner {
		p("  next master after a SIGKILLed runner's command died: %s", quantiles(r.AfterKill))
		p("  last wills owed by SIGKILLed runners: %d, ran %d (%d failed); started after the command died: %s",
			r.Findings.WillsExpected, len(r.Findings.WillStarts), r.Findings.WillsFailed, quantiles(r.Findings.WillStarts))
	}
	p("  max no-master gap: %v overall, %v while enabled with a healthy instance (bound %v)",
		r.Findings.MaxGap.Round(time.Millisecond), r.Findings.MaxEligibleGap.Round(time.Millisecond), r.GapBound)
	if r.StoreBlocked > 0 || strings.HasPrefix(r.Store, "sqlite") {
		p("  SIGSTOPs that caught SQLite's write lock: %d (every instance blocked for %v in total; counted as store outages)",
			r.StoreBlocked, r.StoreBlockedFor.Round(time.Millisecond))
	}
	p("  periods of an instance's own store calls failing (counted as unhealthy): %d; with no fault to explain them: %d, %v in total, longest %v; gaps over the bound they excused: %d",
		r.Unreachable, r.UnprovokedUnreachable, r.UnprovokedFor.Round(time.Millisecond), r.UnprovokedMax.Round(time.Millisecond),
		r.Findings.GapsExcusedByFailingCalls)
	p("  of those a fault explains, failing on after every such fault had ended: %d, for %s", len(r.Overruns), quantiles(r.Overruns))
	if r.LeftToExpire > 0 {
		p("  leases left to expire at the end: %d (the holder's store calls were failing as it shut down, so its release failed too)", r.LeftToExpire)
	}
	p("  acquisitions whose job never reported its start (counted as masters for a lease): %d", r.Findings.UnstartedAcquisitions)
	p("  leases acquired by a check in flight when its instance was killed (learnt from the takeover; counted as masters until the kill): %d", r.Findings.UnreportedAtDeath)
	p("  max job run after disable before told to stop (healthy master): %v", r.Findings.MaxDisableStop.Round(time.Millisecond))
	p("  store-side losses that ended a running job's lease: %d (%d while it was stopping); overlaps they excused: %d",
		r.Findings.StoreLossHits, r.Findings.StoreLossWhileStopping, r.Findings.ExcusedByLoss)
	p("  max job run after a store-side loss (holder able to renew): %v; after the instance reported a lost lease: %v",
		r.Findings.MaxStoreLossStop.Round(time.Millisecond), r.Findings.MaxLossStop.Round(time.Millisecond))
	byKind := map[string]int{}
	for _, v := range r.Violations {
		byKind[v.Kind]++
	}
	if len(r.Violations) == 0 {
		p("  violations:   0")
	} else {
		p("  violations:   %d (%s)", len(r.Violations), countList(byKind))
		for i, v := range r.Violations {
			if i == 50 {
				p("    ... %d more", len(r.Violations)-50)
				break
			}
			lock := ""
			if v.Lock != "" {
				lock = " " + v.Lock
			}
			p("    [%s]%s at %s: %s", v.Kind, lock, ts(v.At), v.Detail)
		}
	}
	if r.Dir != "" {
		p("  work dir:     %s", r.Dir)
	}
	if r.OK() {
		p("RESULT: PASS")
	} else {
		p("RESULT: FAIL")
	}
}

func countList(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// afterKill returns, for each mastership ended by a kill, the time from
// its end to the start of the next mastership of its lock, if any.
func afterKill(ms []Mastership) []time.Duration {
	var out []time.Duration
	for _, m := range ms {
		if m.Reason != "killed" {
			continue
		}
		next := int64(-1)
		for _, n := range ms {
			if n.Lock == m.Lock && n.Start >= m.Stop && (next < 0 || n.Start < next) {
				next = n.Start
			}
		}
		if next >= 0 {
			out = append(out, dur(next-m.Stop))
		}
	}
	return out
}

// quantiles formats the median, p99 and maximum of ds.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("p50 %v, p99 %v, max %v", q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
}

// provokedUntil reports whether a period of failing store calls overlaps
// a fault that explains it: one on the same instance (down, degraded,
// paused), or a store blocked for every instance; and the latest end of
// those faults.
func (tl *Timeline) provokedUntil(u Window) (end int64, ok bool) {
	for _, ws := range [][]Window{tl.Down, tl.Degraded, tl.Stopped} {
		for _, w := range ws {
			if w.Index == u.Index && w.overlaps(u.From, u.To) {
				end, ok = max(end, w.To), true
			}
		}
	}
	for _, w := range tl.StoreBlocked {
		if w.overlaps(u.From, u.To) {
			end, ok = max(end, w.To), true
		}
	}
	return end, ok
}
