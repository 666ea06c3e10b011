// Package inflight counts calls in progress and lets another call wait
// until there are none, without holding back the calls it counts.
//
// The stores count their releases and transfers with it. An executor
// records the release of a lease in the history as soon as its job
// stopped, while the release itself is in flight; a store's AppendEvents
// waits on the count, so that the history entry never competes with the
// hand-off for a connection or a commit. A history entry is worth no
// hand-off's millisecond.
package inflight

import (
	"context"
	"sync"
)

// Counter counts calls in flight. Its zero value counts none.
type Counter struct {
	mu   sync.Mutex
	n    int
	none chan struct{} // closed when n drops to zero; nil while n is zero
}

// Enter counts a call in; the caller calls Leave when it returns.
func (c *Counter) Enter() {
	c.mu.Lock()
	if c.n == 0 {
		c.none = make(chan struct{})
	}
	c.n++
	c.mu.Unlock()
}

// Leave counts a call out.
func (c *Counter) Leave() {
	c.mu.Lock()
	c.n--
	if c.n == 0 {
		close(c.none)
		c.none = nil
	}
	c.mu.Unlock()
}

// Wait returns once no call is in flight, or with ctx's cause. Calls that
// enter while it waits may still be in flight when it returns. With a
// context already done, it tells whether a call is in flight.
func (c *Counter) Wait(ctx context.Context) error {
	c.mu.Lock()
	none := c.none
	c.mu.Unlock()
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
