package inflight

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	var f Counter
	if err := f.Wait(t.Context()); err != nil {
		t.Fatalf("wait with nothing in flight: %v", err)
	}
	f.Enter()
	f.Enter()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := f.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with calls in flight and a cancelled context: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Wait(t.Context()) }()
	f.Leave()
	select {
	case err := <-done:
		t.Fatalf("wait returned (%v) with a call still in flight", err)
	case <-time.After(20 * time.Millisecond):
	}
	f.Leave()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("wait with a cancelled context after every call left: %v", err)
	}
	f.Enter() // a new round after the last one ended
	f.Leave()
	if err := f.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}
