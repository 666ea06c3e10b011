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
