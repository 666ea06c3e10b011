package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
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
	other, err := a.Acquire(ctx, store.Holder{ID: "a"}, []string{"OTHER"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Release(ctx, "a", []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []store.Change{{Kind: store.ChangeLease, Lock: "OTHER", Holder: "a", Token: other[0].Token}, {Kind: store.ChangeLease, Lock: "JOB"}} {
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

// nextChange waits up to limit for the next change on ch.
func nextChange(t *testing.T, ch <-chan store.Change, limit time.Duration) (store.Change, bool) {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return c, true
	case <-time.After(limit):
		return store.Change{}, false
	}
}

// TestNotifyWakesOnCommitNotOnPoll: a subscription whose polls are an hour
// apart is still woken by a release on another handle, at once: the
// writer's doorbell, not a poll, wakes it. Renewals, which notify nothing,
// do not wake it at all. (With the 50ms poll this replaced, the release
// came only with the next poll, and an idle subscription woke 20 times a
// second.)
func TestNotifyWakesOnCommitNotOnPoll(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skipf("the file watch is Linux only (GOOS %s): subscriptions poll", runtime.GOOS)
	}
	path := filepath.Join(t.TempDir(), "wake.db")
	writer := openStore(t, path)
	sub := openStore(t, path, sqlite.WithNotifyPoll(time.Hour))
	ctx := t.Context()
	st, err := writer.Acquire(ctx, store.Holder{ID: "a"}, []string{"JOB"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", st, err)
	}
	ch, err := sub.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := []store.LeaseRef{{Lock: "JOB", Token: st[0].Token}}
	for range 50 {
		if _, err := writer.Renew(ctx, "a", ref, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if c, ok := nextChange(t, ch, 100*time.Millisecond); ok {
		t.Fatalf("notification %+v after renewals only", c)
	}
	if n := sqlite.NotifyWakes(sub); n != 0 {
		t.Errorf("the subscription woke %d times during 50 renewals, want 0", n)
	}
	start := time.Now()
	if err := writer.Release(ctx, "a", ref); err != nil {
		t.Fatal(err)
	}
	c, ok := nextChange(t, ch, 5*time.Second)
	if !ok {
		t.Fatal("release not delivered within 5s (the next poll is an hour away)")
	}
	if want := (store.Change{Kind: store.ChangeLease, Lock: "JOB"}); c != want {
		t.Fatalf("notification %+v, want %+v", c, want)
	}
	t.Logf("release delivered %v after the call, %d wake-up(s)", time.Since(start), sqlite.NotifyWakes(sub))
}

// TestNotifySafetyPoll: a commit that rings no doorbell (a writer of an
// older version, one that died between its commit and its ring) is still
// delivered, by the subscription's safety poll.
func TestNotifySafetyPoll(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "safety.db")
	sub := openStore(t, path, sqlite.WithSafetyPoll(20*time.Millisecond))
	ch, err := sub.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawDB(t, path).Exec(`INSERT INTO masterjob_notify (kind, lock_name) VALUES ('control', 'OLD')`); err != nil {
		t.Fatal(err)
	}
	c, ok := nextChange(t, ch, 5*time.Second)
	if !ok {
		t.Fatal("a commit without a ring was not delivered within 5s")
	}
	if want := (store.Change{Kind: store.ChangeControl, Lock: "OLD"}); c != want {
		t.Fatalf("notification %+v, want %+v", c, want)
	}
}

// TestNotifyWithoutWatch: where the file cannot be watched, a subscription
// polls at WithNotifyPoll and delivers all the same.
func TestNotifyWithoutWatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nowatch.db")
	writer := openStore(t, path)
	sub := openStore(t, path, sqlite.WithoutWatch(), sqlite.WithNotifyPoll(10*time.Millisecond))
	ctx := t.Context()
	ch, err := sub.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Disable(ctx, "JOB", "r", "ops"); err != nil {
		t.Fatal(err)
	}
	c, ok := nextChange(t, ch, 5*time.Second)
	if !ok {
		t.Fatal("disable not delivered within 5s")
	}
	if want := (store.Change{Kind: store.ChangeControl, Lock: "JOB"}); c != want {
		t.Fatalf("notification %+v, want %+v", c, want)
	}
	time.Sleep(100 * time.Millisecond)
	if n := sqlite.NotifyWakes(sub); n < 5 {
		t.Errorf("%d wake-ups in over 100ms at a 10ms poll: is the subscription polling?", n)
	}
}

// TestNotifyLargeBatchWhole: a batch larger than the table keeps (1,000
// rows) is written whole, so that a subscriber reading after the commit
// gets every change. Before, only the last 1,000 rows of a batch were
// written: a hand-off of 9,000 locks told eight of nine successors nothing.
func TestNotifyLargeBatchWhole(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "batch.db")
	a := openStore(t, path)
	b := openStore(t, path)
	ctx := t.Context()
	ch, err := b.Subscribe(ctx)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	const n = 2500
	locks := make([]string, n)
	for i := range locks {
		locks[i] = fmt.Sprintf("B%04d", i)
	}
	if _, err := a.Acquire(ctx, store.Holder{ID: "a"}, locks, time.Minute); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for len(seen) < n {
		select {
		case c := <-ch:
			if c.Kind == store.ChangeResync {
				t.Fatalf("a resync after %d of %d changes: the batch was not written whole", len(seen), n)
			}
			seen[c.Lock] = true
		case <-timeout:
			t.Fatalf("%d of %d changes of one batch delivered", len(seen), n)
		}
	}
}
