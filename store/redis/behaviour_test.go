package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
)

// openAddr opens a store on a private server.
func openAddr(t *testing.T, addr string, params string, opts ...Option) *Store {
	t.Helper()
	u, err := ParseURL("redis://" + addr + "/0" + params)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := u.Open(ctx, append([]Option{WithLogger(quietLogger)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitChange waits for a change of kind about lock on ch, or fails after
// within.
func waitChange(t *testing.T, ch <-chan store.Change, kind store.ChangeKind, lock string, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed while waiting for %s %q", kind, lock)
			}
			if c.Kind == kind && c.Lock == lock {
				return
			}
		case <-timeout:
			t.Fatalf("no %s change for %q within %v", kind, lock, within)
		}
	}
}

// TestServerRestart: a server restart that loses every key (no
// persistence, as on the shared test server) loses the lease, and the
// holder's renewal says so; the next acquisition still gets a greater
// token, because a token is at least the server's time in microseconds;
// scripts the new server does not know are sent again, in a pipeline too;
// and the subscription reconnects by itself.
func TestServerRestart(t *testing.T) {
	srv := startServer(t)
	s := openAddr(t, srv.addr(), "?call_timeout=1s")
	s.cfg.reconnectBase = 20 * time.Millisecond
	ctx := t.Context()
	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Subscribe(sub)
	if err != nil {
		t.Fatal(err)
	}
	a := store.Holder{ID: "holder-a"}
	got, err := s.Acquire(ctx, a, []string{"R"}, time.Minute)
	if err != nil || !got[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", got, err)
	}
	first := got[0]
	waitChange(t, ch, store.ChangeLease, "R", 5*time.Second)

	srv.restart()

	// The lease is gone: the holder's renewal fails once the client has
	// reconnected, and reports the lease lost.
	var res []store.RenewResult
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err = s.Renew(ctx, a.ID, []store.LeaseRef{{Lock: "R", Token: first.Token}}, time.Minute)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Renew after the restart: %v, want success or ErrUnavailable", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Renew still failing 10s after the restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res[0].Renewed {
		t.Fatalf("a lease lost with the server's memory was renewed: %+v", res[0])
	}

	// Another holder takes it with a greater token, though the token
	// counter was lost too. 1,500 locks: two scripts in one pipeline, both
	// unknown to the new server.
	names := []string{"R"}
	for i := range 1499 {
		names = append(names, fmt.Sprintf("R-%04d", i))
	}
	b := store.Holder{ID: "holder-b"}
	states, err := s.Acquire(ctx, b, names, time.Minute)
	if err != nil {
		t.Fatalf("Acquire on the new server: %v", err)
	}
	for _, st := range states {
		if !st.Acquired {
			t.Fatalf("%s not acquired after the restart: %+v", st.Lock, st)
		}
		if st.Lock == "R" && st.Token <= first.Token {
			t.Errorf("token after a restart that lost the counter: %d, want > %d (the token issued before)", st.Token, first.Token)
		}
	}

	// The subscription reconnected by itself: a change made now arrives.
	// (One made before it reconnected may be lost: retry with fresh ones.)
	deadline = time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		lock := fmt.Sprintf("PROBE-%d", i)
		if _, err := s.Disable(ctx, lock, "probe", "test"); err != nil {
			t.Fatalf("Disable: %v", err)
		}
		if drainFor(ch, lock, 500*time.Millisecond) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification 15s after the restart: the subscription did not reconnect")
		}
	}
	// Close ends the subscription.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range ch {
	}
}

// drainFor reads ch until a change about lock arrives (true) or within
// passes (false).
func drainFor(ch <-chan store.Change, lock string, within time.Duration) bool {
	timeout := time.After(within)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return false
			}
			if c.Lock == lock {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// TestExpiryEvents: on a server that publishes expiry events
// (notify-keyspace-events Ex), an expired lease is pushed to subscribers as
// a lease change; with WithoutExpiryEvents it is not, and followers wake at
// the TTL they were told.
func TestExpiryEvents(t *testing.T) {
	srv := startServer(t, "--notify-keyspace-events", "Ex")
	for _, tc := range []struct {
		name   string
		opts   []Option
		pushed bool
	}{
		{"on", nil, true},
		{"off", []Option{WithoutExpiryEvents()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openAddr(t, srv.addr(), "?prefix=expiry-"+tc.name+":", tc.opts...)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch, err := s.Subscribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := s.Acquire(ctx, store.Holder{ID: "a"}, []string{"EXP}%7D"}, 200*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			timeout := time.After(3 * time.Second)
			for {
				select {
				case c := <-ch:
					if c.Kind != store.ChangeLease || c.Lock != "EXP}%7D" {
						continue
					}
					if time.Since(start) < 150*time.Millisecond {
						continue // the acquisition's own change
					}
					if !tc.pushed {
						t.Fatalf("expiry pushed %v after acquiring, with WithoutExpiryEvents", time.Since(start))
					}
					t.Logf("expiry of a 200ms lease pushed %v after acquiring", time.Since(start).Round(time.Millisecond))
					return
				case <-timeout:
					if tc.pushed {
						t.Fatal("no expiry change within 3s of a 200ms lease")
					}
					return
				}
			}
		})
	}
}

// TestCallTimeout: a call to a server that does not answer returns within
// the call timeout, wrapping store.ErrUnavailable (CLIENT PAUSE holds every
// client's commands).
func TestCallTimeout(t *testing.T) {
	srv := startServer(t)
	s := openAddr(t, srv.addr(), "?call_timeout=300ms")
	admin := goredis.NewClient(&goredis.Options{Addr: srv.addr()})
	defer admin.Close()
	if err := admin.Do(t.Context(), "CLIENT", "PAUSE", 3000, "ALL").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	start := time.Now()
	_, err := s.Acquire(t.Context(), store.Holder{ID: "a"}, []string{"PAUSED"}, time.Minute)
	elapsed := time.Since(start)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Acquire on a paused server: %v, want ErrUnavailable", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("Acquire on a paused server returned after %v; the call timeout is 300ms", elapsed)
	}
	t.Logf("returned after %v: %v", elapsed.Round(time.Millisecond), err)
}

// argsRecorder records the number of arguments of every script call.
type argsRecorder struct {
	mu   sync.Mutex
	args []int
}

func (r *argsRecorder) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (r *argsRecorder) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			r.mu.Lock()
			r.args = append(r.args, len(cmd.Args()))
			r.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (r *argsRecorder) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (r *argsRecorder) last() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.args[len(r.args)-1]
}

// TestMemberLockListSentOnChange: a member's lock list travels with the
// first call after Announce and after its lock set changes, not with every
// renewal; a list the server lost is asked for and sent again.
func TestMemberLockListSentOnChange(t *testing.T) {
	p := testPrefix(t)
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	client := goredis.NewClient(u.Options)
	defer client.Close()
	rec := &argsRecorder{}
	client.AddHook(rec)
	s, err := New(t.Context(), client, WithPrefix(p), WithLogger(quietLogger))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	locks := make([]string, 500)
	for i := range locks {
		locks[i] = fmt.Sprintf("M-%03d", i)
	}
	h := store.Holder{ID: "member-1"}
	s.Announce(store.Member{ID: h.ID, Locks: locks, LockSetID: "set-1"}, time.Minute)
	st, err := s.Acquire(ctx, h, []string{"M-000"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n := rec.last(); n < len(locks) {
		t.Errorf("first call after Announce sent %d arguments: the lock list (%d) was not sent", n, len(locks))
	}
	refs := []store.LeaseRef{{Lock: "M-000", Token: st[0].Token}}
	renew := func() int {
		t.Helper()
		if _, err := s.Renew(ctx, h.ID, refs, time.Minute); err != nil {
			t.Fatal(err)
		}
		return rec.last()
	}
	if n := renew(); n > 50 {
		t.Errorf("a renewal with an unchanged lock set sent %d arguments: the list was sent again", n)
	}
	withLocks := func() []string {
		t.Helper()
		ms, err := s.Members(ctx, store.MemberFilter{WithLocks: true})
		if err != nil || len(ms) != 1 {
			t.Fatalf("Members: %+v, %v", ms, err)
		}
		return ms[0].Locks
	}
	if got := withLocks(); len(got) != len(locks) {
		t.Fatalf("stored %d locks, want %d", len(got), len(locks))
	}

	// The server lost the list (an eviction, say): the next renewal learns
	// it, the one after sends it.
	if err := adminClient(t).Del(ctx, s.k.mlocks(h.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	renew()
	if n := renew(); n < len(locks) {
		t.Errorf("after the server lost the list, the next renewal sent %d arguments, want the list", n)
	}
	if got := withLocks(); len(got) != len(locks) {
		t.Errorf("after resending: %d locks stored, want %d", len(got), len(locks))
	}

	// A new lock set is sent once.
	s.Announce(store.Member{ID: h.ID, Locks: locks[:100], LockSetID: "set-2"}, time.Minute)
	if n := renew(); n < 100 {
		t.Errorf("after a new lock set the renewal sent %d arguments, want the list of 100", n)
	}
	if n := renew(); n > 50 {
		t.Errorf("second renewal with set-2 sent %d arguments", n)
	}
	if got := withLocks(); len(got) != 100 {
		t.Errorf("after set-2: %d locks stored, want 100", len(got))
	}
}

// TestNewRefuses: clients the store cannot use safely are refused with a
// message saying why.
func TestNewRefuses(t *testing.T) {
	ring := goredis.NewRing(&goredis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	if _, err := New(t.Context(), ring); err == nil || !strings.Contains(err.Error(), "Ring") {
		t.Errorf("New(ring) = %v, want a refusal naming the Ring", err)
	}
	if _, err := New(t.Context(), nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, o := range []Option{WithPrefix("a{b}"), WithPrefix(strings.Repeat("p", 65)), WithCallTimeout(0), WithHistoryLimit(0), WithLogger(nil)} {
		if _, err := New(t.Context(), c, o); err == nil || !strings.Contains(err.Error(), "invalid option") {
			t.Errorf("New with a bad option: %v, want an invalid option error", err)
		}
	}
}

// TestClientWithoutContextTimeoutsWarned: a client that ignores context
// deadlines is accepted with a warning naming the setting.
func TestClientWithoutContextTimeoutsWarned(t *testing.T) {
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	adminClient(t)
	opts := *u.Options
	opts.ContextTimeoutEnabled = false
	c := goredis.NewClient(&opts)
	defer c.Close()
	var buf bytes.Buffer
	s, err := New(t.Context(), c, WithPrefix(testPrefix(t)), WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(buf.String(), "ContextTimeoutEnabled") {
		t.Errorf("no warning about ContextTimeoutEnabled; log:\n%s", buf.String())
	}
}

// TestDurabilitySettings: on private servers, the one warning at open
// names each setting that can lose leases or disables, and a server that
// persists every write and never evicts gets none.
func TestDurabilitySettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string // in the warning; none: no warning
	}{
		{"volatile and evicting", []string{"--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"},
			[]string{"keeps nothing on disk", "evicts keys when full", "allkeys-lru"}},
		{"durable", []string{"--appendonly", "yes", "--appendfsync", "always"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.args...)
			var buf bytes.Buffer
			s := openAddr(t, srv.addr(), "", WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
			log := buf.String()
			if n := strings.Count(log, "level=WARN"); (tc.want == nil && n != 0) || (tc.want != nil && n != 1) {
				t.Fatalf("%d warnings, want %d; durability %+v; log:\n%s", n, len(tc.want[:min(len(tc.want), 1)]), s.Durability(), log)
			}
			for _, w := range tc.want {
				if !strings.Contains(log, w) {
					t.Errorf("warning does not say %q: %s", w, log)
				}
			}
		})
	}
}
