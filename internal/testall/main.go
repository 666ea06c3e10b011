// Command testall runs the tests of every Go module in the repository and
// says what they skipped. It is the README's test command and CI's:
//
//	go run ./internal/testall [go test flags]
//
// From the directory of the module it is run in (the repository's root),
// it finds every go.mod below (skipping testdata, vendor and directories
// whose names start with "." or "_"), and runs `go test -race -json [go test
// flags] ./...` in each module's directory in turn, since `go test ./...`
// does not enter nested modules. While the tests run it prints one line per
// package, as go test does, with the number of tests it skipped, and the
// output of every test that failed. At the end it lists every skipped test
// with the message it gave (tests that need a server or a browser skip when
// there is none, unless CI is set), and the tests that failed.
//
// It exits with the first non-zero exit status of a go test run, else 0.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("testall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	race := fs.Bool("race", true, "run the tests with the race detector")
	dir := fs.String("C", ".", "the `directory` of the root module")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./internal/testall [-race=false] [-C DIR] [-- go test flags]")
		fs.PrintDefaults()
	}
	// Flags that testall does not know go to go test.
	own, goTestArgs := splitArgs(args)
	if err := fs.Parse(own); err != nil {
		return 2
	}
	goTestArgs = append(goTestArgs, fs.Args()...)

	modules, err := findModules(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "testall: %v\n", err)
		return 1
	}
	s := newSummary(stdout)
	status := 0
	for _, m := range modules {
		testArgs := []string{"test"}
		if *race {
			testArgs = append(testArgs, "-race")
		}
		testArgs = append(append(append(testArgs, "-json"), goTestArgs...), "./...")
		fmt.Fprintf(stdout, "==> in %s: go %s\n", m.rel, strings.Join(testArgs, " "))
		code, err := goTest(m.dir, testArgs, s, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "testall: %s: %v\n", m.rel, err)
			if code == 0 {
				code = 1
			}
		}
		if status == 0 {
			status = code
		}
	}
	s.report()
	if status == 0 && s.failed() {
		status = 1
	}
	return status
}

// splitArgs separates testall's own flags (-race, -C) from the rest, which
// go to go test. Everything after "--" goes to go test.
func splitArgs(args []string) (own, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(rest, args[i+1:]...)
		}
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		switch {
		case strings.HasPrefix(a, "-") && name == "race":
			own = append(own, a)
		case strings.HasPrefix(a, "-") && name == "C":
			own = append(own, a)
			if !hasValue && i+1 < len(args) {
				i++
				own = append(own, args[i])
			}
		default:
			rest = append(rest, a)
		}
	}
	return own, rest
}

// module is a directory with a go.mod.
type module struct {
	dir string // absolute
	rel string // relative to the root module, "." for the root
}

// findModules returns the module at root and every module below it, root
// first, then in path order.
func findModules(root string) ([]module, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return nil, fmt.Errorf("no go.mod in %s: run testall from the repository's root", root)
	}
	var mods []module
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
			return filepath.SkipDir
		}
		if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
			rel, _ := filepath.Rel(root, path)
			mods = append(mods, module{dir: path, rel: rel})
		}
		return nil
	})
	return mods, err
}

// goTest runs go with args in dir, feeding its JSON output to s, and
// returns its exit status.
func goTest(dir string, args []string, s *summary, stderr io.Writer) (int, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 1, err
	}
	if err := cmd.Start(); err != nil {
		return 1, err
	}
	readErr := s.read(out)
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), readErr
	case err != nil:
		return 1, err
	}
	return 0, readErr
}

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Time        time.Time
	Action      string
	Package     string
	ImportPath  string // build-output, build-fail
	Test        string
	Elapsed     float64
	Output      string
	FailedBuild string
}

// key names a test.
type key struct{ pkg, test string }

// skipped is one skipped test and its message.
type skipped struct {
	key
	msg string
}

// summary follows the events of one or more go test runs.
type summary struct {
	w io.Writer
	// out holds the output of each running test, and of each package
	// (test ""), until it ends.
	out      map[key][]string
	skips    []skipped
	failures []key
	// skipsIn counts the skipped tests per package, for its line.
	skipsIn                    map[string]int
	passed, pkgsOK, pkgsFailed int
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, out: map[key][]string{}, skipsIn: map[string]int{}}
}

func (s *summary) failed() bool { return len(s.failures) > 0 || s.pkgsFailed > 0 }

// read consumes go test's JSON output. A line that is not JSON is printed
// as it is.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.handle(e)
	}
	return sc.Err()
}

func (s *summary) handle(e event) {
	k := key{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.w, e.Output)
	case "output":
		s.out[k] = append(s.out[k], e.Output)
	case "pass":
		if e.Test == "" {
			s.packageDone(e, "ok")
			return
		}
		s.passed++
		delete(s.out, k)
	case "skip":
		if e.Test == "" {
			s.packageDone(e, "?") // no test files, or no tests to run
			return
		}
		s.skips = append(s.skips, skipped{k, skipMessage(s.out[k])})
		s.skipsIn[e.Package]++
		delete(s.out, k)
	case "fail":
		if e.Test == "" {
			s.packageDone(e, "FAIL")
			return
		}
		s.failures = append(s.failures, k)
		fmt.Fprint(s.w, strings.Join(s.out[k], ""))
		delete(s.out, k)
	}
}

// packageDone prints the package's line, as go test does, with its skips.
func (s *summary) packageDone(e event, result string) {
	k := key{e.Package, ""}
	lines := s.out[k]
	delete(s.out, k)
	switch result {
	case "ok":
		s.pkgsOK++
	case "FAIL":
		s.pkgsFailed++
		// The package's own output: a panic, TestMain's messages, a build
		// failure. Its last line is go test's FAIL line, printed below.
		for _, l := range lines {
			if !isResultLine(l) {
				fmt.Fprint(s.w, l)
			}
		}
	}
	// Tests still open when the package ended (a panic, a timeout) failed
	// with it: show what they printed.
	for k2, out := range s.out {
		if k2.pkg == e.Package {
			if result == "FAIL" {
				fmt.Fprint(s.w, strings.Join(out, ""))
			}
			delete(s.out, k2)
		}
	}
	line := ""
	for i := len(lines) - 1; i >= 0; i-- {
		if isResultLine(lines[i]) {
			line = strings.TrimRight(lines[i], "\n")
			break
		}
	}
	if line == "" {
		line = fmt.Sprintf("%-4s\t%s\t%.3fs", result, e.Package, e.Elapsed)
	}
	if n := s.skipsIn[e.Package]; n > 0 {
		line += fmt.Sprintf("\t(%d skipped)", n)
	}
	fmt.Fprintln(s.w, line)
}

// isResultLine reports whether l is go test's line for a package's result.
func isResultLine(l string) bool {
	return strings.HasPrefix(l, "ok  \t") || strings.HasPrefix(l, "FAIL\t") || strings.HasPrefix(l, "?   \t")
}

// logLine matches the first line of a t.Log, t.Skip or t.Error entry:
// indentation, then file:line.
var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// skipMessage returns the message of a skipped test: its last log entry
// (t.Skip logs it last), with the lines that continue it, on one line,
// without the file:line in front (which, with t.Helper, differs between
// tests that skip for the same reason).
func skipMessage(out []string) string {
	var entry []string
	for _, l := range out {
		l = strings.TrimRight(l, "\n")
		trimmed := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(trimmed, "=== ") || strings.HasPrefix(trimmed, "--- "):
			continue
		case logLine.MatchString(l):
			entry = []string{strings.TrimSpace(l[len(logLine.FindString(l)):])}
		case entry != nil && trimmed != "":
			entry = append(entry, trimmed)
		}
	}
	if entry == nil {
		return "(no message)"
	}
	msg := strings.Join(entry, " ")
	if len(msg) > 400 {
		msg = msg[:397] + "..."
	}
	return msg
}

// report prints the skipped tests, grouped by package and message, and the
// failed ones.
func (s *summary) report() {
	fmt.Fprintln(s.w)
	if len(s.skips) == 0 {
		fmt.Fprintln(s.w, "No test skipped.")
	} else {
		fmt.Fprintf(s.w, "Skipped tests (%d; they did not run, and each said why):\n", len(s.skips))
		type group struct {
			pkg, msg string
			tests    []string
		}
		var groups []*group
		for _, sk := range s.skips {
			i := slices.IndexFunc(groups, func(g *group) bool { return g.pkg == sk.pkg && g.msg == sk.msg })
			if i < 0 {
				groups = append(groups, &group{pkg: sk.pkg, msg: sk.msg})
				i = len(groups) - 1
			}
			groups[i].tests = append(groups[i].tests, sk.test)
		}
		slices.SortStableFunc(groups, func(a, b *group) int { return strings.Compare(a.pkg, b.pkg) })
		for _, g := range groups {
			fmt.Fprintf(s.w, "  %s: %s\n", g.pkg, g.msg)
			fmt.Fprintf(s.w, "      %s\n", strings.Join(g.tests, ", "))
		}
	}
	if len(s.failures) > 0 {
		fmt.Fprintf(s.w, "\nFailed tests (%d):\n", len(s.failures))
		for _, f := range s.failures {
			fmt.Fprintf(s.w, "  %s: %s\n", f.pkg, f.test)
		}
	}
	fmt.Fprintf(s.w, "\n%d packages ok, %d failed; %d tests passed, %d failed, %d skipped.\n",
		s.pkgsOK, s.pkgsFailed, s.passed, len(s.failures), len(s.skips))
}
