package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
)

// counter is a go-redis hook that counts what a client sends: round trips
// (one per command sent alone, one per pipeline sent to a node) and
// commands. The handshake of a new connection (HELLO, CLIENT SETINFO,
// AUTH, SELECT) is not counted: it happens once per pooled connection.
type counter struct{ trips, cmds atomic.Int64 }

func handshake(cmd goredis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

func (c *counter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (c *counter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if handshake(cmd) {
			return next(ctx, cmd)
		}
		c.trips.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if len(cmds) > 0 && handshake(cmds[0]) {
			return next(ctx, cmds)
		}
		c.trips.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func (c *counter) reset()               { c.trips.Store(0); c.cmds.Store(0) }
func (c *counter) read() (int64, int64) { return c.trips.Load(), c.cmds.Load() }

// costRow is what one call cost.
type costRow struct {
	op           string
	locks        int
	trips, cmds  int64
	elapsed      time.Duration
	slots, nodes int
}

// measureCalls acquires, renews, reads and releases n locks with s, as
// holder, and returns what each call cost as counted by c.
func measureCalls(t *testing.T, s *Store, c *counter, n int) []costRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	names := make([]string, n)
	for i := range names {
		names[i] = costName(n, i)
	}
	holder := store.Holder{ID: "cost-holder", Info: `{"host":"test"}`}
	var rows []costRow
	measure := func(op string, call func() error) {
		t.Helper()
		c.reset()
		start := time.Now()
		if err := call(); err != nil {
			t.Fatalf("%s of %d locks: %v", op, n, err)
		}
		elapsed := time.Since(start)
		trips, cmds := c.read()
		rows = append(rows, costRow{op: op, locks: n, trips: trips, cmds: cmds, elapsed: elapsed})
	}
	var states []store.LockState
	measure("Acquire", func() (err error) {
		states, err = s.Acquire(ctx, holder, names, time.Minute)
		return err
	})
	refs := make([]store.LeaseRef, 0, n)
	for _, st := range states {
		if !st.Acquired {
			t.Fatalf("%s not acquired: %+v", st.Lock, st)
		}
		refs = append(refs, store.LeaseRef{Lock: st.Lock, Token: st.Token})
	}
	measure("Renew", func() error {
		res, err := s.Renew(ctx, holder.ID, refs, time.Minute)
		for _, r := range res {
			if !r.Renewed {
				return fmt.Errorf("%s not renewed", r.Lock)
			}
		}
		return err
	})
	measure("Locks(names)", func() error { _, err := s.Locks(ctx, names...); return err })
	measure("Release", func() error { return s.Release(ctx, holder.ID, refs) })
	return rows
}

// warmUp runs every script once, so that the server has them cached and
// the counts below show the steady state (a server restart or SCRIPT FLUSH
// costs one more round trip, once, per script).
func warmUp(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	h := store.Holder{ID: "warm"}
	st, err := s.Acquire(ctx, h, []string{"WARM"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	refs := []store.LeaseRef{{Lock: "WARM", Token: st[0].Token}}
	if _, err := s.Renew(ctx, h.ID, refs, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Locks(ctx, "WARM"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, h.ID, refs); err != nil {
		t.Fatal(err)
	}
}

// TestRoundTripsFlat: on one server every call on 1, 100 or 10,000 locks
// is one round trip, carrying one script per maxLocksPerScript locks.
func TestRoundTripsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 locks: not in -short")
	}
	p := testPrefix(t)
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	opts := *u.Options
	opts.ContextTimeoutEnabled = true
	client := goredis.NewClient(&opts)
	defer client.Close()
	c := &counter{}
	client.AddHook(c)
	s, err := New(t.Context(), client, WithPrefix(p), WithLogger(quietLogger), WithCallTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	warmUp(t, s)
	for _, n := range []int{1, 100, 10000} {
		for _, r := range measureCalls(t, s, c, n) {
			t.Logf("single server: %-12s %5d locks: %d round trip(s), %d command(s), %v", r.op, r.locks, r.trips, r.cmds, r.elapsed.Round(10*time.Microsecond))
			scripts := int64((n + maxLocksPerScript - 1) / maxLocksPerScript)
			if r.trips != 1 || r.cmds != scripts {
				t.Errorf("%s of %d locks: %d round trips and %d commands, want 1 and %d", r.op, r.locks, r.trips, r.cmds, scripts)
			}
		}
	}
}

// TestServerCommandStats measures on a private server, with INFO
// commandstats, what each call costs the server: how many scripts ran
// (EVALSHA calls, counted by the server itself) and how long they held
// it, at 1, 100 and 10,000 locks.
func TestServerCommandStats(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 locks: not in -short")
	}
	srv := startServer(t)
	s := openAddr(t, srv.addr(), "?call_timeout=1m")
	admin := goredis.NewClient(&goredis.Options{Addr: srv.addr()})
	defer admin.Close()
	warmUp(t, s)
	ctx := t.Context()
	stats := func() (calls, usec int64) {
		info, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		line := infoField(info, "cmdstat_evalsha")
		for f := range strings.SplitSeq(line, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				calls = n
			case "usec":
				usec = n
			}
		}
		return calls, usec
	}
	for _, n := range []int{1, 100, 10000} {
		names := make([]string, n)
		for i := range names {
			names[i] = costName(n, i)
		}
		scripts := int64(len(s.groups(names)))
		h := store.Holder{ID: "stats"}
		var states []store.LockState
		each := []struct {
			op   string
			call func() error
		}{
			{"Acquire", func() (err error) { states, err = s.Acquire(ctx, h, names, time.Minute); return err }},
			{"Renew", func() error {
				_, err := s.Renew(ctx, h.ID, leaseRefs(states), time.Minute)
				return err
			}},
			{"Locks(names)", func() error { _, err := s.Locks(ctx, names...); return err }},
			{"Release", func() error { return s.Release(ctx, h.ID, leaseRefs(states)) }},
		}
		for _, e := range each {
			if err := admin.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := e.call(); err != nil {
				t.Fatalf("%s of %d locks: %v", e.op, n, err)
			}
			elapsed := time.Since(start)
			calls, usec := stats()
			t.Logf("%-12s %5d locks: %d script(s) run by the server, %v of server time, %v in all",
				e.op, n, calls, time.Duration(usec)*time.Microsecond, elapsed.Round(10*time.Microsecond))
			if calls != scripts {
				t.Errorf("%s of %d locks: the server ran %d scripts, want %d", e.op, n, calls, scripts)
			}
		}
	}
}

func leaseRefs(states []store.LockState) []store.LeaseRef {
	refs := make([]store.LeaseRef, len(states))
	for i, st := range states {
		refs[i] = store.LeaseRef{Lock: st.Lock, Token: st.Token}
	}
	return refs
}
