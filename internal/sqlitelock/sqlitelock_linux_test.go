package sqlitelock

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "SQLITELOCK_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(hold(path))
	}
	os.Exit(m.Run())
}

// hold locks the write-lock byte of path as SQLite's writer would, says
// so, and stops itself.
func hold(path string) int {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 1
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Start: walWriteLock, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		return 2
	}
	os.Stdout.WriteString("holding\n")
	_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	time.Sleep(time.Minute)
	return 0
}

// TestWriterNamesAStoppedHolder: a process that holds the write lock and
// is stopped is named, with its state.
func TestWriterNamesAStoppedHolder(t *testing.T) {
	db := filepath.Join(t.TempDir(), "x.db")
	if _, ok := Writer(db); ok {
		t.Fatal("a holder named for a database without a -shm file")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+db+"-shm")
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
	var h Holder
	for end := time.Now().Add(10 * time.Second); ; {
		var ok bool
		h, ok = Writer(db)
		if ok && h.Frozen() {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("Writer = %+v, %v; want the stopped helper %d", h, ok, cmd.Process.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h.PID != cmd.Process.Pid || h.State != "stopped" || h.Command == "" {
		t.Fatalf("Writer = %+v; want the helper %d, stopped, with its command", h, cmd.Process.Pid)
	}
	if s := h.String(); !strings.Contains(s, "stopped") || !strings.HasPrefix(s, "process ") {
		t.Fatalf("String() = %q", s)
	}
	// Its death releases the lock.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if h, ok := Writer(db); ok {
		t.Fatalf("Writer = %+v after the holder died; want none", h)
	}
}

func TestWriteLocker(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  READ 40 fe:00:77 128 128
2: POSIX  ADVISORY  WRITE 41 fe:00:78 120 120
3: POSIX  ADVISORY  WRITE 42 fe:00:77 120 120
3: -> POSIX  ADVISORY  WRITE 43 fe:00:77 120 120
4: OFDLCK ADVISORY  WRITE -1 fe:00:77 0 EOF
5: POSIX  ADVISORY  WRITE 44 fe:00:79 0 EOF
6: POSIX  ADVISORY  WRITE 45 fe:00:81 121 121
`
	for _, c := range []struct {
		file string
		pid  int
		ok   bool
	}{
		{"fe:00:77", 42, true}, // the reader at 128 and the waiter do not hold it
		{"fe:00:78", 41, true},
		{"fe:00:79", 44, true}, // a lock to the end of the file covers it
		{"fe:00:80", 0, false},
		{"fe:00:81", 0, false}, // the checkpointer's byte, not the writer's
	} {
		if pid, ok := writeLocker(locks, c.file, walWriteLock); pid != c.pid || ok != c.ok {
			t.Errorf("writeLocker(%s) = %d, %v; want %d, %v", c.file, pid, ok, c.pid, c.ok)
		}
	}
}
