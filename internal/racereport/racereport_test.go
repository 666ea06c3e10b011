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

// GORACE keeps this process's options and adds the caller's before
// log_path; Read skips empty files and names each report's pid; Summary
// gives the first paragraph on one line, without the separator lines.
func TestReadAndSummary(t *testing.T) {
	t.Setenv("GORACE", "  halt_on_error=0 ")
	if got := GORACE("/w/race", "atexit_sleep_ms=0"); got != "halt_on_error=0 atexit_sleep_ms=0 log_path=/w/race" {
		t.Fatalf("GORACE = %q", got)
	}
	prefix := t.TempDir() + "/race"
	report := "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n  main.f()\n\nPrevious read by main goroutine:\n  main.g()\n==================\n"
	if err := os.WriteFile(prefix+".4242", []byte(report), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prefix+".4343", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got := Read(prefix)
	if len(got) != 1 || got[0].PID != "4242" || got[0].Path != prefix+".4242" || got[0].Text != report {
		t.Fatalf("Read = %+v", got)
	}
	if s := got[0].Summary(); s != "WARNING: DATA RACE | Write at 0x00c000 by goroutine 7: | main.f()" {
		t.Fatalf("Summary = %q", s)
	}
}
