//go:build linux

package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/masterjob/masterjob/bench/internal/probe"
)

// The child looks at the process that the master file names as it starts:
// running (this test), then exited and reaped (the first child, stopped).
func TestChildLooksAtTheMaster(t *testing.T) {
	env := testEnv(t, SQLite)
	dir := t.TempDir()
	ln, err := probe.Listen(filepath.Join(dir, "ev.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	master := filepath.Join(dir, "master.pid")
	start := func(prev int) (*exec.Cmd, probe.Event) {
		t.Helper()
		if err := os.WriteFile(master, []byte(strconv.Itoa(prev)), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(env.Bin.Child)
		cmd.Env = append(os.Environ(), probe.EnvSocket+"="+ln.Path(), probe.EnvMasterFile+"="+master)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ev, err := ln.ReadTimeout(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != probe.KindStart || ev.Pid != cmd.Process.Pid || ev.PrevPid != prev || ev.PrevMono < ev.Mono {
			t.Fatalf("child %d reported %+v; want its start, having looked at %d after its start", cmd.Process.Pid, ev, prev)
		}
		return cmd, ev
	}
	first, ev := start(os.Getpid())
	if !ev.PrevAlive {
		t.Errorf("the child saw this test's process (%d) not running", os.Getpid())
	}
	_ = first.Process.Signal(syscall.SIGTERM)
	if ev, err := ln.ReadTimeout(10 * time.Second); err != nil || ev.Kind != probe.KindTerm {
		t.Fatalf("after SIGTERM the child reported %+v, %v", ev, err)
	}
	_ = first.Wait()
	second, ev := start(first.Process.Pid)
	defer func() { _ = second.Process.Kill(); _ = second.Wait() }()
	if ev.PrevAlive {
		t.Errorf("the child saw the reaped child %d running", first.Process.Pid)
	}
}
