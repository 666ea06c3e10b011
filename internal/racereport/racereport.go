// Package racereport makes the race detector's reports of child processes
// count in the test binary or harness that started them.
//
// A test binary built with -race that re-executes itself (a supervisor, a
// runner, a chaos instance, a helper) starts race-enabled children. A
// child's report goes to its standard error, which is often its command's
// or a log no test reads, and a child that ends with syscall.Exit (the
// supervisor) skips the detector's exit status too: a data race there went
// unseen. GORACE's log_path sends every child's reports to files of a
// prefix (prefix.PID), which Read returns; Collect does both for a test
// binary's TestMain. In a binary built without -race, GORACE is ignored
// and there is nothing to read.
package racereport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Report is the race detector's report of one process.
type Report struct {
	PID  string // the process's pid, from the file's name
	Path string // the file it wrote
	Text string // the report, whole
}

// Summary returns the report's first paragraph (what raced, and where) on
// one line.
func (r Report) Summary() string {
	first, _, _ := strings.Cut(strings.Trim(r.Text, "=\n"), "\n\n")
	var lines []string
	for l := range strings.SplitSeq(first, "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	return strings.Join(lines, " | ")
}

// GORACE returns the value of GORACE for a child process whose reports
// must go to files of prefix: the options of this process's own GORACE,
// then extra options (such as "atexit_sleep_ms=0"), then log_path.
func GORACE(prefix string, extra ...string) string {
	opts := append(append([]string{os.Getenv("GORACE")}, extra...), "log_path="+prefix)
	return strings.Join(strings.Fields(strings.Join(opts, " ")), " ")
}

// Read returns the reports written to files of prefix (prefix.PID), in the
// order of their names; a file left empty (a process with nothing to
// report) is none.
func Read(prefix string) []Report {
	paths, _ := filepath.Glob(prefix + ".*")
	var out []Report
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(data)) == "" {
			continue
		}
		out = append(out, Report{PID: strings.TrimPrefix(filepath.Ext(p), "."), Path: p, Text: string(data)})
	}
	return out
}

// Collect sets GORACE, for the child processes started from now on (a
// process reads GORACE when it starts: this one's own reports stay on its
// standard error), to send their reports to a new temporary directory.
// finish returns the reports there, each under its file's name ("" for
// none), and removes it.
func Collect() (finish func() string, err error) {
	dir, err := os.MkdirTemp("", "race-reports-")
	if err != nil {
		return nil, fmt.Errorf("racereport: %w", err)
	}
	prefix := filepath.Join(dir, "report")
	if err := os.Setenv("GORACE", GORACE(prefix)); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("racereport: %w", err)
	}
	return func() string {
		defer os.RemoveAll(dir)
		var b strings.Builder
		for _, r := range Read(prefix) {
			fmt.Fprintf(&b, "%s:\n%s\n", filepath.Base(r.Path), r.Text)
		}
		return b.String()
	}, nil
}
