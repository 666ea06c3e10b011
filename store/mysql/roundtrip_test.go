package mysql

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

// countingNet is a network name registered with the driver whose
// connections count what the client writes: the driver writes each command
// (a query, however long, up to 16MB) with one Write, and waits for the
// server's reply before the next, so writes are round trips.
const countingNet = "mjcount"

var wire struct {
	once          sync.Once
	writes, bytes atomic.Int64
}

type countingConn struct{ net.Conn }

func (c countingConn) Write(b []byte) (int, error) {
	wire.writes.Add(1)
	wire.bytes.Add(int64(len(b)))
	return c.Conn.Write(b)
}

func registerCountingNet() {
	wire.once.Do(func() {
		mysqldrv.RegisterDialContext(countingNet, func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c}, nil
		})
	})
}

// TestRoundTripsPerCall counts the round trips of every call at 1, 100 and
// 10,000 locks (one each, whatever the number), and logs the time and the
// bytes sent per call: run with -v for the figures of the package
// documentation.
func TestRoundTripsPerCall(t *testing.T) {
	registerCountingNet()
	prefix := newPrefix(t)
	dsn := dsnWith(t, func(c *mysqldrv.Config) { c.Net = countingNet })
	s := openStoreDSN(t, dsn, WithTablePrefix(prefix), WithCallTimeout(60*time.Second))
	// One connection, kept: a new one would add its handshake.
	s.db.SetMaxOpenConns(1)
	ctx := t.Context()
	if _, err := s.Locks(ctx, "WARM"); err != nil {
		t.Fatal(err)
	}
	type key struct {
		what string
		n    int
	}
	var (
		order []key
		times = map[key][]time.Duration{}
		sent  = map[key]int64{}
	)
	measure := func(what string, n int, call func() error) {
		t.Helper()
		w0, b0 := wire.writes.Load(), wire.bytes.Load()
		start := time.Now()
		if err := call(); err != nil {
			t.Fatalf("%s (%d locks): %v", what, n, err)
		}
		d := time.Since(start)
		writes, bytes := wire.writes.Load()-w0, wire.bytes.Load()-b0
		if writes != 1 {
			t.Errorf("%s with %d locks: %d round trips, want 1", what, n, writes)
		}
		k := key{what, n}
		if _, ok := times[k]; !ok {
			order = append(order, k)
		}
		times[k] = append(times[k], d)
		sent[k] = bytes
	}
	defer func() {
		for _, k := range order {
			ds := times[k]
			slices.Sort(ds)
			t.Logf("%-30s %6d locks: 1 round trip, %7d bytes sent, median %v of %d", k.what, k.n, sent[k], ds[len(ds)/2].Round(10*time.Microsecond), len(ds))
		}
	}()
	for i, n := range []int{1, 1, 1, 1, 1, 100, 100, 100, 100, 100, 10000, 10000, 10000} {
		names := make([]string, n)
		for j := range names {
			names[j] = fmt.Sprintf("RT-%d-%d-JOB-%06d", i, n, j)
		}
		member := store.Member{ID: holderA.ID, Info: holderA.Info, Locks: names, LockSetID: fmt.Sprint("set-", i), Weight: 1}
		s.Announce(member, time.Minute)
		var held []store.LockState
		measure("Acquire (takes all, joins)", n, func() (err error) {
			held, err = s.Acquire(ctx, holderA, names, time.Minute)
			for _, st := range held {
				if err == nil && !st.Acquired {
					err = fmt.Errorf("%s not acquired", st.Lock)
				}
			}
			return err
		})
		refs := make([]store.LeaseRef, len(held))
		for i, st := range held {
			refs[i] = store.LeaseRef{Lock: st.Lock, Token: st.Token}
		}
		measure("Acquire (follower, all held)", n, func() error {
			got, err := s.Acquire(ctx, holderB, names, time.Minute)
			for _, st := range got {
				if err == nil && st.Acquired {
					err = fmt.Errorf("%s acquired by the follower", st.Lock)
				}
			}
			return err
		})
		measure("Renew (with member record)", n, func() error {
			res, err := s.Renew(ctx, holderA.ID, refs, time.Minute)
			for _, r := range res {
				if err == nil && !r.Renewed {
					err = fmt.Errorf("%s not renewed", r.Lock)
				}
			}
			return err
		})
		measure("Locks (named)", n, func() error { _, err := s.Locks(ctx, names...); return err })
		measure("Members (with locks)", n, func() error {
			_, err := s.Members(ctx, store.MemberFilter{WithLocks: true})
			return err
		})
		measure("Release", n, func() error { return s.Release(ctx, holderA.ID, refs) })
		events := make([]store.Event, min(n, historyLimit))
		for i := range events {
			events[i] = store.Event{Lock: names[i], Kind: store.EventReleased, Instance: holderA.ID, Token: refs[i].Token}
		}
		measure("AppendEvents", len(events), func() error { return s.AppendEvents(ctx, events) })
		if err := s.Leave(ctx, holderA.ID); err != nil {
			t.Fatal(err)
		}
	}
	measure("Disable", 1, func() error { _, err := s.Disable(ctx, "RT-CONTROL", "r", "ops"); return err })
	measure("Enable", 1, func() error { _, err := s.Enable(ctx, "RT-CONTROL", "ops"); return err })
	if _, err := s.Acquire(ctx, holderA, []string{"RT-HO"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	ho, err := s.Handoff(ctx, "RT-HO", "", "ops")
	if err != nil {
		t.Fatal(err)
	}
	measure("Handoff", 1, func() error { _, err := s.Handoff(ctx, "RT-HO", "", "ops"); return err })
	measure("Transfer", 1, func() error {
		return s.Transfer(ctx, holderA.ID, []store.LeaseRef{{Lock: "RT-HO", Token: ho.Token, Successor: holderB.ID}}, time.Minute)
	})
	measure("Events", 100, func() error { _, err := s.Events(ctx, store.EventFilter{Limit: 100}); return err })
	measure("Leave", 1, func() error { return s.Leave(ctx, holderB.ID) })
	measure("Locks (all)", 20104, func() error { _, err := s.Locks(ctx); return err })
}
