package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// snapshot is the content and modification times of a database file and
// of its -wal file (where a write lands first).
type snapshot struct {
	content [2][]byte
	modTime [2]time.Time
}

func snap(t *testing.T, path string) snapshot {
	t.Helper()
	var s snapshot
	for i, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil && !(i == 1 && errors.Is(err, fs.ErrNotExist)) {
			t.Fatal(err)
		}
		s.content[i] = b
		if fi, err := os.Stat(p); err == nil {
			s.modTime[i] = fi.ModTime()
		}
	}
	return s
}

func (a snapshot) same(b snapshot) bool {
	return bytes.Equal(a.content[0], b.content[0]) && bytes.Equal(a.content[1], b.content[1]) && a.modTime == b.modTime
}

// TestReadOnly: a read-only Store reads what a read-write one wrote,
// receives its notifications, refuses every write with ErrReadOnly, and
// leaves the file as it was.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ro.db")
	ctx := t.Context()
	rw := openStore(t, path)
	held := acquire(t, rw, "a", "JOB", time.Minute)
	if _, err := rw.Disable(ctx, "OFF", "kept", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := rw.AppendEvents(ctx, []store.Event{{Lock: "JOB", Kind: store.EventAcquired, Instance: "a", Token: held.Token}}); err != nil {
		t.Fatal(err)
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}

	rw = openStore(t, path, sqlite.WithNotifyPoll(10*time.Millisecond))
	ro := openStore(t, path, sqlite.ReadOnly(), sqlite.WithNotifyPoll(10*time.Millisecond))
	if st := lockState(t, ro, "JOB"); st.Holder != "a" || st.Token != held.Token || !st.Held() {
		t.Errorf("read-only Locks(JOB): %+v; want held by a", st)
	}
	if st := lockState(t, ro, "OFF"); !st.Disabled || st.Reason != "kept" {
		t.Errorf("read-only Locks(OFF): %+v; want disabled", st)
	}
	if ev, err := ro.Events(ctx, store.EventFilter{}); err != nil || len(ev) != 1 {
		t.Errorf("read-only Events: %+v, %v", ev, err)
	}
	ref := []store.LeaseRef{{Lock: "JOB", Token: held.Token}}
	ch, err := ro.Subscribe(ctx)
	if err != nil {
		t.Fatalf("read-only Subscribe: %v", err)
	}
	if err := rw.Release(ctx, "a", ref); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if got.Lock != "JOB" {
			t.Errorf("read-only subscription got %+v, want JOB", got)
		}
	case <-time.After(5 * time.Second):
		t.Error("read-only subscription: no notification of a release within 5s")
	}
	if st := lockState(t, ro, "JOB"); st.Holder != "" {
		t.Errorf("read-only Locks after the release: %+v", st)
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}

	// Only the read-only Store has the file open now: its refused writes,
	// reads and Close change neither the file nor the -wal.
	before := snap(t, path)
	if before.content[1] == nil {
		t.Fatal("no -wal file while the database is open: the check below would prove little")
	}
	for op, err := range map[string]error{
		"Acquire": func() error {
			_, err := ro.Acquire(ctx, store.Holder{ID: "b"}, []string{"NEW"}, time.Minute)
			return err
		}(),
		"Renew":        func() error { _, err := ro.Renew(ctx, "a", ref, time.Minute); return err }(),
		"Release":      ro.Release(ctx, "a", ref),
		"Disable":      func() error { _, err := ro.Disable(ctx, "JOB", "r", "ops"); return err }(),
		"Enable":       func() error { _, err := ro.Enable(ctx, "OFF", "ops"); return err }(),
		"AppendEvents": ro.AppendEvents(ctx, []store.Event{{Lock: "JOB", Kind: store.EventEnabled}}),
	} {
		if !errors.Is(err, sqlite.ErrReadOnly) {
			t.Errorf("read-only %s: %v; want ErrReadOnly", op, err)
		}
	}

	if _, err := ro.Locks(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Events(ctx, store.EventFilter{}); err != nil {
		t.Fatal(err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if !before.same(snap(t, path)) {
		t.Error("a read-only Store changed the database file")
	}
}

// TestReadOnlyOpensNothingNew: a read-only Open of a missing file or
// directory fails at once, naming what is missing, and creates nothing.
func TestReadOnlyOpensNothingNew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "none.db")
	for p, want := range map[string]string{
		path:                                  "no database file",
		filepath.Join(dir, "missing", "x.db"): filepath.Join(dir, "missing") + " does not exist",
	} {
		s, err := sqlite.Open(p, sqlite.ReadOnly())
		if err == nil {
			_ = s.Close()
			t.Fatalf("read-only Open(%s) succeeded", p)
		}
		if errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("read-only Open(%s): %v; want a permanent error saying %q", p, err, want)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("read-only Opens left %v, %v in the directory", entries, err)
	}
}

// TestReadOnlyOldVersion: a read-only Store reads a database of the
// previous version as it is (no migration, no lease_clock table): its
// leases are on the wall clock, as that version wrote them.
func TestReadOnlyOldVersion(t *testing.T) {
	t.Parallel()
	path := copyFile(t, filepath.Join("testdata", "v3.db"), filepath.Join(t.TempDir(), "v3.db"))
	var acquiredAt int64
	if err := rawDB(t, path).QueryRow(`SELECT acquired_at FROM masterjob_locks WHERE lock_name = 'LEGACY-HELD'`).Scan(&acquiredAt); err != nil {
		t.Fatal(err)
	}
	before := snap(t, path)
	clk := newFakeClocks()
	clk.wall = time.UnixMilli(acquiredAt).Add(time.Minute)
	s, err := sqlite.Open(path, sqlite.ReadOnly(), clk.option("boot-1"))
	if err != nil {
		t.Fatalf("read-only Open of a version 3 file: %v", err)
	}
	if st := lockState(t, s, "LEGACY-HELD"); st.Holder != "old-holder" || st.TTL != 59*time.Minute {
		t.Errorf("the old version's lease, read-only: %+v; want held by old-holder for 59m", st)
	}
	all, err := s.Locks(context.Background())
	if err != nil || len(all) != 3 {
		t.Errorf("read-only Locks of a version 3 file: %+v, %v", all, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !before.same(snap(t, path)) {
		t.Error("a read-only Store changed a version 3 file")
	}
	var n int
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'masterjob_lease_clock'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("lease_clock tables after a read-only open: %d, %v; want 0", n, err)
	}
}
