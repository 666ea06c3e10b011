// Package backoff computes the waits between retries of a failing call:
// exponential, capped and jittered, so that a sick store is never hammered
// in a busy loop and instances that failed together do not retry in step.
// Every retry loop of the project (the executor's checks, the notification
// subscription, the audit recorder, the CLI's store opening, the PostgreSQL
// listener) uses it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns the wait before retry number n (n >= 1, the number of
// consecutive failures so far): base doubled n-1 times and capped at limit,
// then jittered down by up to half, so between d/2 and d. It is never less
// than a millisecond.
func Delay(n int, base, limit time.Duration) time.Duration {
	d := max(base, 0)
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if d <= 2*time.Millisecond {
		return max(d, time.Millisecond)
	}
	return d/2 + rand.N(d/2+1)
}
