//go:build linux

package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
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

// quantile returns the q-quantile of sorted s as Summarize computes it:
// the median for q = 0.5, the nearest rank otherwise.
func quantile(s []time.Duration, q float64) time.Duration {
	if q == 0.5 {
		return median(s)
	}
	return nearestRank(s, q)
}

// Interval is a confidence interval [Lo, Hi].
type Interval struct {
	Lo, Hi float64
}

// Contains reports whether x lies in the interval.
func (i Interval) Contains(x float64) bool { return i.Lo <= x && x <= i.Hi }

// Bootstrap settings: the number of resamples, and the confidence of the
// intervals (95 %, the 2.5th to the 97.5th percentile of the resampled
// statistic).
const (
	Resamples  = 2000
	Confidence = 0.95
)

// QuantileCI returns the q-quantile of samples (as Summarize computes it)
// and a percentile-bootstrap confidence interval of it, from Resamples
// resamples drawn with rng. With few samples an extreme quantile's interval
// is wide, which is the point: it says how little one run can tell.
func QuantileCI(samples []time.Duration, q float64, rng *rand.Rand) (time.Duration, Interval) {
	if len(samples) == 0 {
		return 0, Interval{}
	}
	s := slices.Sorted(slices.Values(samples))
	buf := make([]time.Duration, len(s))
	return quantile(s, q), bootstrap(func() float64 {
		resample(buf, s, rng)
		return float64(quantile(buf, q))
	})
}

// RatioCI returns the ratio of the q-quantiles of num and den (num's over
// den's) and a percentile-bootstrap confidence interval of it, resampling
// both independently. An interval entirely under 1 says num's quantile is
// lower than den's beyond what resampling explains; one that contains 1
// says the samples do not settle it.
func RatioCI(num, den []time.Duration, q float64, rng *rand.Rand) (float64, Interval) {
	if len(num) == 0 || len(den) == 0 {
		return 0, Interval{}
	}
	a := slices.Sorted(slices.Values(num))
	b := slices.Sorted(slices.Values(den))
	bufA := make([]time.Duration, len(a))
	bufB := make([]time.Duration, len(b))
	return float64(quantile(a, q)) / float64(quantile(b, q)), bootstrap(func() float64 {
		resample(bufA, a, rng)
		resample(bufB, b, rng)
		return float64(quantile(bufA, q)) / float64(quantile(bufB, q))
	})
}

// bootstrap returns the Confidence interval of stat over Resamples calls,
// each of which computes it on a new resample.
func bootstrap(stat func() float64) Interval {
	stats := make([]float64, Resamples)
	for i := range stats {
		stats[i] = stat()
	}
	return percentiles(stats)
}

// Side is where an interval lies against a bound.
type Side int

// Sides of a bound.
const (
	Across Side = iota // the interval contains the bound: not settled
	AtOrUnder
	Over
)

// Against returns where ci lies against bound: AtOrUnder when all of it is
// at or under bound, Over when all of it is above, Across otherwise.
func Against(ci Interval, bound float64) Side {
	switch {
	case ci.Hi <= bound:
		return AtOrUnder
	case ci.Lo > bound:
		return Over
	default:
		return Across
	}
}

// MinIntervalSamples is the fewest samples a series needs for a report to
// give its intervals: with fewer, a bootstrap interval is little more than
// the samples' range, and the reports print "–" instead.
const MinIntervalSamples = 10

// enough reports whether every one of samples has MinIntervalSamples.
func enough(samples ...[]time.Duration) bool {
	return !slices.ContainsFunc(samples, func(s []time.Duration) bool { return len(s) < MinIntervalSamples })
}

// formatInterval formats ci with f ("lo–hi"), or "–" without enough samples.
func formatInterval(ci Interval, ok bool, f func(float64) string) string {
	if !ok {
		return "–"
	}
	return f(ci.Lo) + "–" + f(ci.Hi)
}

// ratio2 formats a ratio with two decimals.
func ratio2(x float64) string { return fmt.Sprintf("%.2f", x) }

// resample fills buf with len(buf) draws from s, with replacement, and
// sorts it.
func resample(buf, s []time.Duration, rng *rand.Rand) {
	for j := range buf {
		buf[j] = s[rng.IntN(len(s))]
	}
	slices.Sort(buf)
}

// percentiles returns the Confidence interval of the resampled statistics
// (sorted in place).
func percentiles(stats []float64) Interval {
	slices.Sort(stats)
	tail := (1 - Confidence) / 2
	at := func(p float64) float64 {
		return stats[max(0, min(len(stats)-1, int(math.Round(p*float64(len(stats)-1)))))]
	}
	return Interval{Lo: at(tail), Hi: at(1 - tail)}
}
