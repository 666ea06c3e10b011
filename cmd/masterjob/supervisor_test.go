//go:build linux

package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/masterjob/masterjob/internal/childproc/supervisor"
)

// TestSupervisorStartsBeforeTheEngines: this binary links every engine,
// and each command's supervisor is this binary again. The supervisor takes
// over from its package's init; it must come before the engines' packages
// (gRPC's and protobuf's registries, etcd's, Prometheus's, SQLite's) are
// initialized, which took about 8 ms of CPU and 4 MB per supervisor when
// it came after them. GODEBUG=inittrace=1 names each package as its init
// finishes.
func TestSupervisorStartsBeforeTheEngines(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// No descriptor 3: the supervisor refuses at once, after its init.
	cmd := exec.Command(exe, supervisor.Arg, "1", "/bin/true", "--", "true")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	out := stderr.String()
	if !strings.Contains(out, "is not the runner's socket") {
		t.Fatalf("the supervisor did not run; its output:\n%s", out)
	}
	heavy := []string{
		"go.etcd.io/", "google.golang.org/grpc", "google.golang.org/protobuf/reflect/",
		"google.golang.org/protobuf/types/", "google.golang.org/genproto/",
		"github.com/prometheus/", "modernc.org/sqlite", "net/http",
		"github.com/masterjob/masterjob/store",
	}
	inits := 0
	for line := range strings.Lines(out) {
		pkg, ok := strings.CutPrefix(line, "init ")
		if !ok {
			continue
		}
		inits++
		pkg, _, _ = strings.Cut(pkg, " ")
		for _, h := range heavy {
			// google.golang.org/grpc/internal/backoff and the like are
			// leaves with nothing to import: cheap, and first in line.
			if strings.HasPrefix(pkg, h) && !strings.Contains(pkg, "/internal/") {
				t.Errorf("%s was initialized before the supervisor started", pkg)
			}
		}
	}
	if inits == 0 {
		t.Fatalf("no init lines (GODEBUG=inittrace=1 ignored?); output:\n%s", out)
	}
	t.Logf("%d packages were initialized before the supervisor started", inits)
}
