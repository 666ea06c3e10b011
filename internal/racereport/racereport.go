// Package racereport makes the race detector's reports of child processes
// count in the test binary that started them.
//
// A test binary built with -race that re-executes itself (a supervisor, a
// runner, a helper) starts race-enabled children. A child's report goes to
// its standard error, which is often its command's or a log no test reads,
// and a child that ends with syscall.Exit (the supervisor) skips the
// detector's exit status too: a data race there went unseen. Collect points
// every child's reports at a directory, and its finish function returns
// what they wrote, for TestMain to fail the run on. In a binary built
// without -race, GORACE is ignored and finish returns "".
package racereport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Collect sets GORACE's log_path, for the child processes started from now
// on (a process reads GORACE when it starts: this one's own reports stay on
// its standard error), at a new temporary directory. finish returns the
// reports the children wrote there ("" for none) and removes it.
func Collect() (finish func() string, err error) {
	dir, err := os.MkdirTemp("", "race-reports-")
	if err != nil {
		return nil, fmt.Errorf("racereport: %w", err)
	}
	opts := strings.TrimSpace(os.Getenv("GORACE") + " log_path=" + filepath.Join(dir, "report"))
	if err := os.Setenv("GORACE", opts); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("racereport: %w", err)
	}
	return func() string {
		defer os.RemoveAll(dir)
		return reports(dir)
	}, nil
}

// reports returns the non-empty files of dir, each under its name.
func reports(dir string) string {
	entries, _ := os.ReadDir(dir)
	var b strings.Builder
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && strings.TrimSpace(string(data)) != "" {
			fmt.Fprintf(&b, "%s:\n%s\n", e.Name(), data)
		}
	}
	return b.String()
}
