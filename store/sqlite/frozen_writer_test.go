package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

const writerEnv = "MASTERJOB_SQLITE_FROZEN_WRITER_DB"

// frozenWriter is a child process of TestWriteBlockedByAFrozenWriterSaysWho:
// it opens a write transaction on the database, says so, and stops itself
// inside it, as a runner frozen (SIGSTOP, Ctrl-Z) in the middle of a
// renewal would.
func frozenWriter(path string) int {
	db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_busy_timeout=5000")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	tx, err := db.Begin()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS frozen_writer (x)`); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("holding")
	_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	time.Sleep(time.Minute)
	return 0
}

// TestWriteBlockedByAFrozenWriterSaysWho: a process stopped inside a write
// transaction holds SQLite's write lock, and no other instance can acquire
// (or take over) until it resumes or exits. The error names it and says
// so, instead of a bare timeout.
func TestWriteBlockedByAFrozenWriterSaysWho(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("naming the lock's holder needs Linux's /proc/locks")
	}
	path := filepath.Join(t.TempDir(), "frozen.db")
	s := openStore(t, path)
	ctx := context.Background()
	if _, err := s.Acquire(ctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), writerEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "holding\n" {
		t.Fatalf("helper said %q (%v)", line, err)
	}
	want := fmt.Sprintf("held by process %d", cmd.Process.Pid)
	for end := time.Now().Add(10 * time.Second); ; {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := s.Acquire(cctx, store.Holder{ID: "b"}, []string{"M"}, time.Minute)
		cancel()
		if err == nil {
			t.Fatal("acquired while another process holds the write lock")
		}
		if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v; want unavailable or a timeout", err)
		}
		if msg := err.Error(); strings.Contains(msg, want) && strings.Contains(msg, "stopped") && strings.Contains(msg, "until it resumes or exits") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("error %q; want it to name the stopped %s", err, want)
		}
	}
	// Its death releases the lock: the next write succeeds.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	got, err := s.Acquire(ctx, store.Holder{ID: "b"}, []string{"M"}, time.Minute)
	if err != nil || !got[0].Acquired {
		t.Fatalf("after the frozen writer died: %+v, %v; want M acquired", got, err)
	}
}

// TestHoldWritesKeepsWritesWaiting: while a process holds its writes
// (before it stops itself), its store starts no write, so it cannot be
// stopped holding the write lock; once released, writes go on.
func TestHoldWritesKeepsWritesWaiting(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "hold.db"))
	ctx := context.Background()
	release, err := s.HoldWrites(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = s.Acquire(cctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while writes are held: %v; want it to wait until its deadline", err)
	}
	cctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := s.HoldWrites(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second HoldWrites: %v; want it to wait until its deadline", err)
	}
	cancel()
	release()
	release() // a second call does nothing
	got, err := s.Acquire(ctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute)
	if err != nil || !got[0].Acquired {
		t.Fatalf("Acquire after release: %+v, %v", got, err)
	}
}
