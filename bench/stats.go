//go:build linux

package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a sample of durations.
type Summary struct {
	N      int           `json:"n"`
	Min    time.Duration `json:"min"`
	Median time.Duration `json:"median"`
	P90    time.Duration `json:"p90"`
	P99    time.Duration `json:"p99"`
	Max    time.Duration `json:"max"`
	Mean   time.Duration `json:"mean"`
}

// Summarize returns the summary of samples. Percentiles use the nearest-rank
// method: with fewer than 100 samples the 99th percentile is the maximum.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		N:      len(s),
		Min:    s[0],
		Median: median(s),
		P90:    nearestRank(s, 0.90),
		P99:    nearestRank(s, 0.99),
		Max:    s[len(s)-1],
		Mean:   sum / time.Duration(len(s)),
	}
}

// median of sorted s: the mean of the two middle values for an even count.
func median(s []time.Duration) time.Duration {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// nearestRank returns the p-quantile of sorted s: the smallest value with at
// least p of the sample at or below it.
func nearestRank(s []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// shift returns samples each minus d.
func shift(samples []time.Duration, d time.Duration) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = s - d
	}
	return out
}
