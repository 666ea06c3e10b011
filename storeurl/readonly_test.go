package storeurl

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// TestSQLiteMode: mode=ro opens a SQLite store read-only; mode=rw is the
// default; anything else is an error naming the parameter.
func TestSQLiteMode(t *testing.T) {
	for raw, want := range map[string]bool{"sqlite:x.db?mode=ro": true, "sqlite:x.db?mode=rw": false, "sqlite:x.db": false} {
		u, err := Parse(raw)
		if err != nil || u.ReadOnly != want {
			t.Errorf("Parse(%q): ReadOnly %v, %v; want %v", raw, u.ReadOnly, err, want)
		}
	}
	if _, err := Parse("sqlite:x.db?mode=rwc"); !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), "mode") || !strings.Contains(err.Error(), "rwc") {
		t.Errorf("Parse(mode=rwc): %v; want ErrInvalidURL naming mode and rwc", err)
	}

	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mj.db")
	if _, err := Open(ctx, "sqlite:"+path+"?mode=ro"); err == nil || !strings.Contains(err.Error(), "no database file") {
		t.Fatalf("mode=ro on a missing file: %v; want an error saying there is no database file", err)
	}
	rw, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := rw.Disable(ctx, "L", "test", "storeurl_test"); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(ctx, "sqlite:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if st, err := ro.Locks(ctx, "L"); err != nil || !st[0].Disabled {
		t.Fatalf("Locks read-only: %+v, %v", st, err)
	}
	if _, err := ro.Enable(ctx, "L", "storeurl_test"); !errors.Is(err, sqlite.ErrReadOnly) {
		t.Fatalf("Enable read-only: %v; want sqlite.ErrReadOnly", err)
	}
	if _, err := ro.Acquire(ctx, store.Holder{ID: "h"}, []string{"L"}, 1e9); !errors.Is(err, sqlite.ErrReadOnly) {
		t.Fatalf("Acquire read-only: %v; want sqlite.ErrReadOnly", err)
	}

	u, err := Parse("postgres://u@h/db")
	if err != nil {
		t.Fatal(err)
	}
	u.ReadOnly = true
	if _, err := u.Open(ctx); !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-only PostgreSQL: %v; want ErrInvalidURL saying read-only is for sqlite only", err)
	}
}
