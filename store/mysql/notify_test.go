package mysql

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

func recvChange(t *testing.T, ch <-chan store.Change, kind store.ChangeKind, lock string, within time.Duration) time.Time {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed while waiting for %s %q", kind, lock)
			}
			if c.Kind == kind && c.Lock == lock {
				return time.Now()
			}
		case <-timeout:
			t.Fatalf("no %s change for %q within %v", kind, lock, within)
		}
	}
}

// TestNotifyLatency: with the default poll interval, a release on one
// handle reaches a subscriber on another within about one interval (the
// wake-up a graceful hand-off waits for). It logs the delays seen.
func TestNotifyLatency(t *testing.T) {
	prefix := newPrefix(t)
	sub := openStore(t, WithTablePrefix(prefix))
	s := openStore(t, WithTablePrefix(prefix))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := sub.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var delays []time.Duration
	for i := range 20 {
		lock := fmt.Sprint("LAT-", i)
		st, err := s.Acquire(t.Context(), holderA, []string{lock}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		recvChange(t, ch, store.ChangeLease, lock, 5*time.Second)
		if err := s.Release(t.Context(), holderA.ID, []store.LeaseRef{{Lock: lock, Token: st[0].Token}}); err != nil {
			t.Fatal(err)
		}
		released := time.Now()
		delays = append(delays, recvChange(t, ch, store.ChangeLease, lock, 5*time.Second).Sub(released))
	}
	slices.Sort(delays)
	t.Logf("release to notification, %d releases, poll %v: median %v, max %v", len(delays), DefaultNotifyPoll,
		delays[len(delays)/2].Round(time.Millisecond), delays[len(delays)-1].Round(time.Millisecond))
	if max := delays[len(delays)-1]; max > time.Second {
		t.Errorf("a release took %v to reach the subscriber, want about the %v poll interval", max, DefaultNotifyPoll)
	}
}

// TestSubscribeEndsWithStore: Close ends every subscription (the channel
// closes), and a subscription survives an outage: changes made after the
// server is back are delivered.
func TestSubscribeEndsWithStore(t *testing.T) {
	prefix := newPrefix(t)
	p := newProxy(t)
	dsn := dsnWith(t, func(c *mysqldrv.Config) { c.Addr = p.addr })
	sub := openStoreDSN(t, dsn, WithTablePrefix(prefix), WithCallTimeout(500*time.Millisecond), WithNotifyPoll(10*time.Millisecond))
	s := openStore(t, WithTablePrefix(prefix))
	ch, err := sub.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p.down()
	if _, err := s.Disable(t.Context(), "DURING", "outage", "ops"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // some polls fail meanwhile
	p.up()
	if _, err := s.Disable(t.Context(), "AFTER", "outage over", "ops"); err != nil {
		t.Fatal(err)
	}
	recvChange(t, ch, store.ChangeControl, "AFTER", 10*time.Second)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the subscription's channel did not close with the store")
		}
	}
}

// BenchmarkNotifyIdle measures what subscriptions cost while nothing
// happens: each polls every WithNotifyPoll interval (MASTERJOB_BENCH_POLL,
// default 50ms). It reports the polls per second of all subscribers
// (MASTERJOB_BENCH_SUBSCRIBERS, default 10), the time of one poll, and the
// server's CPU time per poll when the server runs on this machine (read
// from /proc; other work on the server adds to it).
//
//	go test -run '^$' -bench NotifyIdle -benchtime 1x ./store/mysql
func BenchmarkNotifyIdle(b *testing.B) {
	poll := DefaultNotifyPoll
	if v := os.Getenv("MASTERJOB_BENCH_POLL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		poll = d
	}
	subscribers := 10
	if v := os.Getenv("MASTERJOB_BENCH_SUBSCRIBERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		subscribers = n
	}
	registerCountingNet()
	prefix := newPrefix(b)
	dsn := dsnWith(b, func(c *mysqldrv.Config) { c.Net = countingNet })
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		var stores []*Store
		for range subscribers {
			s := openStoreDSN(b, dsn, WithTablePrefix(prefix), WithNotifyPoll(poll))
			stores = append(stores, s)
			if _, err := s.Subscribe(ctx); err != nil {
				b.Fatal(err)
			}
		}
		const span = 5 * time.Second
		w0, cpu0 := wire.writes.Load(), serverCPU()
		start := time.Now()
		time.Sleep(span)
		elapsed := time.Since(start)
		polls, cpu := wire.writes.Load()-w0, serverCPU()-cpu0
		cancel()
		for _, s := range stores {
			_ = s.Close()
		}
		b.ReportMetric(float64(polls)/elapsed.Seconds(), "polls/s")
		b.ReportMetric(float64(polls)/elapsed.Seconds()/float64(subscribers), "polls/s/subscriber")
		if cpu >= 0 && polls > 0 {
			b.ReportMetric(float64(cpu.Microseconds())/float64(polls), "server-µs/poll")
		}
	}
	// The time of one poll on an open store.
	s := openStoreDSN(b, dsn, WithTablePrefix(prefix))
	const n = 200
	t0 := time.Now()
	for range n {
		if _, _, err := s.pollOnce(context.Background(), 1<<62); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(t0).Microseconds())/n, "µs/poll")
}

// serverCPU returns the CPU time the local mariadbd or mysqld has used, or
// -1 if there is none to read.
func serverCPU() time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		if c := strings.TrimSpace(string(comm)); c != "mariadbd" && c != "mysqld" {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			return -1
		}
		// Fields after the command (which ends with ')'): utime and
		// stime are the 12th and 13th.
		_, rest, _ := strings.Cut(string(stat), ") ")
		f := strings.Fields(rest)
		if len(f) < 13 {
			return -1
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return -1
}

// withNotifyKeep lowers how far back writers keep notifications, so that a
// test can make a subscriber fall behind the retention.
func withNotifyKeep(n int) Option { return func(c *config) { c.notifyKeep = n } }

// burst acquires count locks named prefix-N for holderA, per at a time.
func burst(t *testing.T, s *Store, prefix string, count, per int) {
	t.Helper()
	for b := 0; b < count; b += per {
		locks := make([]string, 0, per)
		for i := b; i < min(b+per, count); i++ {
			locks = append(locks, fmt.Sprintf("%s-%05d", prefix, i))
		}
		if _, err := s.Acquire(t.Context(), holderA, locks, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

// drainUntil reads ch until a control change of lock arrives, failing t
// after within. It returns the resyncs read and the locks of the lease
// changes.
func drainUntil(t *testing.T, ch <-chan store.Change, lock string, within time.Duration) (resyncs int, leases map[string]bool) {
	t.Helper()
	leases = map[string]bool{}
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed while waiting for %q", lock)
			}
			switch c.Kind {
			case store.ChangeResync:
				resyncs++
			case store.ChangeLease:
				leases[c.Lock] = true
			case store.ChangeControl:
				if c.Lock == lock {
					return resyncs, leases
				}
			}
		case <-deadline.C:
			t.Fatalf("no control change of %q within %v (%d resyncs, %d lease changes read)", lock, within, resyncs, len(leases))
		}
	}
}

// TestNotifyResyncAfterPrune: a subscriber that does not read while more
// changes commit than writers keep finds, once it reads, one
// store.ChangeResync, then the changes still kept and those made after.
// Without pruning, it finds every change and no resync.
func TestNotifyResyncAfterPrune(t *testing.T) {
	const total = 3000
	for _, c := range []struct {
		name  string
		keep  int
		pruns bool
	}{
		{"pruned", 100, true},
		{"kept", notifyKeep, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := []Option{WithTablePrefix(newPrefix(t)), WithNotifyPoll(10 * time.Millisecond), withNotifyKeep(c.keep)}
			sub := openStore(t, opts...)
			s := openStore(t, opts...)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch, err := sub.Subscribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The subscription holds one batch at most while nobody reads
			// (notifyBatch rows): with pruning, most of the others are gone
			// when it reads again.
			burst(t, s, "BURST", total, 1000)
			if _, err := s.Disable(t.Context(), "LAST", "x", "t"); err != nil {
				t.Fatal(err)
			}
			resyncs, leases := drainUntil(t, ch, "LAST", 30*time.Second)
			t.Logf("%d resync(s), %d of %d lease changes", resyncs, len(leases), total)
			if c.pruns {
				if resyncs != 1 {
					t.Fatalf("%d resyncs after %d changes of which writers kept %d, want 1", resyncs, total, c.keep)
				}
				if len(leases) >= total {
					t.Fatalf("all %d changes delivered: nothing was pruned, the test proves nothing", total)
				}
			} else {
				if resyncs != 0 {
					t.Fatalf("%d resyncs with nothing pruned", resyncs)
				}
				if len(leases) != total {
					t.Fatalf("%d of %d lease changes delivered", len(leases), total)
				}
			}
			// Changes flow on, with no other resync.
			for i := range 3 {
				lock := fmt.Sprint("AFTER-", i)
				if _, err := s.Disable(t.Context(), lock, "x", "t"); err != nil {
					t.Fatal(err)
				}
				if n, _ := drainUntil(t, ch, lock, 10*time.Second); n != 0 {
					t.Fatalf("%d more resync(s) after the first", n)
				}
			}
		})
	}
}

// TestNotifyGapsAreNoLoss: numbers drawn from the sequence without a
// notification (candidates of an acquisition that another took) leave
// gaps, which a subscriber does not take for pruned rows.
func TestNotifyGapsAreNoLoss(t *testing.T) {
	prefix := newPrefix(t)
	opts := []Option{WithTablePrefix(prefix), WithNotifyPoll(10 * time.Millisecond), withNotifyKeep(100)}
	sub := openStore(t, opts...)
	s := openStore(t, opts...)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := sub.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		// Draw 60 numbers: fewer than kept, more than none.
		if _, err := adminDB(t).ExecContext(t.Context(), "UPDATE "+quoteIdent(prefix+"seq")+" SET value = value + 60 WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		lock := fmt.Sprint("GAP-", i)
		if _, err := s.Disable(t.Context(), lock, "x", "t"); err != nil {
			t.Fatal(err)
		}
		if n, _ := drainUntil(t, ch, lock, 10*time.Second); n != 0 {
			t.Fatalf("%d resync(s) for a gap of 60 numbers (writers keep 100)", n)
		}
	}
}
