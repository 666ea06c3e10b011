package trace

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMarkAppendsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	file = f
	on.Store(true)
	defer func() { on.Store(false); _ = f.Close() }()
	Mark("release.sent", "JOB")
	Mark("acquire.done", "JOB")
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " release.sent JOB") || !strings.HasSuffix(lines[1], " acquire.done JOB") {
		t.Fatalf("trace:\n%s", b)
	}
}

func TestMarkOffWritesNothing(t *testing.T) {
	on.Store(false)
	Mark("x", "y") // must not touch a nil file
}

func TestSinkSeesMarks(t *testing.T) {
	on.Store(false)
	var got []string
	SetSink(func(ns int64, event, lock string) {
		if ns <= 0 {
			t.Errorf("mark %s at %d", event, ns)
		}
		got = append(got, event+" "+lock)
	})
	if !Enabled() {
		t.Error("not enabled with a sink")
	}
	Mark("renew.sent", "JOB")
	SetSink(nil)
	Mark("renew.done", "JOB")
	if Enabled() {
		t.Error("enabled without a file or a sink")
	}
	if len(got) != 1 || got[0] != "renew.sent JOB" {
		t.Errorf("sink saw %q, want [renew.sent JOB]", got)
	}
}
