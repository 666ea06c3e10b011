package redis

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// recv returns the next change on ch, failing after 15 seconds or when ch
// is closed.
func recv(t *testing.T, ch <-chan store.Change, what string) store.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatalf("subscription closed waiting for %s", what)
		}
		return c
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// expectChange reads ch until a change of kind about lock arrives,
// skipping the others. It fails on a store.ChangeResync: nothing was lost
// since the caller's last one.
func expectChange(t *testing.T, ch <-chan store.Change, kind store.ChangeKind, lock string) {
	t.Helper()
	for {
		c := recv(t, ch, fmt.Sprintf("a %s change of %s", kind, lock))
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
	s := openTest(t, testPrefix(t), WithoutExpiryEvents())
	defer s.Close()
	// With 200 changes on a bound of 50, at most 47 wait after the last
	// overflow (one more in the deliverer's hands): AFTER still fits.
	const bound, burst = 50, 200
	s.cfg.maxPending = bound
	var received atomic.Int64
	s.onPush = func(c store.Change) {
		if c.Kind == store.ChangeLease && strings.HasPrefix(c.Lock, "BURST-") {
			received.Add(1)
		}
	}
	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	locks := make([]string, burst)
	for i := range locks {
		locks[i] = fmt.Sprintf("BURST-%03d", i)
	}
	st, err := s.Acquire(t.Context(), store.Holder{ID: "holder-a"}, locks, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st {
		if !l.Acquired {
			t.Fatalf("%s not acquired: %+v", l.Lock, l)
		}
	}
	waitFor(t, "the subscription received the whole burst", func() bool { return received.Load() == burst })

	delivered := 0
	for {
		c := recv(t, ch, "a resync after the overflow")
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
	expectChange(t, ch, store.ChangeControl, "AFTER")
}

// TestReconnectResyncs: when the server kills the pub/sub connection, the
// subscription reconnects, announces with a ChangeResync that changes
// published meanwhile were lost, and later changes arrive.
func TestReconnectResyncs(t *testing.T) {
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	prefix := testPrefix(t)
	o := *u.Options
	o.ClientName = strings.ReplaceAll(strings.TrimSuffix(prefix, ":"), ":", "-")
	u.Options = &o
	s, err := u.Open(t.Context(), WithPrefix(prefix), WithLogger(quietLogger), WithoutExpiryEvents())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	// Reconnect after 0.5 to 1 s: time to publish while nobody listens.
	s.cfg.reconnectBase = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Disable(t.Context(), "BEFORE", "r", "b"); err != nil {
		t.Fatal(err)
	}
	// The first subscription loses nothing: no resync.
	if got := recv(t, ch, "the change before the kill"); got.Kind != store.ChangeControl || got.Lock != "BEFORE" {
		t.Fatalf("got %+v, want a control change of BEFORE", got)
	}

	if n := killPubSub(t, o.ClientName); n != 1 {
		t.Fatalf("killed %d pub/sub connections named %q, want 1", n, o.ClientName)
	}
	// Published while the subscription is down: lost.
	if _, err := s.Disable(t.Context(), "DOWN", "r", "b"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch, "a resync after the reconnect"); got.Kind != store.ChangeResync || got.Lock != "" {
		t.Fatalf("first change after the kill: %+v, want a resync", got)
	}
	if _, err := s.Disable(t.Context(), "AFTER", "r", "b"); err != nil {
		t.Fatal(err)
	}
	expectChange(t, ch, store.ChangeControl, "AFTER")

	cancel()
	for range ch {
	}
}

// killPubSub ends, server side, the pub/sub connections of the clients
// named name (CLIENT KILL ID) and returns how many it ended.
func killPubSub(t *testing.T, name string) int {
	t.Helper()
	c := adminClient(t)
	list, err := c.ClientList(t.Context()).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	killed := 0
	for line := range strings.SplitSeq(strings.TrimSpace(list), "\n") {
		var id, n, flags string
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				id = v
			case "name":
				n = v
			case "flags":
				flags = v
			}
		}
		if n != name || !strings.Contains(flags, "P") {
			continue
		}
		k, err := c.ClientKillByFilter(t.Context(), "ID", id).Result()
		if err != nil {
			t.Fatalf("CLIENT KILL ID %s: %v", id, err)
		}
		killed += int(k)
	}
	return killed
}

// waitFor polls cond until it holds, failing after 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
