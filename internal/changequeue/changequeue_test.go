package changequeue

import (
	"context"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

func next(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
		return store.Change{}
	}
}

// TestQueue: changes coalesce by kind and lock, an overflow and a reported
// loss each become one resync (however many losses before it is read), and
// changes flow again after it.
func TestQueue(t *testing.T) {
	q := New(2)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := make(chan store.Change)
	go q.Deliver(ctx, out)

	q.Push(store.Change{Kind: store.ChangeLease, Lock: "A"})
	q.Push(store.Change{Kind: store.ChangeLease, Lock: "A"}) // coalesces
	q.Push(store.Change{Kind: store.ChangeControl, Lock: "A"})
	// Deliver may hold the first change, waiting on out; the second and a
	// third overflow the rest.
	q.Push(store.Change{Kind: store.ChangeLease, Lock: "B"})
	q.Push(store.Change{Kind: store.ChangeLease, Lock: "C"})
	q.Lose()
	var got []store.Change
	for {
		c := next(t, out)
		got = append(got, c)
		if c.Kind == store.ChangeResync {
			break
		}
	}
	if len(got) > 2 {
		t.Fatalf("delivered %v before the resync; at most one change may precede it", got)
	}
	q.Push(store.Change{Kind: store.ChangeLease, Lock: "D"})
	if c := next(t, out); c.Kind != store.ChangeLease || c.Lock != "D" {
		t.Fatalf("after the resync got %+v, want the lease change of D (no second resync)", c)
	}
}
