package masterjob

import (
	"testing"
	"time"
)

// Item 8 of issue 7: renewal retries were not jittered, so instances that
// failed together retried in lockstep.
func TestRenewalRetriesAreJittered(t *testing.T) {
	cfg := Config{HeartbeatInterval: 8 * time.Second, Tolerance: 24 * time.Second, SafetyMargin: 6 * time.Second, MaxHeartbeatRetryCount: 3}
	now := time.Now()
	l := &loop{cfg: cfg, masters: map[string]*mastership{"A": {deadline: now.Add(18 * time.Second)}}, renewFails: 1,
		live: 1, firstDeadline: now.Add(18 * time.Second)}
	full := cfg.HeartbeatInterval / time.Duration(cfg.MaxHeartbeatRetryCount+1)
	seen := map[time.Duration]bool{}
	for range 200 {
		w := l.retryWait(now)
		if w < full/2 || w > full {
			t.Fatalf("retry wait %v outside [%v, %v]", w, full/2, full)
		}
		seen[w] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct waits in 200 retries: not jittered", len(seen))
	}
}
