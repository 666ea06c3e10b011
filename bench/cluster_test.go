//go:build linux

package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NextStart gives up at once when every runner has exited, with the error
// a runner logged, rather than waiting out its timeout; while one runs it
// waits.
func TestNextStartFailsWhenEveryRunnerExited(t *testing.T) {
	log := filepath.Join(t.TempDir(), "runner-001.log")
	body := `{"level":"ERROR","msg":"executor stopped with an error","err":"lease shorter than the store can grant"}` + "\n" +
		`{"level":"INFO","msg":"stopped","exit_code":1}` + "\n"
	if err := os.WriteFile(log, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	exited, running := make(chan struct{}), make(chan struct{})
	close(exited)
	c := &Cluster{starts: make(chan Start, 1), runners: map[int]*Runner{1: {Pid: 1, done: exited, log: log}}}
	start := time.Now()
	_, err := c.NextStart(time.Minute)
	if err == nil || !strings.Contains(err.Error(), "lease shorter than the store can grant") {
		t.Fatalf("NextStart = %v, want the runner's logged error", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("NextStart took %v to see that every runner had exited", took)
	}
	c.runners[2] = &Runner{Pid: 2, done: running, log: log}
	if _, err := c.NextStart(300 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "within") {
		t.Errorf("with a runner still running NextStart = %v, want its timeout", err)
	}
}
