//go:build linux

package bench

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spread returns n samples around center: center × (0.9 … 1.1), evenly.
func spread(n int, center time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = center * time.Duration(900+200*i/(n-1)) / 1000
	}
	return out
}

func TestQuantileCI(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	same := []time.Duration{7, 7, 7, 7, 7}
	if q, ci := QuantileCI(same, 0.99, rng); q != 7 || ci != (Interval{7, 7}) {
		t.Errorf("constant sample: %v %v, want 7 [7, 7]", q, ci)
	}
	s := spread(201, 10*time.Millisecond)
	med, ci := QuantileCI(s, 0.5, rng)
	if med != 10*time.Millisecond || !ci.Contains(float64(med)) {
		t.Errorf("median %v, interval %v: want 10ms inside it", med, ci)
	}
	if ci.Hi-ci.Lo <= 0 || ci.Hi-ci.Lo > float64(time.Millisecond) {
		t.Errorf("median's interval %v: want a width above 0 and under 1 ms for 201 samples spread ±10 %%", ci)
	}
	if q, ci := QuantileCI(nil, 0.5, rng); q != 0 || ci != (Interval{}) {
		t.Errorf("no samples: %v %v", q, ci)
	}
}

func TestRatioCISettlesOnlyWhatTheSamplesShow(t *testing.T) {
	base := spread(300, 10*time.Millisecond)
	for _, tc := range []struct {
		name   string
		num    []time.Duration
		q      float64
		ratio  float64
		answer string
	}{
		{"30 % slower", spread(300, 13*time.Millisecond), 0.5, 1.3, "over"},
		{"30 % faster", spread(300, 7*time.Millisecond), 0.5, 0.7, "at or under"},
		{"the same", base, 0.5, 1, "not settled"},
		{"the same, at the p99", base, 0.99, 1, "not settled"},
		{"30 % slower at the p99", spread(300, 13*time.Millisecond), 0.99, 1.3, "over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			r, ci := RatioCI(tc.num, base, tc.q, rng)
			if diff := r - tc.ratio; diff < -0.01 || diff > 0.01 {
				t.Errorf("ratio %.3f, want %.2f", r, tc.ratio)
			}
			if !ci.Contains(r) {
				t.Errorf("interval %v does not contain the ratio %.3f", ci, r)
			}
			if got := AtMostOne(ci); got != tc.answer {
				t.Errorf("interval %v says %q, want %q", ci, got, tc.answer)
			}
		})
	}
}

func TestRatioCIIsReproducible(t *testing.T) {
	a, b := spread(50, 9*time.Millisecond), spread(50, 10*time.Millisecond)
	_, ci1 := RatioCI(a, b, 0.99, rand.New(rand.NewPCG(5, 6)))
	_, ci2 := RatioCI(a, b, 0.99, rand.New(rand.NewPCG(5, 6)))
	if ci1 != ci2 {
		t.Errorf("same seed, different intervals: %v and %v", ci1, ci2)
	}
}

// report returns a Report of one hand-off result per store, each with the
// given samples.
func report(samples map[string][]time.Duration) *Report {
	r := &Report{}
	for _, store := range []string{EtcdElection, "etcd", "postgres"} {
		s, ok := samples[store]
		if !ok {
			continue
		}
		res := &Result{Store: store, Scenario: "graceful handoff", Lease: 2 * time.Second}
		res.add(SeriesHandoff, s)
		r.Results = append(r.Results, res)
	}
	return r
}

func ms1(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestComparisonPoolsRoundsAndBuilds(t *testing.T) {
	dir := t.TempDir()
	write := func(build string, round int, r *Report) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, RoundFile(build, round)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Round 1: A's etcd at 1.5 × the election, B's at 1.0 ×; round 2: A's
	// at 2 ×, B's at 3 × (B lower in one round of two).
	write("A", 1, report(map[string][]time.Duration{EtcdElection: ms1(10, 10, 10), "etcd": ms1(15, 15, 15)}))
	write("B", 1, report(map[string][]time.Duration{EtcdElection: ms1(10, 10, 10), "etcd": ms1(10, 10, 10)}))
	write("B", 2, report(map[string][]time.Duration{EtcdElection: ms1(10, 10, 10), "etcd": ms1(30, 30, 30)}))
	write("A", 2, report(map[string][]time.Duration{EtcdElection: ms1(10, 10, 10), "etcd": ms1(20, 20, 20), "postgres": ms1(5)}))
	// Not a round's report: ignored.
	if err := os.WriteFile(filepath.Join(dir, "notes.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}

	rounds, err := LoadRounds(dir)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range rounds {
		order = append(order, r.Build+"-"+string(rune('0'+r.Round)))
	}
	if got := strings.Join(order, " "); got != "A-1 B-1 A-2 B-2" {
		t.Fatalf("rounds read in the order %s, want A-1 B-1 A-2 B-2", got)
	}
	c := Pool(rounds)
	var buf bytes.Buffer
	c.Markdown(&buf, "A", 1)
	out := buf.String()
	for _, want := range []string{
		"### graceful handoff, lease 2s: " + SeriesHandoff,
		// A's etcd pooled: 15, 15, 15, 20, 20, 20 → median 17.5 ms; its
		// medians per round.
		"| A | etcd | 6 | 17.5 ms (",
		"| 15.0 ms, 20.0 ms |",
		// postgres ran in round 2 only.
		"| A | postgres | 1 | 5.00 ms (–) | 5.00 ms (–) | –, 5.00 ms |",
		// Ratios to the election of the same build's runs, per round.
		"| A | etcd | 1.50, 2.00 | 1.75 (",
		"| B | etcd | 1.00, 3.00 | 2.00 (",
		// B against A: etcd's pooled median 20 against 17.5; lower in 1 round of 2.
		"| B | etcd | 1.14 (",
		"| 1 of 2 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// The election is compared with itself nowhere, and postgres has no
	// B to compare with.
	if strings.Contains(out, "| A | etcd-election | 1.00") || strings.Contains(out, "| B | postgres |") {
		t.Errorf("report compares what it should not:\n%s", out)
	}
	var again bytes.Buffer
	Pool(rounds).Markdown(&again, "A", 1)
	if again.String() != out {
		t.Error("the same files and seed gave two different reports")
	}
}

func TestComparisonPoolsIdleCPUPerMinute(t *testing.T) {
	idle := func(store string, master, follower time.Duration) *IdleResult {
		return &IdleResult{Store: store, Usage: []Usage{
			{Role: "master", Window: 30 * time.Second, CPU: master},
			{Role: "follower", Window: 30 * time.Second, CPU: follower},
		}}
	}
	var rounds []Round
	for r, pg := range []time.Duration{10 * time.Millisecond, 12 * time.Millisecond} {
		rounds = append(rounds, Round{Build: "A", Round: r + 1, Report: &Report{Idle: []*IdleResult{
			idle(EtcdElection, 20*time.Millisecond, 20*time.Millisecond),
			idle("postgres", pg, 2*time.Millisecond),
		}}})
	}
	var buf bytes.Buffer
	Pool(rounds).Markdown(&buf, "", 1)
	out := buf.String()
	for _, want := range []string{
		"### " + IdleScenario + ": CPU per minute of the master's runner",
		// 10 and 12 ms in 30 s: 20 and 24 ms a minute.
		"| A | postgres | 2 | 22.0 ms (",
		"| 20.0 ms, 24.0 ms |",
		// Against the election's 40 ms a minute in each round.
		"| A | postgres | 0.50, 0.60 | 0.55 (",
		"### " + IdleScenario + ": CPU per minute of the follower's runner",
		"| A | postgres | 0.10, 0.10 | 0.10 (–) | 0.10 (–) | too few samples |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestComparisonGivesIntervalsFromTenSamples(t *testing.T) {
	rounds := []Round{{Build: "A", Round: 1, Report: report(map[string][]time.Duration{
		EtcdElection: spread(MinIntervalSamples, 10*time.Millisecond),
		"etcd":       spread(MinIntervalSamples, 20*time.Millisecond),
	})}}
	var buf bytes.Buffer
	Pool(rounds).Markdown(&buf, "", 1)
	out := buf.String()
	for _, want := range []string{
		"| A | etcd | 10 | 20.0 ms (18.", // a median interval, in ms
		"| A | etcd | 2.00 | 2.00 (1.",   // the ratio's interval
		"| over |",                       // twice as slow at the p99, beyond doubt
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestComparisonPoolsTracedSteps(t *testing.T) {
	traced := func(store string, steps map[string][]time.Duration) *Result {
		res := &Result{Store: store, Scenario: "graceful handoff", Lease: 2 * time.Second}
		for _, name := range []string{"child reaped", "release sent", "given lease read: sent"} {
			res.Steps = append(res.Steps, StepSeries{Step: name, Samples: steps[name]})
		}
		return res
	}
	var rounds []Round
	for r := 1; r <= 2; r++ {
		rounds = append(rounds, Round{Build: "A", Round: r, Report: &Report{Results: []*Result{
			// The election's marks in another order than etcd's, which has
			// more marks and orders the table.
			traced(EtcdElection, map[string][]time.Duration{"child reaped": ms1(2), "release sent": ms1(1.5)}),
			traced("etcd", map[string][]time.Duration{"child reaped": ms1(2.5 + float64(r)), "release sent": ms1(4, 6), "given lease read: sent": ms1(7)}),
		}}})
	}
	var buf bytes.Buffer
	Pool(rounds).Markdown(&buf, "", 1)
	out := buf.String()
	want := "### graceful handoff, lease 2s, step by step\n\n" +
		"Each mark's median time since the signal to the master's runner, pooled over the rounds (trials with the mark in parentheses).\n\n" +
		"| mark | A etcd-election | A etcd |\n|---|---|---|\n" +
		"| child reaped | 2.00 ms (2) | 4.00 ms (2) |\n" +
		"| release sent | 1.50 ms (2) | 5.00 ms (4) |\n" +
		"| given lease read: sent | – | 7.00 ms (2) |\n"
	if !strings.Contains(out, want) {
		t.Errorf("report lacks\n%s\nin\n%s", want, out)
	}
}

func TestComparisonLeavesOutWhatHasNoRatio(t *testing.T) {
	res := func(store string, lessLease, floor []time.Duration) *Result {
		r := &Result{Store: store, Scenario: "crash failover", Lease: 2 * time.Second}
		r.add("failover − lease", lessLease)
		r.add("never measured", nil)
		r.add("failover", floor)
		return r
	}
	rounds := []Round{{Build: "A", Round: 1, Report: &Report{Results: []*Result{
		res(EtcdElection, ms1(-100, 300), ms1(1900, 2300)),
		res("etcd", ms1(50, 250), ms1(2050, 2250)),
	}}}}
	var buf bytes.Buffer
	Pool(rounds).Markdown(&buf, "", 1)
	out := buf.String()
	if !strings.Contains(out, "| A | etcd | 1.02 | 1.02 (–) | 0.98 (–) |") {
		t.Errorf("no ratio for the positive series:\n%s", out)
	}
	if strings.Contains(out, "never measured") {
		t.Errorf("a series with no sample is reported:\n%s", out)
	}
	if i := strings.Index(out, "failover − lease"); i < 0 || strings.Contains(out[i:strings.Index(out, "### crash failover, lease 2s: failover\n")], "election's") {
		t.Errorf("a ratio of series that can be negative is reported:\n%s", out)
	}
}

func TestEtcdComparisonSaysWhatOneRunSettles(t *testing.T) {
	// The series the run's report reads besides the compared one.
	others := map[string][]string{
		SeriesHandoff:  {SeriesHandoffStop, SeriesHandoffGap},
		SeriesFailover: {SeriesAfterExpiry},
	}
	pair := func(scenario, series string, mj, el []time.Duration) []*Result {
		var out []*Result
		for _, x := range []struct {
			store   string
			samples []time.Duration
		}{{Etcd, mj}, {EtcdElection, el}} {
			r := &Result{Store: x.store, Scenario: scenario, Lease: 2 * time.Second}
			r.add(series, x.samples)
			for _, o := range others[series] {
				r.add(o, x.samples)
			}
			out = append(out, r)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		mj, el   []time.Duration
		verdict  string
		interval string
	}{
		{"faster and under 25 ms", spread(100, 10*time.Millisecond), spread(100, 16*time.Millisecond), "| met |", "0.62 (0.6"},
		{"the same", spread(100, 15*time.Millisecond), spread(100, 15*time.Millisecond), "| not settled |", "1.00 (0.9"},
		{"slower", spread(100, 20*time.Millisecond), spread(100, 10*time.Millisecond), "| **missed** |", "2.00 (1.9"},
		{"over 25 ms, though faster", spread(100, 30*time.Millisecond), spread(100, 40*time.Millisecond), "| **missed** |", "0.75 (0.7"},
		{"too few", spread(5, 10*time.Millisecond), spread(5, 16*time.Millisecond), "| not settled (too few samples) |", "(too few samples)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{Results: pair("graceful handoff", SeriesHandoff, tc.mj, tc.el)}
			var buf bytes.Buffer
			r.Markdown(&buf)
			out := buf.String()
			i := strings.Index(out, "| graceful handoff | lease |")
			if i < 0 {
				t.Fatalf("no comparison table:\n%s", out)
			}
			row := out[i:]
			row = row[strings.Index(row, "| | 2s |"):]
			row = row[:strings.Index(row, "\n")]
			if !strings.HasSuffix(row, tc.verdict) || !strings.Contains(row, tc.interval) {
				t.Errorf("row %q: want the verdict %q and %q", row, tc.verdict, tc.interval)
			}
		})
	}
	// The crash failover's ratio against 0.9.
	r := &Report{Results: pair(ScenarioCrash, SeriesFailover, spread(40, 2000*time.Millisecond), spread(40, 2100*time.Millisecond))}
	var buf bytes.Buffer
	r.Markdown(&buf)
	if !strings.Contains(buf.String(), "| **missed** |") || !strings.Contains(buf.String(), "0.952 (0.9") {
		t.Errorf("a ratio of 0.95 with a narrow interval is not reported missed against 0.9:\n%s", buf.String())
	}
}
