package masterjob_test

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A fenced block of README.md.
type readmeBlock struct {
	lang, text string
	line       int // of the opening fence
	heading    string
}

// readmeBlocks returns the fenced code blocks of a Markdown file, with the
// heading above each.
func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []readmeBlock
	var cur *readmeBlock
	heading := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &readmeBlock{lang: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: n, heading: heading}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "#"):
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: unterminated code block", path, cur.line)
	}
	return blocks
}

// normalize collapses every run of white space, so that indentation and
// line breaks do not count.
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

// exampleSource is one form of an example the README may show.
type exampleSource struct {
	name   string // file: function, for messages
	text   string // as the README shows it
	output string // the // Output: comment's text, "" if none
}

// exampleSources returns, for every example file of the repository
// (example*_test.go), the body of each Example function and, for a file
// that holds one Example function, the whole file as a program: package
// main, func main for the example, without the example's doc comment and
// without its // Output: comment.
func exampleSources(t *testing.T) []exampleSource {
	t.Helper()
	var out []exampleSource
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(d.Name(), "example") || !strings.HasSuffix(d.Name(), "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
		if err != nil {
			return err
		}
		off := func(p token.Pos) int { return fset.Position(p).Offset }
		var examples []*ast.FuncDecl
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Example") {
				examples = append(examples, fn)
			}
		}
		for _, fn := range examples {
			// The body without its braces, and without the Output comment.
			body := string(src[off(fn.Body.Lbrace)+1 : off(fn.Body.Rbrace)])
			output := ""
			for _, cg := range f.Comments {
				if cg.Pos() > fn.Body.Lbrace && cg.End() < fn.Body.Rbrace {
					if text := cg.Text(); strings.HasPrefix(text, "Output:") {
						output = strings.TrimSpace(strings.TrimPrefix(text, "Output:"))
						body = strings.Replace(body, string(src[off(cg.Pos()):off(cg.End())]), "", 1)
					}
				}
			}
			name := path + ": " + fn.Name.Name
			out = append(out, exampleSource{name: name, text: body, output: output})
			if len(examples) == 1 {
				start := off(fn.Pos())
				if fn.Doc != nil {
					start = off(fn.Doc.Pos())
				}
				program := "package main\n" + string(src[off(f.Name.End()):start]) + "func main() {" + body + "}\n" +
					string(src[off(fn.End()):])
				out = append(out, exampleSource{name: name + " (as a program)", text: program, output: output})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReadmeGoBlocks: every Go block of README.md is an example that go test
// compiles (and runs, when it has an Output comment), as a whole program or
// as the body of an Example function, white space aside; a text block right
// after it is the example's output.
func TestReadmeGoBlocks(t *testing.T) {
	blocks := readmeBlocks(t, "README.md")
	sources := exampleSources(t)
	n := 0
	for i, b := range blocks {
		if b.lang != "go" {
			continue
		}
		n++
		var match *exampleSource
		for j := range sources {
			if normalize(sources[j].text) == normalize(b.text) {
				match = &sources[j]
				break
			}
		}
		if match == nil {
			var names []string
			for _, s := range sources {
				names = append(names, s.name)
			}
			t.Errorf("README.md:%d (%s): this Go block is none of the examples (example*_test.go); copy it from one, "+
				"or make it one. Examples:\n  %s\nBlock:\n%s", b.line, b.heading, strings.Join(names, "\n  "), b.text)
			continue
		}
		if i+1 < len(blocks) && blocks[i+1].lang == "text" {
			if got := strings.TrimSpace(blocks[i+1].text); got != match.output {
				t.Errorf("README.md:%d: the output shown is\n%s\nbut %s prints (its Output comment)\n%s",
					blocks[i+1].line, got, match.name, match.output)
			}
		}
	}
	if n == 0 {
		t.Error("README.md has no Go block: the check found nothing to check")
	}
}

// TestReadmeTestCommand: CI runs exactly the command that README.md gives
// for running the tests.
func TestReadmeTestCommand(t *testing.T) {
	var cmd string
	for _, b := range readmeBlocks(t, "README.md") {
		if b.heading == "Run the tests" && b.lang == "sh" {
			if cmd != "" {
				t.Fatal(`README.md has more than one sh block under "Run the tests"`)
			}
			cmd = strings.TrimSpace(b.text)
		}
	}
	if cmd == "" || strings.Contains(cmd, "\n") {
		t.Fatalf(`README.md's "Run the tests" section should hold one sh block with one command, got %q`, cmd)
	}
	ci, err := os.ReadFile(filepath.Join(".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	// The lines that run the whole suite: the README's command, or go test
	// on ./... (the fuzzing lines name one package).
	var lines []string
	for _, l := range strings.Split(string(ci), "\n") {
		if l = strings.TrimSpace(l); l == cmd || strings.HasPrefix(l, "go test") && strings.Contains(l, "./...") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || lines[0] != cmd {
		t.Errorf(".ci/run runs the tests with %q; README.md says %q", lines, cmd)
	}
}
