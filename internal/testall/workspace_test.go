package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestModulesRequireWhatTheWorkspaceSelects: every module of the
// repository requires each dependency at the version the workspace
// (go.work) selects for it. The tests run in the workspace, with its
// versions; a user's `go install .../cmd/masterjob@VERSION`, or a program
// that imports one module alone, gets that module's own go.mod versions.
// When a nested module raised a dependency the root module also needs
// (golang.org/x/text, once), the two differed: CI tested one build and
// users got another, and TestVersionStampedByBuild, which builds the
// root module alone with the module cache only, failed whenever no other
// test had happened to download the root's older version. `go work sync`
// makes them agree.
func TestModulesRequireWhatTheWorkspaceSelects(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command on every module")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := findModules(root)
	if err != nil {
		t.Fatal(err)
	}
	goJSON := func(dir string, args ...string) *json.Decoder {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s in %s: %v", strings.Join(args, " "), dir, err)
		}
		return json.NewDecoder(strings.NewReader(string(out)))
	}
	type mod struct{ Path, Version string }
	selected := map[string]string{}
	for dec := goJSON(root, "list", "-m", "-json", "all"); dec.More(); {
		var m mod
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		selected[m.Path] = m.Version
	}
	for _, m := range mods {
		var gomod struct {
			Module  mod
			Require []mod
		}
		if err := goJSON(m.dir, "mod", "edit", "-json").Decode(&gomod); err != nil {
			t.Fatal(err)
		}
		for _, r := range gomod.Require {
			if strings.HasPrefix(r.Path, "github.com/masterjob/masterjob") {
				continue // the workspace's own modules, at placeholder versions
			}
			if v, ok := selected[r.Path]; ok && v != r.Version {
				t.Errorf("%s/go.mod requires %s %s, the workspace builds %s: run `go work sync`", m.rel, r.Path, r.Version, v)
			}
		}
	}
}
