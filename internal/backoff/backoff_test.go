package backoff

import (
	"testing"
	"time"
)

// Store outages are retried with capped, jittered, exponential backoff
// (promise 6): never a busy loop, never longer than the cap, and not every
// instance at the same moment.
func TestBackoffIsCappedJitteredAndGrows(t *testing.T) {
	const base, limit = 100 * time.Millisecond, 30 * time.Second
	for n := 1; n <= 20; n++ {
		want := min(base<<(n-1), limit)
		if n > 10 {
			want = limit
		}
		seen := map[time.Duration]bool{}
		for range 200 {
			d := Delay(n, base, limit)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: backoff %v outside [%v, %v]", n, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: only %d distinct delays in 200 draws: not jittered", n, len(seen))
		}
	}
	if d := Delay(1, 0, 0); d < time.Millisecond {
		t.Fatalf("zero base gave %v: a busy loop", d)
	}
}
