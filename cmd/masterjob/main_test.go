package main

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/masterjob/masterjob/storeurl"
)

// TestEnginesRegistered: the command opens every engine's URLs.
func TestEnginesRegistered(t *testing.T) {
	got := storeurl.Schemes()
	for _, want := range []string{"sqlite", "postgres", "postgresql", "etcd", "etcds"} {
		if !slices.Contains(got, want) {
			t.Errorf("storeurl.Schemes() = %v: %q missing (an engine's blank import in engines.go?)", got, want)
		}
	}
	if _, err := storeurl.Parse("etcd://127.0.0.1:2379,127.0.0.1:22379?prefix=app/"); err != nil {
		t.Errorf("an etcd URL: %v", err)
	}
}

// TestGoModInstallable: go install .../cmd/masterjob@VERSION refuses a
// module whose go.mod has replace directives; the workspace (go.work)
// resolves the modules during development instead.
func TestGoModInstallable(t *testing.T) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*replace\b`).Match(b) {
		t.Error("cmd/masterjob/go.mod has a replace directive: go install ...@VERSION would refuse the module; put it in go.work")
	}
}
