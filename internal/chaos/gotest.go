//go:build linux

package chaos

import (
	"bytes"
	"cmp"
	"testing"
)

// RunT runs cfg inside a Go test, as every store's chaos test does: it
// logs the driver's log when the test fails and the summary under title,
// and fails the test on a violation, on fewer faults than asked, or when
// no mastership or write was seen (a run that tested nothing).
func RunT(t testing.TB, cfg Config, title string) *Report {
	t.Helper()
	var log bytes.Buffer
	if cfg.Log == nil {
		cfg.Log = &log
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("driver log:\n%s", log.String())
			}
		})
	}
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	t.Logf("%s:\n%s", title, sum.String())
	if !rep.OK() {
		t.Errorf("%d violations (seed %d); work dir kept: %s", len(rep.Violations), rep.Seed, rep.Dir)
	}
	if rep.FaultsTotal != cfg.Faults {
		t.Errorf("injected %d faults, want %d", rep.FaultsTotal, cfg.Faults)
	}
	if rep.SinkAccepted == 0 || rep.Masterships == 0 {
		t.Errorf("no mastership or write seen: %d masterships, %d writes", rep.Masterships, rep.SinkAccepted)
	}
	return rep
}

// DefaultRunnerFaults is how many faults RunRunnerT injects when the
// caller's flag asks for none.
const DefaultRunnerFaults = 15

// RunRunnerT runs cfg again in runner mode, as an engine's chaos test does
// after its executor run: `masterjob run` runners (the test binary, whose
// TestMain or init calls RunIfInstance) with a child command each, on one
// lock, faults faults (DefaultRunnerFaults when 0), in a work directory of
// its own when cfg names one.
func RunRunnerT(t testing.TB, cfg Config, faults int, title string) *Report {
	t.Helper()
	cfg.Runner, cfg.Locks = true, 1
	cfg.Faults = cmp.Or(faults, DefaultRunnerFaults)
	if cfg.Dir != "" {
		cfg.Dir += "-runner"
	}
	return RunT(t, cfg, title+", runner mode")
}
