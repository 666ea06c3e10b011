package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// writeTree writes files (path: content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tree is a repository with a root module, a nested module, and modules
// that testall must leave alone (testdata, hidden directories).
var tree = map[string]string{
	"go.mod": "module example.com/root\n\ngo 1.26.0\n",
	"a/a.go": "package a\n",
	"b/b.go": "package b\n",
	"a/a_test.go": `package a

import "testing"

func TestPass(t *testing.T) { t.Log("a log line that is not shown") }

func TestNeedsServer(t *testing.T) {
	t.Log("connecting")
	needServer(t)
}

func TestNeedsServerToo(t *testing.T) { needServer(t) }

func needServer(t *testing.T) {
	t.Helper()
	t.Skip("PostgreSQL not reachable at 127.0.0.1:1:\nconnection refused")
}

func TestSub(t *testing.T) {
	t.Run("skipped", func(t *testing.T) { t.Parallel(); t.Skipf("no %s here", "chromium") })
	t.Run("passes", func(t *testing.T) { t.Parallel() })
}

func TestFails(t *testing.T) { t.Log("before"); t.Error("boom") }
`,
	"nested/go.mod": "module example.com/nested\n\ngo 1.26.0\n",
	"nested/n_test.go": `package nested

import "testing"

func TestNested(t *testing.T) { t.Skip("PostgreSQL not reachable at 127.0.0.1:1:\nconnection refused") }
func TestNestedPass(t *testing.T) {}
`,
	"a/testdata/mod/go.mod":    "module example.com/ignored\n\ngo 1.26.0\n",
	"a/testdata/mod/x_test.go": "package x\n\nimport \"testing\"\n\nfunc TestIgnored(t *testing.T) { t.Fatal(\"testdata must not be tested\") }\n",
	".hidden/go.mod":           "module example.com/hidden\n\ngo 1.26.0\n",
	".hidden/h_test.go":        "package h\n\nimport \"testing\"\n\nfunc TestHidden(t *testing.T) { t.Fatal(\"hidden directories must not be tested\") }\n",
	"_scratch/go.mod":          "module example.com/scratch\n\ngo 1.26.0\n",
	"_scratch/s_test.go":       "package s\n\nimport \"testing\"\n\nfunc TestScratch(t *testing.T) { t.Fatal(\"_ directories must not be tested\") }\n",
}

func TestFindModules(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, tree)
	mods, err := findModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rels []string
	for _, m := range mods {
		rels = append(rels, m.rel)
	}
	if want := []string{".", "nested"}; !slices.Equal(rels, want) {
		t.Errorf("modules = %q, want %q", rels, want)
	}
	if _, err := findModules(filepath.Join(dir, "a")); err == nil || !strings.Contains(err.Error(), "no go.mod") {
		t.Errorf("findModules without a go.mod = %v, want an error", err)
	}
}

// TestRun runs the real go test on the tree: every module is tested, the
// failing test's output is shown, every skipped test is listed with its
// message, and the exit status is go test's.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, tree)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-race=false", "-C", dir}, &stdout, &stderr)
	out := stdout.String()
	if code != 1 {
		t.Errorf("exit status %d with a failing test, want 1\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
	for _, want := range []string{
		"==> in .: go test -json ./...\n",
		"==> in nested: go test -json ./...\n",
		"?   \texample.com/root/b\t[no test files]\n",
		"    a_test.go:24: boom\n--- FAIL: TestFails",
		"FAIL\texample.com/root/a\t",
		"\t(3 skipped)\n",
		"ok  \texample.com/nested\t",
		"\t(1 skipped)\n",
		"Skipped tests (4; they did not run, and each said why):\n" +
			"  example.com/nested: PostgreSQL not reachable at 127.0.0.1:1: connection refused\n" +
			"      TestNested\n" +
			"  example.com/root/a: PostgreSQL not reachable at 127.0.0.1:1: connection refused\n" +
			"      TestNeedsServer, TestNeedsServerToo\n" +
			"  example.com/root/a: no chromium here\n" +
			"      TestSub/skipped\n",
		"Failed tests (1):\n  example.com/root/a: TestFails\n",
		"1 packages ok, 1 failed; 4 tests passed, 1 failed, 4 skipped.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"a log line that is not shown", "Ignored", "Hidden", "Scratch"} {
		if strings.Contains(out, not) {
			t.Errorf("output shows %q:\n%s", not, out)
		}
	}

	// Flags it does not know go to go test; without the failing test the
	// status is 0.
	stdout.Reset()
	stderr.Reset()
	code = run([]string{"-C", dir, "-race=false", "-run", "TestPass|TestNested|TestSub"}, &stdout, &stderr)
	out = stdout.String()
	if code != 0 {
		t.Errorf("exit status %d without a failing test, want 0\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
	if !regexp.MustCompile(`2 packages ok, 0 failed; 4 tests passed, 0 failed, 2 skipped\.\n$`).MatchString(out) {
		t.Errorf("summary line wrong:\n%s", out)
	}
}

func TestSkipMessage(t *testing.T) {
	for _, tc := range []struct {
		out  []string
		want string
	}{
		{[]string{"=== RUN   TestX\n", "    x_test.go:3: some log\n", "    x_test.go:4: the reason:\n", "        second line\n", "--- SKIP: TestX (0.00s)\n"},
			"the reason: second line"},
		{[]string{"=== RUN   TestX/sub\n", "=== PAUSE TestX/sub\n", "=== CONT  TestX/sub\n", "    x_test.go:9: why\n", "    --- SKIP: TestX/sub (0.00s)\n"},
			"why"},
		{[]string{"=== RUN   TestX\n", "--- SKIP: TestX (0.00s)\n"}, "(no message)"},
	} {
		if got := skipMessage(tc.out); got != tc.want {
			t.Errorf("skipMessage(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	own, rest := splitArgs([]string{"-race=false", "-run", "X", "-C", "/d", "-count=1", "--", "-race"})
	if want := []string{"-race=false", "-C", "/d"}; !slices.Equal(own, want) {
		t.Errorf("own = %q, want %q", own, want)
	}
	if want := []string{"-run", "X", "-count=1", "-race"}; !slices.Equal(rest, want) {
		t.Errorf("rest = %q, want %q", rest, want)
	}
}
