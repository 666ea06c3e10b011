//go:build linux

package bench

import (
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
