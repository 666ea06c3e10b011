//go:build linux

package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(s)
	want := Summary{N: 100, Min: time.Millisecond, Median: 50500 * time.Microsecond,
		P90: 90 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond, Mean: 50500 * time.Microsecond}
	if got != want {
		t.Fatalf("Summarize = %+v, want %+v", got, want)
	}
	// Fewer than 100 samples: the nearest-rank p99 is the maximum.
	if got := Summarize(s[:30]); got.P99 != got.Max {
		t.Fatalf("p99 of 30 samples = %v, want the max %v", got.P99, got.Max)
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Fatalf("Summarize(nil) = %+v", got)
	}
}

// TestScaleMarkdownMemoryPerLock: two lock counts of one store in a run give
// the memory per lock as the slope of RSS, and the CPU column its figures.
func TestScaleMarkdownMemoryPerLock(t *testing.T) {
	r := &Report{Scale: []*ScaleResult{
		{Store: "sqlite", Instances: 10, Locks: 1000, Timing: "t", RSS: []int64{30 << 20, 31 << 20}, CPU: []float64{10, 20}, RoundTrips: []float64{1}},
		{Store: "sqlite", Instances: 10, Locks: 11000, Timing: "t", RSS: []int64{40 << 20, 41 << 20}, CPU: []float64{100, 220}, RoundTrips: []float64{1}},
	}}
	var b strings.Builder
	r.scaleMarkdown(&b)
	for _, want := range []string{
		"sqlite: memory per lock 1049 bytes (RSS per instance, max, 31.0 MiB at 1000 locks and 41.0 MiB at 11000)",
		"| 10 / 20; 20 |",
		"| 100 / 220; 20 |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}
