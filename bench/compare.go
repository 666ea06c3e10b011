//go:build linux

package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Round is one run of masterjob-bench in a comparison: the build it
// measured, the round it belongs to, and what it measured.
type Round struct {
	Build  string
	Round  int
	Report *Report
}

// roundFile is the name of a round's JSON report: BUILD-ROUND.json.
var roundFile = regexp.MustCompile(`^(.+)-([0-9]+)\.json$`)

// RoundFile returns the name of the JSON report of build's round r in a
// comparison's directory.
func RoundFile(build string, r int) string { return fmt.Sprintf("%s-%d.json", build, r) }

// LoadRounds reads the reports of a comparison from dir (the files named
// by RoundFile), ordered by round and build.
func LoadRounds(dir string) ([]Round, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []Round
	for _, e := range entries {
		m := roundFile.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, Round{Build: m[1], Round: n, Report: &rep})
	}
	slices.SortFunc(out, func(a, b Round) int {
		if a.Round != b.Round {
			return a.Round - b.Round
		}
		return strings.Compare(a.Build, b.Build)
	})
	return out, nil
}

// seriesKey names one measured quantity across rounds and builds.
type seriesKey struct {
	scenario string
	lease    time.Duration
	series   string
}

// pooled is one series of one store and build, round by round.
type pooled struct {
	build, store string
	rounds       map[int][]time.Duration
}

func (p *pooled) all() []time.Duration {
	var out []time.Duration
	for _, r := range slices.Sorted(maps.Keys(p.rounds)) {
		out = append(out, p.rounds[r]...)
	}
	return out
}

// Comparison is the pooled view of the rounds of a comparison.
type Comparison struct {
	keys   []seriesKey
	series map[seriesKey][]*pooled // in the order builds and stores appear
	builds []string
	rounds []int
	// The traced hand-offs' marks (Result.Steps), by scenario and lease.
	stepKeys []seriesKey // series unset
	steps    map[seriesKey][]*pooledSteps
}

// pooledSteps is the traced marks of one build and store: each mark's
// times since the signal, every round's pooled.
type pooledSteps struct {
	build, store string
	marks        []string
	samples      map[string][]time.Duration
}

// Pool gathers the samples of rounds by series, build and store.
func Pool(rounds []Round) *Comparison {
	c := &Comparison{series: map[seriesKey][]*pooled{}, steps: map[seriesKey][]*pooledSteps{}}
	for _, r := range rounds {
		if !slices.Contains(c.builds, r.Build) {
			c.builds = append(c.builds, r.Build)
		}
		if !slices.Contains(c.rounds, r.Round) {
			c.rounds = append(c.rounds, r.Round)
		}
		for _, res := range r.Report.Results {
			for _, s := range res.Series {
				c.add(seriesKey{scenario: res.Scenario, lease: res.Lease, series: s.Name}, r, res.Store, s.Samples...)
			}
			c.addSteps(seriesKey{scenario: res.Scenario, lease: res.Lease}, r.Build, res.Store, res.Steps)
		}
		// An idle run gives one figure per role: its CPU, scaled to a
		// minute, is a sample of that round.
		for _, idle := range r.Report.Idle {
			for _, u := range idle.Usage {
				if u.Window > 0 {
					perMinute := time.Duration(float64(u.CPU) * float64(time.Minute) / float64(u.Window))
					c.add(seriesKey{scenario: IdleScenario, series: "CPU per minute of the " + u.Role + "'s runner"}, r, idle.Store, perMinute)
				}
			}
		}
	}
	slices.Sort(c.rounds)
	return c
}

// IdleScenario names the idle runs' figures in a Comparison.
const IdleScenario = "idle, default timings"

// add appends samples of store to the series k of round r.
func (c *Comparison) add(k seriesKey, r Round, store string, samples ...time.Duration) {
	p := column(c.series, &c.keys, k, r.Build, store, func() *pooled {
		return &pooled{build: r.Build, store: store, rounds: map[int][]time.Duration{}}
	})
	p.rounds[r.Round] = append(p.rounds[r.Round], samples...)
}

// column returns the entry of build and store under k in byKey, made by
// newEntry (and k added to keys, in order of appearance) when missing.
func column[T interface{ of() (build, store string) }](byKey map[seriesKey][]T, keys *[]seriesKey, k seriesKey,
	build, store string, newEntry func() T) T {
	list, ok := byKey[k]
	if !ok {
		*keys = append(*keys, k)
	}
	i := slices.IndexFunc(list, func(e T) bool { b, s := e.of(); return b == build && s == store })
	if i < 0 {
		list = append(list, newEntry())
		i = len(list) - 1
		byKey[k] = list
	}
	return list[i]
}

func (p *pooled) of() (build, store string)      { return p.build, p.store }
func (p *pooledSteps) of() (build, store string) { return p.build, p.store }

// addSteps pools the marks of a traced result.
func (c *Comparison) addSteps(k seriesKey, build, store string, steps []StepSeries) {
	if !slices.ContainsFunc(steps, func(s StepSeries) bool { return len(s.Samples) > 0 }) {
		return
	}
	ps := column(c.steps, &c.stepKeys, k, build, store, func() *pooledSteps {
		return &pooledSteps{build: build, store: store, samples: map[string][]time.Duration{}}
	})
	for _, st := range steps {
		if len(st.Samples) == 0 {
			continue
		}
		if !slices.Contains(ps.marks, st.Step) {
			ps.marks = append(ps.marks, st.Step)
		}
		ps.samples[st.Step] = append(ps.samples[st.Step], st.Samples...)
	}
}

// stepsMarkdown writes, for each traced scenario, one table of every
// mark's median time since the signal, pooled, a column per build and
// store, in the order of the medians of the column with the most marks.
func (c *Comparison) stepsMarkdown(w io.Writer) {
	for _, k := range c.stepKeys {
		cols := c.steps[k]
		fmt.Fprintf(w, "### %s, lease %s, step by step\n\n", k.scenario, k.lease)
		fmt.Fprintf(w, "Each mark's median time since the signal to the master's runner, pooled over the rounds (trials with the mark in parentheses).\n\n| mark |")
		for _, col := range cols {
			fmt.Fprintf(w, " %s %s |", col.build, col.store)
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(cols)))
		var marks []string
		for _, col := range cols {
			for _, m := range col.marks {
				if !slices.Contains(marks, m) {
					marks = append(marks, m)
				}
			}
		}
		// By the medians of the column with the most marks; a mark it
		// lacks, by the first column that has it.
		primary := cols[0]
		for _, col := range cols {
			if len(col.marks) > len(primary.marks) {
				primary = col
			}
		}
		at := func(m string) time.Duration {
			if x := primary.samples[m]; len(x) > 0 {
				return Summarize(x).Median
			}
			for _, col := range cols {
				if x := col.samples[m]; len(x) > 0 {
					return Summarize(x).Median
				}
			}
			return 0
		}
		slices.SortStableFunc(marks, func(a, b string) int { return cmp.Compare(at(a), at(b)) })
		for _, m := range marks {
			fmt.Fprintf(w, "| %s |", m)
			for _, col := range cols {
				if x := col.samples[m]; len(x) > 0 {
					fmt.Fprintf(w, " %s (%d) |", ms(Summarize(x).Median), len(x))
				} else {
					fmt.Fprintf(w, " – |")
				}
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
}

// Builds returns the builds of the comparison, in the order they appear
// (by round, then name).
func (c *Comparison) Builds() []string { return slices.Clone(c.builds) }

// find returns the pooled series of build and store under k, or nil.
func (c *Comparison) find(k seriesKey, build, store string) *pooled {
	for _, p := range c.series[k] {
		if p.build == build && p.store == store {
			return p
		}
	}
	return nil
}

// Markdown writes the comparison: for every series, each build and store
// pooled over the rounds (median and p99, each with a bootstrap confidence
// interval); where the same runs measured etcd's election, the ratios to it,
// round by round and pooled; where there are several builds, each
// build's ratios to ref (the first build when ref is empty); and for traced
// runs (-trace), each mark's pooled median, a column per build and store. The bootstrap
// draws from a generator seeded with seed, so the same files give the same
// report.
func (c *Comparison) Markdown(w io.Writer, ref string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	if ref == "" && len(c.builds) > 0 {
		ref = c.builds[0]
	}
	p("Builds: %s (ratios between builds are to %s); rounds: %d. Medians and p99 (nearest rank) pooled over the rounds; "+
		"intervals are %.0f %% percentile-bootstrap intervals (%d resamples, seed %d), given for series of %d samples or more.\n\n",
		strings.Join(c.builds, ", "), ref, len(c.rounds), Confidence*100, Resamples, seed, MinIntervalSamples)
	for _, k := range c.keys {
		if !slices.ContainsFunc(c.series[k], func(s *pooled) bool { return len(s.all()) > 0 }) {
			continue // a series the runs declared but did not measure
		}
		title := k.scenario
		if k.lease > 0 {
			title += ", lease " + k.lease.String()
		}
		p("### %s: %s\n\n", title, k.series)
		p("| build | store | trials | median (95 %% CI) | p99 (95 %% CI) | median per round |\n|---|---|---|---|---|---|\n")
		for _, s := range c.series[k] {
			all := s.all()
			if len(all) == 0 {
				continue
			}
			med, medCI := QuantileCI(all, 0.5, rng)
			p99, p99CI := QuantileCI(all, 0.99, rng)
			p("| %s | %s | %d | %s (%s) | %s (%s) | %s |\n", s.build, s.store, len(all), ms(med), formatInterval(medCI, enough(all), msf),
				ms(p99), formatInterval(p99CI, enough(all), msf), c.perRound(s))
		}
		p("\n")
		c.electionRatios(w, k, rng)
		c.buildRatios(w, k, ref, rng)
	}
	c.stepsMarkdown(w)
}

// perRound lists s's median in each round of the comparison ("–" where
// that round did not measure it).
func (c *Comparison) perRound(s *pooled) string {
	out := ""
	for i, r := range c.rounds {
		if i > 0 {
			out += ", "
		}
		if x := s.rounds[r]; len(x) > 0 {
			out += ms(Summarize(x).Median)
		} else {
			out += "–"
		}
	}
	return out
}

// electionRatios writes, for each store measured beside etcd's election in
// the same runs, its ratios to the election's figures.
func (c *Comparison) electionRatios(w io.Writer, k seriesKey, rng *rand.Rand) {
	header := false
	for _, s := range c.series[k] {
		el := c.find(k, s.build, EtcdElection)
		if s.store == EtcdElection || el == nil || !ratioable(s.all(), el.all()) {
			continue
		}
		if !header {
			fmt.Fprintf(w, "| build | store | median / election's, per round | pooled median / election's (95 %% CI) | pooled p99 / election's (95 %% CI) | p99 at or under the election's? |\n|---|---|---|---|---|---|\n")
			header = true
		}
		per := ""
		for i, r := range c.rounds {
			if i > 0 {
				per += ", "
			}
			a, b := s.rounds[r], el.rounds[r]
			if len(a) == 0 || len(b) == 0 {
				per += "–"
				continue
			}
			per += fmt.Sprintf("%.2f", float64(Summarize(a).Median)/float64(Summarize(b).Median))
		}
		cells, pci, ok := pooledRatios(s.all(), el.all(), rng)
		verdict := "too few samples"
		if ok {
			verdict = AtMostOne(pci)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", s.build, s.store, per, cells, verdict)
	}
	if header {
		fmt.Fprintln(w)
	}
}

// buildRatios writes, for each build other than ref, its ratios to ref's
// figures, store by store.
func (c *Comparison) buildRatios(w io.Writer, k seriesKey, ref string, rng *rand.Rand) {
	header := false
	for _, s := range c.series[k] {
		base := c.find(k, ref, s.store)
		if s.build == ref || base == nil || !ratioable(s.all(), base.all()) {
			continue
		}
		if !header {
			fmt.Fprintf(w, "| build | store | pooled median / %s's (95 %% CI) | pooled p99 / %s's (95 %% CI) | rounds with a lower median than %s |\n|---|---|---|---|---|\n", ref, ref, ref)
			header = true
		}
		lower, both := 0, 0
		for _, r := range c.rounds {
			a, b := s.rounds[r], base.rounds[r]
			if len(a) == 0 || len(b) == 0 {
				continue
			}
			both++
			if Summarize(a).Median < Summarize(b).Median {
				lower++
			}
		}
		cells, _, _ := pooledRatios(s.all(), base.all(), rng)
		fmt.Fprintf(w, "| %s | %s | %s | %d of %d |\n", s.build, s.store, cells, lower, both)
	}
	if header {
		fmt.Fprintln(w)
	}
}

// ratioable reports whether the ratios of a's and b's quantiles mean
// anything: both have samples, all of them positive (a series that can be
// zero or negative, such as a failover less the lease, has no ratio).
func ratioable(a, b []time.Duration) bool {
	positive := func(s []time.Duration) bool {
		return len(s) > 0 && !slices.ContainsFunc(s, func(d time.Duration) bool { return d <= 0 })
	}
	return positive(a) && positive(b)
}

// AtMostOne says what a confidence interval of a ratio says of "at most
// 1": "at or under" when the whole interval is, "over" when it lies
// entirely above 1, and "not settled" (by the samples) otherwise.
func AtMostOne(ci Interval) string {
	switch Against(ci, 1) {
	case AtOrUnder:
		return "at or under"
	case Over:
		return "over"
	default:
		return "not settled"
	}
}

// pooledRatios returns the cells "median ratio (interval) | p99 ratio
// (interval)" of a's figures over b's, and the p99 ratio's interval, and
// whether there were enough samples for intervals.
func pooledRatios(a, b []time.Duration, rng *rand.Rand) (cells string, p99CI Interval, ok bool) {
	mr, mci := RatioCI(a, b, 0.5, rng)
	pr, pci := RatioCI(a, b, 0.99, rng)
	ok = enough(a, b)
	return fmt.Sprintf("%.2f (%s) | %.2f (%s)", mr, formatInterval(mci, ok, ratio2), pr, formatInterval(pci, ok, ratio2)), pci, ok
}

// msf formats nanoseconds held in a float64 as ms does, without the unit.
func msf(ns float64) string { return strings.TrimSuffix(ms(time.Duration(ns)), " ms") }
