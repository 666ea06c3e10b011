//go:build linux

package chaos

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// echoServer echoes lines until the listener closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, timeout time.Duration) (time.Duration, error) {
	began := time.Now()
	_ = c.SetDeadline(began.Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, errors.New("bad echo " + line)
	}
	return time.Since(began), nil
}

func TestProxy(t *testing.T) {
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	c, r := dial()
	if _, err := roundTrip(c, r, time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.SetLatency(30 * time.Millisecond)
	if d, err := roundTrip(c, r, time.Second); err != nil || d < 60*time.Millisecond {
		t.Errorf("with 30ms latency each way: %v, %v; want >= 60ms", d, err)
	}
	p.SetLatency(0)

	p.Cut(CutReset)
	if _, err := roundTrip(c, r, 200*time.Millisecond); err == nil {
		t.Error("a reset cut left the connection working")
	}
	c2, r2 := dial()
	if _, err := roundTrip(c2, r2, 200*time.Millisecond); err == nil {
		t.Error("a reset cut accepted a new connection")
	}
	p.Restore()

	c3, r3 := dial()
	if _, err := roundTrip(c3, r3, time.Second); err != nil {
		t.Fatalf("after restore: %v", err)
	}
	p.Cut(CutStall)
	if _, err := roundTrip(c3, r3, 150*time.Millisecond); err == nil {
		t.Error("a stalled path answered")
	}
	p.Restore()
	// The held "ping" arrives after the restore, then the next one.
	_ = c3.SetDeadline(time.Now().Add(time.Second))
	if line, err := r3.ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("held bytes after restore: %q, %v", line, err)
	}
	if _, err := roundTrip(c3, r3, time.Second); err != nil {
		t.Errorf("after a stall: %v", err)
	}
}

func TestFaultStore(t *testing.T) {
	reopened := 0
	fs := newFaultStore(memstore.New(), func() (store.Store, error) { reopened++; return memstore.New(), nil })
	defer fs.Close()
	ctx := context.Background()
	h := store.Holder{ID: "a"}
	if _, err := fs.Acquire(ctx, h, []string{"x"}, time.Second); err != nil {
		t.Fatal(err)
	}

	fs.setOutage("fail", 0)
	if _, err := fs.Locks(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("fail outage: %v, want ErrUnavailable", err)
	}

	fs.setOutage("hang", 0)
	began := time.Now() // before the deadline is set: a timer never fires early
	hctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := fs.Renew(hctx, "a", []store.LeaseRef{{Lock: "x", Token: 1}}, time.Second)
	cancel()
	if !errors.Is(err, store.ErrUnavailable) || time.Since(began) < 50*time.Millisecond {
		t.Errorf("hang outage: %v after %v", err, time.Since(began))
	}
	done := make(chan error, 1)
	go func() { _, err := fs.Locks(ctx); done <- err }()
	time.Sleep(20 * time.Millisecond)
	fs.setOutage("", 0)
	if err := <-done; err != nil {
		t.Errorf("a call hung by an outage failed after the restore: %v", err)
	}

	fs.setOutage("", 40*time.Millisecond)
	began = time.Now()
	if _, err := fs.Locks(ctx); err != nil || time.Since(began) < 40*time.Millisecond {
		t.Errorf("latency: %v after %v", err, time.Since(began))
	}
	fs.setOutage("", 0)

	if err := fs.reopenStore(); err != nil || reopened != 1 {
		t.Fatalf("reopen: %v (%d)", err, reopened)
	}
	states, err := fs.Locks(ctx, "x")
	if err != nil || states[0].Held() {
		t.Errorf("after reopen the new (empty) store is used: %+v, %v", states, err)
	}
}

// TestFaultStoreSubscribe: subscriptions end when an outage begins or the
// handle is reopened, and Subscribe itself fails or hangs under an outage,
// as a server store's subscription would with a dropped connection.
func TestFaultStoreSubscribe(t *testing.T) {
	fs := newFaultStore(memstore.New(), func() (store.Store, error) { return memstore.New(), nil })
	defer fs.Close()
	ctx := t.Context()
	ended := func(ch <-chan store.Change) bool {
		select {
		case _, ok := <-ch:
			return !ok
		case <-time.After(2 * time.Second):
			return false
		}
	}

	ch, err := fs.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs.setOutage("", 10*time.Millisecond) // latency alone keeps it
	select {
	case _, ok := <-ch:
		t.Fatalf("latency ended or fed the subscription (ok=%v)", ok)
	case <-time.After(20 * time.Millisecond):
	}
	fs.setOutage("fail", 0)
	if !ended(ch) {
		t.Error("a subscription outlived the start of an outage")
	}
	if _, err := fs.Subscribe(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Subscribe during a fail outage: %v, want ErrUnavailable", err)
	}
	fs.setOutage("", 0)

	fs.setOutage("hang", 0)
	type result struct {
		ch  <-chan store.Change
		err error
	}
	got := make(chan result, 1)
	go func() {
		ch, err := fs.Subscribe(ctx) // hangs until the outage ends
		got <- result{ch, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("Subscribe returned during a hang: %v", r.err)
	case <-time.After(50 * time.Millisecond):
	}
	fs.setOutage("", 0)
	if r := <-got; r.err != nil {
		t.Errorf("Subscribe after the hang ended: %v", r.err)
	} else {
		fs.setOutage("fail", 0)
		if !ended(r.ch) {
			t.Error("a subscription made after a hang outlived the next outage")
		}
		fs.setOutage("", 0)
	}

	ch, err = fs.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.reopenStore(); err != nil {
		t.Fatal(err)
	}
	if !ended(ch) {
		t.Error("a subscription outlived a reopen")
	}
	// And one that its subscriber ends.
	sctx, cancel := context.WithCancel(ctx)
	ch, err = fs.Subscribe(sctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if !ended(ch) {
		t.Error("a subscription outlived its context")
	}
}
