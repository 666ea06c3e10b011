package postgres

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/store"
)

// flushDelay is what every WAL flush of the store's connections costs in
// TestOnlyReleaseSkipsTheWALFlush: commit_delay at its maximum, with
// commit_siblings 0 so that it applies to every flush. An asynchronous
// commit makes no flush, so it does not wait.
const flushDelay = 100 * time.Millisecond

// TestOnlyReleaseSkipsTheWALFlush: with every WAL flush of the store's
// connections made to cost 100ms, a release returns without paying it (its
// commit is asynchronous), while an acquisition, a renewal, a hand-off
// request, a transfer (an acquisition for the successor), a disable, an
// enable and a history append still pay it: their
// commits are synchronous, durable when they return. Medians of five
// rounds: another backend of a shared server that flushes the WAL past a
// commit record spares that commit the delay now and then.
func TestOnlyReleaseSkipsTheWALFlush(t *testing.T) {
	var fsync string
	if err := adminPool(t).QueryRow(t.Context(), "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	if fsync != "on" {
		requireOrSkip(t, "the server runs with fsync="+fsync+": commit_delay, and so this test's baseline, needs fsync=on")
	}
	pool := userPool(t, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["commit_delay"] = "100000" // µs, the maximum
		c.ConnConfig.RuntimeParams["commit_siblings"] = "0"
	})
	if err := pool.Ping(t.Context()); err != nil {
		if strings.Contains(err.Error(), "permission denied") {
			requireOrSkip(t, "setting commit_delay needs a superuser (or SET privilege on it): "+err.Error())
		}
		t.Fatal(err)
	}
	s := newStoreOn(t, pool, WithSchema(newSchema(t)))
	ctx := t.Context()
	times := map[string][]time.Duration{}
	timed := func(op string, f func() error) {
		t.Helper()
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		times[op] = append(times[op], time.Since(start))
	}
	// B may be given the lock only as a live member.
	s.Announce(store.Member{ID: holderB.ID}, time.Hour)
	if _, err := s.Acquire(ctx, holderB, []string{"J-MEMBER"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		var st []store.LockState
		timed("acquire", func() (err error) {
			st, err = s.Acquire(ctx, holderA, []string{"J"}, time.Minute)
			if err == nil && !st[0].Acquired {
				t.Fatalf("round %d: J not acquired: %+v", round, st[0])
			}
			return err
		})
		ref := []store.LeaseRef{{Lock: "J", Token: st[0].Token}}
		timed("renew", func() error { _, err := s.Renew(ctx, holderA.ID, ref, time.Minute); return err })
		timed("handoff", func() error { _, err := s.Handoff(ctx, "J", "", "ops"); return err })
		timed("transfer", func() error {
			return s.Transfer(ctx, holderA.ID, []store.LeaseRef{{Lock: "J", Token: st[0].Token, Successor: holderB.ID}}, time.Minute)
		})
		got, err := s.Locks(ctx, "J")
		if err != nil || got[0].Holder != holderB.ID {
			t.Fatalf("round %d: after the transfer: %+v, %v", round, got, err)
		}
		ref = []store.LeaseRef{{Lock: "J", Token: got[0].Token}}
		timed("release", func() error { return s.Release(ctx, holderB.ID, ref) })
		timed("disable", func() error { _, err := s.Disable(ctx, "J", "test", "ops"); return err })
		timed("enable", func() error { _, err := s.Enable(ctx, "J", "ops"); return err })
		timed("append", func() error {
			return s.AppendEvents(ctx, []store.Event{{Lock: "J", Kind: store.EventReleased, Instance: holderA.ID}})
		})
	}
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	for _, op := range []string{"acquire", "renew", "handoff", "transfer", "release", "disable", "enable", "append"} {
		m := median(times[op])
		t.Logf("%-8s median %v of %v", op, m.Round(10*time.Microsecond), times[op])
		switch {
		case op == "release" && m >= flushDelay/2:
			t.Errorf("release: median %v with a WAL flush costing %v: its commit waits for the flush", m, flushDelay)
		case op != "release" && m < flushDelay*9/10:
			t.Errorf("%s: median %v with a WAL flush costing %v: its commit did not wait for the flush", op, m, flushDelay)
		}
	}
}

// requireOrSkip skips the test with why, or fails it when CI is set.
func requireOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why + " (CI is set: this test must run)")
	}
	t.Skip(why)
}

// BenchmarkReleaseCommit compares, interleaved so that the server's load
// hits both alike, a release as the store makes it (asynchronous commit)
// with the same statement committed synchronously (as before), each after
// an acquisition of the lock. It reports the median of each:
//
//	go test -run '^$' -bench ReleaseCommit -benchtime 200x ./store/postgres/
func BenchmarkReleaseCommit(b *testing.B) {
	s := openStore(b, WithSchema(newSchema(b)))
	ctx := b.Context()
	var syncT, asyncT []time.Duration
	acquire := func() []store.LeaseRef {
		st, err := s.Acquire(ctx, holderA, []string{"J"}, time.Minute)
		if err != nil || !st[0].Acquired {
			b.Fatalf("Acquire: %+v, %v", st, err)
		}
		return []store.LeaseRef{{Lock: "J", Token: st[0].Token}}
	}
	syncOn := stmt{"SELECT set_config('synchronous_commit', 'on', true)", nil}
	for b.Loop() {
		ref := acquire()
		start := time.Now()
		err := s.batch(ctx, []stmt{{s.q.release, []any{[]string{"J"}, []int64{ref[0].Token}, []string{""}, []int64{0}, holderA.ID, s.channel}}, syncOn},
			func(_ int, rows pgx.Rows) error { return discard(rows) })
		syncT = append(syncT, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		ref = acquire()
		start = time.Now()
		if err := s.Release(ctx, holderA.ID, ref); err != nil {
			b.Fatal(err)
		}
		asyncT = append(asyncT, time.Since(start))
	}
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(median(syncT), "ms/sync-release")
	b.ReportMetric(median(asyncT), "ms/release")
	b.ReportMetric(0, "ns/op")
}
