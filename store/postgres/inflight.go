package postgres

import (
	"context"
	"sync"
)

// inFlight counts calls in progress, and lets another call wait until
// there are none, without holding back the calls it counts.
//
// The store counts its releases and transfers: an executor records the
// release of a lease in the history (AppendEvents) as soon as its job
// stopped, while the release itself is in flight. On a pool with one
// connection the append then dialled a second one, and the server forked
// and initialised a backend in the middle of the hand-off; it also
// committed beside the transfer, whose commit notifying transactions
// serialise with. The append now waits for the release to return, then
// runs on the connection the release used, and commits first of the
// entries the hand-off causes. A history entry is worth no hand-off's
// millisecond.
type inFlight struct {
	mu   sync.Mutex
	n    int
	none chan struct{} // closed when n drops to zero; nil while n is zero
}

// enter counts a call in; the caller calls leave when it returns.
func (f *inFlight) enter() {
	f.mu.Lock()
	if f.n == 0 {
		f.none = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inFlight) leave() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.none)
		f.none = nil
	}
	f.mu.Unlock()
}

// wait returns once no call is in flight, or with ctx's error. Calls that
// enter while it waits may still be in flight when it returns.
func (f *inFlight) wait(ctx context.Context) error {
	f.mu.Lock()
	none := f.none
	f.mu.Unlock()
	if none == nil {
		return nil
	}
	select {
	case <-none:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
