//go:build unix

package sqlite_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// fileModes returns the permission bits of the database file and of its
// -wal and -shm files, after a write has made them exist.
func fileModes(t *testing.T, s *sqlite.Store, path string) map[string]fs.FileMode {
	t.Helper()
	if st, err := s.Acquire(t.Context(), store.Holder{ID: "h"}, []string{"JOB"}, time.Minute); err != nil || !st[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", st, err)
	}
	out := map[string]fs.FileMode{}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatalf("database file %q: %v", suffix, err)
		}
		out[suffix] = fi.Mode().Perm()
	}
	return out
}

// TestNewFileMode: a database file Open creates, and its -wal and -shm
// files, are readable and writable by the owner only, whatever the umask
// (which can only take bits away).
func TestNewFileMode(t *testing.T) {
	// Not parallel: the umask belongs to the process.
	for _, umask := range []int{0o022, 0o002, 0o000} {
		old := syscall.Umask(umask)
		path := filepath.Join(t.TempDir(), "new.db")
		s, err := sqlite.Open(path)
		if err != nil {
			syscall.Umask(old)
			t.Fatal(err)
		}
		modes := fileModes(t, s, path)
		_ = s.Close()
		syscall.Umask(old)
		for suffix, mode := range modes {
			if mode != 0o600 {
				t.Errorf("umask %03o: database file %q created %v, want -rw-------", umask, suffix, mode)
			}
		}
	}
}

// TestExistingFileModeKept: a file the user created keeps its mode, which
// SQLite gives the -wal and -shm files too; an empty file is a new
// database.
func TestExistingFileModeKept(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shared.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, path)
	for suffix, mode := range fileModes(t, s, path) {
		if mode != 0o640 {
			t.Errorf("database file %q of a 0640 database: %v, want -rw-r-----", suffix, mode)
		}
	}
}

// TestMissingDirectory: a database in a directory that does not exist is
// an error at once, naming the directory, and not store.ErrUnavailable
// (which callers retry).
func TestMissingDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "no", "such", "dir")
	start := time.Now()
	s, err := sqlite.Open(filepath.Join(dir, "x.db"))
	if err == nil {
		_ = s.Close()
		t.Fatal("Open in a missing directory succeeded")
	}
	if errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open in a missing directory: %v; it wraps store.ErrUnavailable, which callers retry forever", err)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open in a missing directory: %q; want it to say that %s does not exist", err, dir)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Open in a missing directory took %v", d)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open created the directory: %v", err)
	}
}
