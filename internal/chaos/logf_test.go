package chaos

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// Faults run in goroutines of their own and report problems at once: the
// progress lines they write must not race on the log (the race detector
// caught it in CI when several faults failed together) nor interleave.
func TestLogLinesFromConcurrentFaults(t *testing.T) {
	var buf bytes.Buffer
	d := &driver{cfg: Config{Log: &buf}}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				d.logf("fault %d failed: %s", i, strings.Repeat("x", 40))
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 8*50 {
		t.Fatalf("%d lines, want %d", len(lines), 8*50)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "chaos ") || !strings.HasSuffix(l, strings.Repeat("x", 40)) {
			t.Fatalf("a line mixed with another: %q", l)
		}
	}
}
