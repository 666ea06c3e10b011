package racereport

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A child's report, written where GORACE's log_path says (as the race
// runtime does, one file per process), is returned by finish; nothing
// written returns "". The child here is sh, which writes the file the way
// a race-enabled Go child would, so the test runs with or without -race.
func TestCollectReturnsWhatChildrenWrote(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	finish, err := Collect()
	if err != nil {
		t.Fatal(err)
	}
	opts := os.Getenv("GORACE")
	if !strings.HasPrefix(opts, "atexit_sleep_ms=0 log_path=") {
		t.Fatalf("GORACE=%q: the caller's options must be kept", opts)
	}
	path := strings.TrimPrefix(opts, "atexit_sleep_ms=0 log_path=")
	out, err := exec.Command("sh", "-c", `printf 'WARNING: DATA RACE\n' > "$0.42"; : > "$0.43"`, path).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v %s", err, out)
	}
	got := finish()
	if !strings.Contains(got, "report.42:\nWARNING: DATA RACE") || strings.Contains(got, "report.43") {
		t.Fatalf("finish returned %q", got)
	}
	if _, err := os.Stat(path + ".42"); !os.IsNotExist(err) {
		t.Fatalf("the directory was not removed: %v", err)
	}

	finish, err = Collect()
	if err != nil {
		t.Fatal(err)
	}
	if got := finish(); got != "" {
		t.Fatalf("no child wrote, finish returned %q", got)
	}
}
