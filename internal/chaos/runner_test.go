//go:build linux

package chaos

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRunnerReadyCatchesSIGTERM sends SIGTERM to a runner-mode instance
// the moment it says hello, as a sigterm fault may: the runner must stop
// gracefully (exit 0), never die of the signal's default action. Once a
// runner said hello before `masterjob run` caught SIGTERM, and a CI chaos
// run reported the instance as crashed.
func TestRunnerReadyCatchesSIGTERM(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "driver.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	db := "sqlite:" + filepath.Join(dir, "runner.db")
	timing := DefaultTiming
	timing.ShutdownTimeout = 5 * time.Second
	for gen := 1; gen <= 10; gen++ {
		a := instanceArgs{sock: sock, index: 0, gen: gen, runID: "sigterm", storeURL: db,
			locks: 1, timing: timing, directChild: true}
		logPath := filepath.Join(dir, fmt.Sprintf("runner-%d.log", gen))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], append([]string{"runner"}, a.argv()...)...)
		cmd.Env = append(os.Environ(), EnvInstance+"=1", "GORACE=atexit_sleep_ms=0")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		first, conn, err := firstMessage(ln, 30*time.Second)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("runner gen %d: %v", gen, err)
		}
		if first.Type != msgHello {
			t.Errorf("runner gen %d: first message %q, want %q", gen, first.Type, msgHello)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, conn) }()
		werr := cmd.Wait()
		conn.Close()
		logf.Close()
		if werr != nil {
			b, _ := os.ReadFile(logPath)
			t.Errorf("runner gen %d, SIGTERMed on hello: %v (want exit 0); log:\n%s", gen, werr, b)
		}
	}
}

// firstMessage accepts one connection on ln and reads its first message.
func firstMessage(ln net.Listener, timeout time.Duration) (Message, net.Conn, error) {
	type result struct {
		m    Message
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ch <- result{err: err}
			return
		}
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		var m Message
		if err == nil {
			err = json.Unmarshal(line, &m)
		}
		ch <- result{m, conn, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.conn, r.err
	case <-time.After(timeout):
		_ = ln.Close()
		return Message{}, nil, errors.New("no message from the runner")
	}
}
