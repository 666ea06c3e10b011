package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// TestNotifyAcrossHandles: two Stores on one file, as two processes would
// have, deliver a release made on one to a subscriber on the other, and
// Close ends the subscription.
func TestNotifyAcrossHandles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "notify.db")
	a := openStore(t, path, sqlite.WithNotifyPoll(10*time.Millisecond))
	b, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	st, err := a.Acquire(ctx, store.Holder{ID: "a"}, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", st, err)
	}
	ch, err := b.Subscribe(ctx)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	// Changes that are not notified: an acquisition that takes nothing, a
	// renewal and a release that releases nothing. Then an acquisition and
	// a release, which are, in commit order, with their kind.
	if got, err := a.Acquire(ctx, store.Holder{ID: "b"}, []string{"JOB"}, time.Minute); err != nil || got[0].Acquired {
		t.Fatalf("Acquire of a held lock: %+v, %v", got, err)
	}
	if _, err := a.Renew(ctx, "a", []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "nobody", []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, store.Holder{ID: "a"}, []string{"OTHER"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Release(ctx, "a", []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []store.Change{{Kind: store.ChangeLease, Lock: "OTHER"}, {Kind: store.ChangeLease, Lock: "JOB"}} {
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("notification %+v, want %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%+v not delivered within 5s", want)
		}
	}
	t.Logf("release delivered after %v", time.Since(start))

	// A subscriber in the same Store as the writer is notified too.
	ch2, err := a.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Disable(ctx, "JOB", "r", "ops"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []<-chan store.Change{ch, ch2} {
		select {
		case got := <-c:
			if want := (store.Change{Kind: store.ChangeControl, Lock: "JOB"}); got != want {
				t.Fatalf("notification %+v, want %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("disable not delivered within 5s")
		}
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected notification after Close")
		}
	default:
		t.Fatal("subscription still open after Close returned")
	}
	if _, err := b.Subscribe(ctx); err == nil {
		t.Error("Subscribe after Close succeeded")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch2; ok {
		t.Fatal("unexpected notification after Close")
	}
}

// TestNotifyPrunes: the notify table keeps a bounded number of rows.
func TestNotifyPrunes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "prune.db")
	s := openStore(t, path)
	ctx := context.Background()
	for i := range 1100 {
		if i%2 == 0 {
			_, _ = s.Disable(ctx, "JOB", "r", "ops")
		} else {
			_, _ = s.Enable(ctx, "JOB", "ops")
		}
	}
	var n int
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM masterjob_notify`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1000 {
		t.Errorf("notify rows = %d, want 1000", n)
	}
}

func TestNotifyPollOption(t *testing.T) {
	t.Parallel()
	if _, err := sqlite.Open(filepath.Join(t.TempDir(), "x.db"), sqlite.WithNotifyPoll(0)); err == nil {
		t.Error("WithNotifyPoll(0) accepted")
	}
}
