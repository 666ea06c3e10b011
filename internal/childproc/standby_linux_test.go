package childproc

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/internal/syncbuf"
)

// A standby supervisor starts the command with the environment given at
// Start, added to the one it was prepared with, and otherwise behaves as a
// command started with Start.
func TestStandbyStartsTheCommand(t *testing.T) {
	out := &syncbuf.Buffer{}
	sb, err := Prepare(Spec{Path: "sh", Args: []string{"-c", `echo "$PREPARED $LEASE"; exit 7`}, Env: []string{"PREPARED=yes"}, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Start([]string{"LEASE=token 3 \"quoted\"\nnewline"})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Wait()
	<-p.gone
	if res.ExitCode != 7 {
		t.Fatalf("exit %v", res)
	}
	if got := out.String(); got != "yes token 3 \"quoted\"\nnewline\n" {
		t.Fatalf("output %q", got)
	}
	if _, err := sb.Start(nil); err == nil {
		t.Fatal("a standby started twice")
	}
	sb.Close() // after use: nothing to do
}

// A discarded standby exits without starting anything.
func TestStandbyClose(t *testing.T) {
	marker := t.TempDir() + "/ran"
	sb, err := Prepare(Spec{Path: "touch", Args: []string{marker}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sb.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: the standby supervisor did not exit")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a discarded standby ran the command")
	}
	if _, err := sb.Start(nil); err == nil || !strings.Contains(err.Error(), "used") {
		t.Fatalf("Start after Close: %v", err)
	}
}

// The entries given at Start replace those of the same names in the
// runner's environment, as a Spec's Env does: a runner that is itself a
// master's command (MASTERJOB_LOCK set) must not pass its own lease on.
func TestStandbyStartOverridesTheRunnersEnv(t *testing.T) {
	t.Setenv(EnvLock, "OUTER")
	out := &syncbuf.Buffer{}
	// env(1) prints the environment as it came: a shell would keep one
	// entry of each name (dash the last, where C's getenv and Go take the
	// first).
	sb, err := Prepare(Spec{Path: "env", Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Start(LeaseEnv("INNER", 3, "i1"))
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	<-p.gone
	var got []string
	for _, kv := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(kv, EnvLock+"=") {
			got = append(got, kv)
		}
	}
	if len(got) != 1 || got[0] != EnvLock+"=INNER" {
		t.Fatalf("the command's environment has %q, want %s=INNER alone", got, EnvLock)
	}
}
