//go:build linux

package bench

import (
	"cmp"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Report is everything one run of masterjob-bench measured.
type Report struct {
	Machine    Machine           `json:"machine"`
	Command    string            `json:"command"`
	Started    time.Time         `json:"started"`
	Elapsed    time.Duration     `json:"elapsed"`
	Results    []*Result         `json:"results"`
	RoundTrips []RoundTripResult `json:"roundTrips"`
	Idle       []*IdleResult     `json:"idle"`
	Scale      []*ScaleResult    `json:"scale,omitempty"`
}

// Targets from the benchmark issue.
const (
	FailoverSlack     = 100 * time.Millisecond // crash failover p99 ≤ lease + this
	HandoffPostgres   = 50 * time.Millisecond  // graceful handoff p99 < this on PostgreSQL
	HandoffSQLite     = time.Second            // and < this on SQLite
	HandoffEtcd       = 25 * time.Millisecond  // p99 ≤ this on etcd (issue 13), and ≤ etcd's own election
	EtcdFailoverRatio = 0.9                    // crash failover p99 on etcd ≤ this × etcd's election's
	SigcontStopTarget = 100 * time.Millisecond // old child gone within this of SIGCONT
)

// HandoffMySQL is the graceful handoff target on MySQL: it has no push, so
// a follower learns of a release at the store's next poll of its
// notification table (every 50 ms by default); the target is PostgreSQL's
// plus that poll. Redis pushes (pub/sub) and has PostgreSQL's.
const HandoffMySQL = HandoffPostgres + 50*time.Millisecond

// ms formats d in milliseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

// busy describes the host's load during a scenario.
func busy(h HostLoad) string {
	return fmt.Sprintf("%.0f %% (iowait %.0f %%, load %.1f)", h.BusyPct, h.IOWaitPct, h.Load1)
}

// p99Ratio returns the ratio of a's p99 to b's and its bootstrap interval;
// ok is false without enough samples for the interval to mean much. The
// resampling is seeded: the same samples give the same interval.
func p99Ratio(a, b []time.Duration) (ratio float64, ci Interval, ok bool) {
	ratio, ci = RatioCI(a, b, 0.99, rand.New(rand.NewPCG(1, 1)))
	return ratio, ci, enough(a, b)
}

// settled reads a target (at most a bound, for each interval: see
// Against) from where its intervals lie: missed if any lies over its
// bound, met if all lie at or under, not settled otherwise, or when there
// were too few samples (!ok) for intervals.
func settled(ok bool, sides ...Side) string {
	switch {
	case !ok:
		return "not settled (too few samples)"
	case slices.Contains(sides, Over):
		return verdict(false)
	case !slices.Contains(sides, Across):
		return verdict(true)
	default:
		return "not settled"
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// Markdown writes the report as Markdown tables.
func (r *Report) Markdown(w io.Writer) {
	defer r.scaleMarkdown(w)
	defer r.stepsMarkdown(w)
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	m := r.Machine
	p("Run of %s, %s, took %s.\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), "`"+r.Command+"`", r.Elapsed.Round(time.Second))
	p("| machine | |\n|---|---|\n")
	p("| CPUs (nproc) | %d |\n| CPU model | %s |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n", m.NProc, m.CPU, m.MemTotal, m.Kernel, m.GoVersion)
	if m.Postgres != "" {
		p("| PostgreSQL | %s |\n", m.Postgres)
	}
	if m.Etcd != "" {
		p("| etcd | %s |\n", m.Etcd)
	}
	if m.Redis != "" {
		p("| Redis | %s |\n", m.Redis)
	}
	if m.MySQL != "" {
		p("| MySQL | %s |\n", m.MySQL)
	}
	p("| SQLite | %s |\n\n", m.SQLite)

	by := func(scenario string) []*Result {
		var out []*Result
		for _, x := range r.Results {
			if x.Scenario == scenario {
				out = append(out, x)
			}
		}
		return out
	}

	if rs := by("exec baseline"); len(rs) > 0 {
		p("### Baseline: process start\n\n| trials | median | p99 | max |\n|---|---|---|---|\n")
		for _, x := range rs {
			s := x.Get(SeriesExec).Summary
			p("| %d | %s | %s | %s |\n", s.N, ms(s.Median), ms(s.P99), ms(s.Max))
		}
		p("\n")
	}

	for _, sc := range []struct{ name, title string }{
		{ScenarioCrash, "### Crash failover (SIGKILL of the master's runner → next child starts)\n\n"},
		{ScenarioTreeCrash, "### Crash failover of the whole tree (SIGKILL of the master's runner and all it started → next child starts)\n\n"},
	} {
		rs := by(sc.name)
		if len(rs) == 0 {
			continue
		}
		p("%s", sc.title)
		p("| store | lease | trials | median | p99 | max | median − lease | p99 − lease | p99 / lease | expiry → start (median / p99 / max) | target p99 ≤ lease + 100 ms | host busy |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range rs {
			s := x.Get(SeriesFailover).Summary
			e := x.Get(SeriesAfterExpiry).Summary
			p("| %s | %s | %d | %s | %s | %s | %s | %s | %.3f | %s / %s / %s | %s | %s |\n", x.Store, x.Lease, s.N,
				ms(s.Median), ms(s.P99), ms(s.Max), ms(s.Median-x.Lease), ms(s.P99-x.Lease),
				float64(s.P99)/float64(x.Lease), ms(e.Median), ms(e.P99), ms(e.Max),
				verdict(s.P99 <= x.Lease+FailoverSlack), busy(x.Host))
		}
		p("\n")
		for _, x := range rs {
			for _, n := range x.Notes {
				p("- %s, %s: %s\n", x.Store, x.Lease, n)
			}
		}
		p("\n")
	}

	if rs := by("graceful handoff"); len(rs) > 0 {
		p("### Graceful handoff (SIGTERM of the master's runner → next child starts)\n\n")
		p("| store | lease | trials | median | p99 | max | SIGTERM → old child exited (median) | old child exited → next start (median / p99) | target | host busy |\n")
		p("|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range rs {
			s := x.Get(SeriesHandoff).Summary
			st := x.Get(SeriesHandoffStop).Summary
			g := x.Get(SeriesHandoffGap).Summary
			target := HandoffPostgres
			switch x.Store {
			case SQLite:
				target = HandoffSQLite
			case Etcd:
				target = HandoffEtcd
			case MySQL:
				target = HandoffMySQL
			}
			goal := fmt.Sprintf("p99 < %s: %s", target, verdict(s.P99 < target))
			if x.Store == EtcdElection {
				goal = "(baseline)"
			}
			p("| %s | %s | %d | %s | %s | %s | %s | %s / %s | %s | %s |\n", x.Store, x.Lease, s.N,
				ms(s.Median), ms(s.P99), ms(s.Max), ms(st.Median), ms(g.Median), ms(g.P99), goal, busy(x.Host))
		}
		p("\n")
	}

	if rs := by("hand-off through the API"); len(rs) > 0 {
		p("### Hand-off through the control API (POST /api/mastercontrols/handoff with \"to\" → next child starts)\n\n")
		p("| store | lease | trials | median | p99 | max | POST → old child exited (median) | old child exited → next start (median / p99) | the request itself (median) | target | host busy |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range rs {
			s := x.Get(SeriesHandoffAPI).Summary
			st := x.Get(SeriesHandoffAPIStop).Summary
			g := x.Get(SeriesHandoffGap).Summary
			c := x.Get(SeriesHandoffAPICall).Summary
			p("| %s | %s | %d | %s | %s | %s | %s | %s / %s | %s | p99 ≤ %s: %s | %s |\n", x.Store, x.Lease, s.N,
				ms(s.Median), ms(s.P99), ms(s.Max), ms(st.Median), ms(g.Median), ms(g.P99), ms(c.Median),
				HandoffPostgres, verdict(s.P99 <= HandoffPostgres), busy(x.Host))
		}
		p("\n")
	}

	if rs := by("disable / enable"); len(rs) > 0 {
		p("### Disable and enable (measured from the store call's return)\n\n")
		p("| store | timing | trials | disable → child exited (median / p99 / max) | enable → child started (median / p99 / max) | the Disable call itself (median) | host busy |\n")
		p("|---|---|---|---|---|---|---|\n")
		for _, x := range rs {
			d := x.Get(SeriesDisable).Summary
			e := x.Get(SeriesEnable).Summary
			c := x.Get(SeriesDisableCall).Summary
			p("| %s | %s | %d | %s / %s / %s | %s / %s / %s | %s | %s |\n", x.Store, x.Timing, d.N,
				ms(d.Median), ms(d.P99), ms(d.Max), ms(e.Median), ms(e.P99), ms(e.Max), ms(c.Median), busy(x.Host))
		}
		p("\n")
	}

	if rs := by("SIGSTOP / SIGCONT of the master"); len(rs) > 0 {
		p("### SIGSTOP of the whole master (runner + child group) beyond the lease, then SIGCONT\n\n")
		p("| store | timing | trials | SIGCONT → old child exited (median / p99 / max) | target ≤ 100 ms | SIGSTOP → other runner's child starts (median / p99) | host busy |\n")
		p("|---|---|---|---|---|---|---|\n")
		for _, x := range rs {
			s := x.Get(SeriesSigcont).Summary
			t := x.Get(SeriesStopTakeover).Summary
			p("| %s | %s | %d | %s / %s / %s | %s | %s / %s | %s |\n", x.Store, x.Timing, s.N,
				ms(s.Median), ms(s.P99), ms(s.Max), verdict(s.P99 <= SigcontStopTarget), ms(t.Median), ms(t.P99), busy(x.Host))
		}
		p("\n")
	}

	r.etcdComparison(p, by)

	if len(r.RoundTrips) > 0 {
		p("### Store round trips of one instance\n\n")
		p("| store | mode | locks | window | round trips | per second | store calls (acquire / renew / release) | client messages | batched renewal (median / p99) | batched check (median / p99) | failed calls / masterships ended | host busy |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.RoundTrips {
			msgs := "-"
			if isEtcd(x.Store) && len(x.Messages) > 0 {
				var parts []string
				for _, k := range []string{"LeaseKeepAlive", "Range", "Txn", "LeaseTimeToLive", "LeaseGrant", "Put", "DeleteRange", "LeaseRevoke", "Watch"} {
					if n := x.Messages[k]; n > 0 {
						parts = append(parts, fmt.Sprintf("%s %d", k, n))
					}
				}
				msgs = strings.Join(parts, ", ")
			} else if len(x.Messages) > 0 {
				var parts []string
				for _, k := range []string{"Q", "P", "B", "D", "E", "S"} {
					if n := x.Messages[k]; n > 0 {
						parts = append(parts, fmt.Sprintf("%s %d", k, n))
					}
				}
				msgs = strings.Join(parts, ", ")
			}
			lat := func(s Summary) string {
				if s.N == 0 {
					return "-"
				}
				return ms(s.Median) + " / " + ms(s.P99)
			}
			p("| %s | %s | %d | %s | %d | %.2f | %d / %d / %d | %s | %s | %s | %d / %d | %s |\n", x.Store, x.Mode, x.Locks, x.Window,
				x.RoundTrips, x.PerSecond(), x.Calls.Acquire, x.Calls.Renew, x.Calls.Release, msgs, lat(x.Renew), lat(x.Check),
				x.Failures, x.Ended, busy(x.Host))
		}
		p("\n")
	}

	if len(r.Idle) > 0 {
		p("### Idle cost of a CLI runner (the runner process, not its child)\n\n")
		p("| store | role | timing | window | CPU (schedstat) | %% of one core | utime+stime (10 ms ticks) | VmRSS | of which its own (RssAnon) | VmHWM | host busy |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.Idle {
			for _, u := range x.Usage {
				p("| %s | %s | %s | %s | %s | %.4f %% | %s | %.1f MiB | %.1f MiB | %.1f MiB | %s |\n", x.Store, u.Role, x.Timing, u.Window,
					ms(u.CPU), u.CPUPercent(), ms(u.Ticks), float64(u.RSS)/1024, float64(u.Anon)/1024, float64(u.HWM)/1024, busy(x.Host))
			}
		}
		p("\n")
	}
}

// etcdComparison writes masterjob on etcd beside etcd's own election, for
// each scenario and lease both were measured at.
func (r *Report) etcdComparison(p func(string, ...any), by func(string) []*Result) {
	pair := func(scenario string) [][2]*Result {
		var out [][2]*Result
		for _, mj := range by(scenario) {
			if mj.Store != Etcd {
				continue
			}
			for _, el := range by(scenario) {
				if el.Store == EtcdElection && el.Lease == mj.Lease {
					out = append(out, [2]*Result{mj, el})
				}
			}
		}
		return out
	}
	fo, tfo, ho, ss := pair(ScenarioCrash), pair(ScenarioTreeCrash), pair("graceful handoff"), pair("SIGSTOP / SIGCONT of the master")
	if len(fo)+len(tfo)+len(ho)+len(ss) == 0 {
		return
	}
	p("### masterjob on etcd beside etcd's own election (same server, same harness, same run)\n\n")
	for _, f := range []struct {
		name  string
		pairs [][2]*Result
	}{{"crash failover", fo}, {"crash failover, whole tree", tfo}} {
		if len(f.pairs) == 0 {
			continue
		}
		p("| %s | lease | masterjob p50 / p99 | etcd election p50 / p99 | p99 ratio masterjob / etcd (95 %% interval) | target ratio ≤ %.1f | masterjob p99 ≤ lease + 100 ms |\n|---|---|---|---|---|---|---|\n", f.name, EtcdFailoverRatio)
		for _, x := range f.pairs {
			mjS, elS := x[0].Get(SeriesFailover), x[1].Get(SeriesFailover)
			m, e := mjS.Summary, elS.Summary
			ratio, ci, ok := p99Ratio(mjS.Samples, elS.Samples)
			p("| | %s | %s / %s | %s / %s | %.3f (%s) | %s | %s |\n", x[0].Lease, ms(m.Median), ms(m.P99), ms(e.Median), ms(e.P99),
				ratio, formatInterval(ci, ok, ratio2), settled(ok, Against(ci, EtcdFailoverRatio)), verdict(m.P99 <= x[0].Lease+FailoverSlack))
		}
		p("\n")
	}
	if len(ho) > 0 {
		p("| graceful handoff | lease | masterjob p50 / p99 (95 %% interval of the p99) | etcd election p50 / p99 | p99 ratio (95 %% interval) | target: p99 ≤ 25 ms and ≤ etcd's |\n|---|---|---|---|---|---|\n")
		for _, x := range ho {
			mjS, elS := x[0].Get(SeriesHandoff), x[1].Get(SeriesHandoff)
			m, e := mjS.Summary, elS.Summary
			ratio, ci, ok := p99Ratio(mjS.Samples, elS.Samples)
			_, own := QuantileCI(mjS.Samples, 0.99, rand.New(rand.NewPCG(1, 1)))
			p("| | %s | %s / %s (%s) | %s / %s | %.2f (%s) | %s |\n", x[0].Lease, ms(m.Median), ms(m.P99), formatInterval(own, ok, msf),
				ms(e.Median), ms(e.P99), ratio, formatInterval(ci, ok, ratio2), settled(ok, Against(own, float64(HandoffEtcd)), Against(ci, 1)))
		}
		p("\n")
	}
	if len(ss) > 0 {
		p("| SIGSTOP past the lease | lease | masterjob: SIGCONT → old child exited (p50 / p99 / max) | etcd election: the same | target ≤ 100 ms (masterjob) |\n|---|---|---|---|---|\n")
		for _, x := range ss {
			m, e := x[0].Get(SeriesSigcont).Summary, x[1].Get(SeriesSigcont).Summary
			p("| | %s | %s / %s / %s | %s / %s / %s | %s |\n", x[0].Lease, ms(m.Median), ms(m.P99), ms(m.Max),
				ms(e.Median), ms(e.P99), ms(e.Max), verdict(m.P99 <= SigcontStopTarget))
		}
		p("\n")
	}
}

// scaleMarkdown writes the scale results.
func (r *Report) scaleMarkdown(w io.Writer) {
	if len(r.Scale) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("\n### Scale: many locks on many instances\n\n")
	p("| store | instances × locks | timing | all mastered after | masterships per instance (min / max, share) | round trips per instance per s (min / max) | RSS per instance (max) | CPU per instance, ms per minute (min / max; max per 1,000 locks) | locks without a master > 5 s while settling (longest) | kill -9: locks | mastered again after (bound) | spread over survivors | masterships that outlived their lease unnoticed | host |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Scale {
		lo, hi := minMaxF(x.RoundTrips)
		clo, chi := minMaxF(x.CPU)
		p("| %s | %d × %d | %s | %s | %d / %d (%d) | %.2f / %.2f | %.1f MiB | %.0f / %.0f; %.0f | %d (%s) | %d | %s (%s) | %d of %d | %d | %s |\n",
			x.Store, x.Instances, x.Locks, x.Timing, ms(x.AllMastered), x.MinHeld, x.MaxHeld, x.Share, lo, hi,
			float64(x.maxRSS())/(1<<20), clo, chi, chi/(float64(x.Locks)/1000), x.Orphaned, ms(x.LongestOrphan),
			x.KilledHeld, ms(x.Refailover), ms(x.FailoverBound),
			x.SpreadOver, x.Survivors, x.Unnoticed, busy(x.Host))
	}
	r.joinMarkdown(w)
	// Memory per lock: the slope of RSS between two lock counts of one
	// store and instance count in this run, which leaves out what an
	// instance uses whatever its locks.
	for i, a := range r.Scale {
		for _, b := range r.Scale[i+1:] {
			if a.Store != b.Store || a.Instances != b.Instances || a.Timing != b.Timing || a.Locks == b.Locks {
				continue
			}
			per := float64(b.maxRSS()-a.maxRSS()) / float64(b.Locks-a.Locks)
			p("\n%s: memory per lock %.0f bytes (RSS per instance, max, %.1f MiB at %d locks and %.1f MiB at %d).\n",
				a.Store, per, float64(a.maxRSS())/(1<<20), a.Locks, float64(b.maxRSS())/(1<<20), b.Locks)
		}
	}
}

// joinMarkdown writes what happened when a new instance joined the
// survivors of each scale run.
func (r *Report) joinMarkdown(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	head := false
	for _, x := range r.Scale {
		j := x.Join
		if j == nil {
			continue
		}
		if !head {
			head = true
			p("\nA new instance joins the survivors of the kill -9 once they have settled (at most 5 check intervals); every lock is read once a second.\n\n")
			p("| store | instances × locks | survivors settled after | new instance within its share after (bound) | its masterships at the end (share, slack) | locks moved (more than once) | locks without a master > 5 s while joining (longest) |\n")
			p("|---|---|---|---|---|---|---|\n")
		}
		reached := "not within the bound"
		if j.Reached > 0 {
			reached = ms(j.Reached)
		}
		p("| %s | %d × %d | %s | %s (%s) | %d (%d, %d) | %d (%d) | %d (%s) |\n",
			x.Store, x.Instances, x.Locks, ms(j.Settled), reached, ms(j.Bound), j.Held, j.Share, j.Slack,
			j.Moved, j.MovedTwice, j.Orphaned, ms(j.LongestOrphan))
	}
}

// maxRSS returns the largest RSS of x's instances.
func (x *ScaleResult) maxRSS() int64 {
	var rss int64
	for _, v := range x.RSS {
		rss = max(rss, v)
	}
	return rss
}

func minMaxF(v []float64) (lo, hi float64) {
	for i, x := range v {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

// stepsMarkdown writes the step-by-step breakdown of traced hand-offs.
func (r *Report) stepsMarkdown(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	for _, x := range r.Results {
		if len(x.Steps) == 0 {
			continue
		}
		p("\n### %s step by step: %s, %s (%d trials)\n\n", x.Scenario, x.Store, x.Timing, x.Trials)
		p("Each mark's time since the signal to the master's runner (SIGTERM for a hand-off, SIGKILL for a crash), on CLOCK_MONOTONIC (the processes' trace marks, the child's own report), ordered by median; the step is the gap from the previous row's median.\n\n")
		p("| mark | since the signal, median | p99 | step | trials |\n|---|---|---|---|---|\n")
		steps := slices.Clone(x.Steps)
		slices.SortStableFunc(steps, func(a, b StepSeries) int { return cmp.Compare(a.Summary.Median, b.Summary.Median) })
		var prev time.Duration
		for _, st := range steps {
			if len(st.Samples) == 0 {
				continue
			}
			p("| %s | %s | %s | %s | %d |\n", st.Step, ms(st.Summary.Median), ms(st.Summary.P99), ms(st.Summary.Median-prev), len(st.Samples))
			prev = st.Summary.Median
		}
		for _, st := range x.Steps {
			if len(st.Samples) == 0 && x.Scenario == "graceful handoff" && !strings.HasPrefix(st.Step, "last will") {
				p("| %s | (no mark) | | | 0 |\n", st.Step)
			}
		}
	}
}
