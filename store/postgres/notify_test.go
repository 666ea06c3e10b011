package postgres

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/store"
)

// expectResync reads sub until a store.ChangeResync arrives, skipping the
// changes before it.
func expectResync(t *testing.T, sub <-chan store.Change, what string) {
	t.Helper()
	for {
		if c := recv(t, sub, what); c.Kind == store.ChangeResync {
			return
		}
	}
}

// expectChange reads sub until a change of kind about lock arrives,
// skipping the others. It fails on a store.ChangeResync: nothing was lost
// since the caller's last one.
func expectChange(t *testing.T, sub <-chan store.Change, kind store.ChangeKind, lock string) {
	t.Helper()
	for {
		c := recv(t, sub, fmt.Sprintf("a %s change of %s", kind, lock))
		switch {
		case c.Kind == store.ChangeResync:
			t.Fatalf("unexpected %s change waiting for a %s change of %s", c.Kind, kind, lock)
		case c.Kind == kind && c.Lock == lock:
			return
		}
	}
}

// TestSlowSubscriberOverflowResyncs: when more changes come than wait for
// a subscriber that does not read, the subscriber gets one ChangeResync,
// and the changes after it flow again.
func TestSlowSubscriberOverflowResyncs(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	// With 200 changes on a bound of 50, at most 47 wait after the last
	// overflow (one more in the deliverer's hands): AFTER still fits.
	const bound, burst = 50, 200
	s.maxPending = bound
	var received atomic.Int64
	s.onPush = func(c store.Change) {
		if c.Kind == store.ChangeLease && strings.HasPrefix(c.Lock, "BURST-") {
			received.Add(1)
		}
	}
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	locks := make([]string, burst)
	for i := range locks {
		locks[i] = fmt.Sprintf("BURST-%03d", i)
	}
	st, err := s.Acquire(t.Context(), holderA, locks, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st {
		if !l.Acquired {
			t.Fatalf("%s not acquired: %+v", l.Lock, l)
		}
	}
	waitUntil(t, "the listener received the whole burst", func() bool { return received.Load() == burst })

	delivered := 0
	for {
		c := recv(t, sub, "a resync after the overflow")
		if c.Kind == store.ChangeResync {
			break
		}
		delivered++
	}
	if delivered > 1 {
		t.Errorf("%d changes delivered before the resync, want at most the one in the deliverer's hands", delivered)
	}
	if _, err := s.Disable(t.Context(), "AFTER", "r", "b"); err != nil {
		t.Fatal(err)
	}
	// One resync for the whole loss: none follows the first.
	expectChange(t, sub, store.ChangeControl, "AFTER")
}

// TestListenReconnect: when the server kills the LISTEN connection, the
// subscription reconnects, announces with a ChangeResync that changes
// committed meanwhile were lost, and later notifications arrive.
func TestListenReconnect(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	pids := make(chan uint32, 10)
	s.onListen = func(pid uint32) { pids <- pid }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := recv(t, pids, "first LISTEN")
	if _, err := s.Disable(t.Context(), "BEFORE", "r", "b"); err != nil {
		t.Fatal(err)
	}
	// The first LISTEN loses nothing: no resync.
	if got := recv(t, sub, "notification before the kill"); got.Kind != store.ChangeControl || got.Lock != "BEFORE" {
		t.Fatalf("got %+v, want a control change of BEFORE", got)
	}

	var killed bool
	if err := adminPool(t).QueryRow(t.Context(), "SELECT pg_terminate_backend($1)", int32(first)).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", first, killed, err)
	}
	waitUntil(t, "the LISTEN backend is gone", func() bool {
		var gone bool
		err := adminPool(t).QueryRow(t.Context(), "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", int32(first)).Scan(&gone)
		return err == nil && gone
	})
	// Most likely committed before the subscription listens again (it
	// waits 100 to 200 ms): lost, or else delivered after the resync.
	if _, err := s.Disable(t.Context(), "DOWN", "r", "b"); err != nil {
		t.Fatal(err)
	}
	second := recv(t, pids, "LISTEN after the kill")
	if second == first {
		t.Fatalf("reconnected to the same backend %d", first)
	}
	if got := recv(t, sub, "resync after the reconnect"); got.Kind != store.ChangeResync || got.Lock != "" {
		t.Fatalf("first change after the reconnect: %+v, want a resync", got)
	}
	if _, err := s.Disable(t.Context(), "AFTER", "r", "b"); err != nil {
		t.Fatal(err)
	}
	expectChange(t, sub, store.ChangeControl, "AFTER")

	cancel()
	waitClosed(t, sub)
}

// TestLateListenResyncs: a subscription whose first LISTEN fails listens
// once the server is back and then sends a ChangeResync: changes
// committed before were lost.
func TestLateListenResyncs(t *testing.T) {
	schema := newSchema(t)
	px := newProxy(t)
	pool := userPool(t, func(c *pgxpool.Config) {
		host, port, _ := net.SplitHostPort(px.addr)
		c.ConnConfig.Host = host
		fmt.Sscan(port, &c.ConnConfig.Port)
		c.ConnConfig.ConnectTimeout = time.Second
	})
	s := newStoreOn(t, pool, WithSchema(schema), WithCallTimeout(time.Second))
	direct := openStore(t, WithSchema(schema))
	pids := make(chan uint32, 10)
	s.onListen = func(pid uint32) { pids <- pid }

	px.down()
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case pid := <-pids:
		t.Fatalf("LISTEN on backend %d through a proxy that is down", pid)
	default:
	}
	if _, err := direct.Disable(t.Context(), "DOWN", "r", "b"); err != nil {
		t.Fatal(err)
	}
	px.up()
	recv(t, pids, "LISTEN once the server is back")
	if got := recv(t, sub, "resync after the late LISTEN"); got.Kind != store.ChangeResync {
		t.Fatalf("first change: %+v, want a resync", got)
	}
	if _, err := direct.Disable(t.Context(), "AFTER", "r", "b"); err != nil {
		t.Fatal(err)
	}
	expectChange(t, sub, store.ChangeControl, "AFTER")
}
