// Package changequeue is the queue between a backend's listening
// connection and a store.Notifier's subscriber: changes of one kind and
// lock coalesce while they wait (their hints merged, changehint.Merge), a
// queue that grows past its bound is replaced by one store.ChangeResync,
// and so is a loss the backend reports (a reconnect).
package changequeue

import (
	"context"
	"sync"

	"github.com/masterjob/masterjob/internal/changehint"
	"github.com/masterjob/masterjob/store"
)

// Queue holds the changes waiting for a slow subscriber.
type Queue struct {
	max  int
	wake chan struct{} // signalled when something waits

	mu      sync.Mutex
	order   []key
	pending map[key]store.Change
	// resync is set when changes were lost since the last delivery: a
	// store.ChangeResync is delivered next, in place of the queue.
	resync bool
}

type key struct {
	kind store.ChangeKind
	lock string
}

// New returns a queue that holds at most max distinct changes.
func New(max int) *Queue {
	return &Queue{max: max, wake: make(chan struct{}, 1), pending: map[key]store.Change{}}
}

// Push queues c, or merges it into the change of its kind and lock that
// waits already. A full queue is dropped, c with it, and a
// store.ChangeResync takes its place.
func (q *Queue) Push(c store.Change) {
	k := key{c.Kind, c.Lock}
	q.mu.Lock()
	if prev, ok := q.pending[k]; ok {
		q.pending[k] = changehint.Merge(prev, c)
	} else if len(q.pending) >= q.max {
		q.loseLocked()
	} else {
		q.pending[k] = c
		q.order = append(q.order, k)
	}
	q.mu.Unlock()
	q.signal()
}

// Lose records that changes were lost: one store.ChangeResync is
// delivered next, however many losses come before it is read.
func (q *Queue) Lose() {
	q.mu.Lock()
	q.loseLocked()
	q.mu.Unlock()
	q.signal()
}

// loseLocked drops what is queued: the receiver's read after the resync
// covers it.
func (q *Queue) loseLocked() {
	q.resync = true
	q.order = nil
	clear(q.pending)
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop takes the next change to deliver: a resync if changes were lost,
// else the oldest queued.
func (q *Queue) pop() (store.Change, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.resync {
		q.resync = false
		return store.Change{Kind: store.ChangeResync}, true
	}
	if len(q.order) == 0 {
		return store.Change{}, false
	}
	k := q.order[0]
	q.order[0] = key{}
	q.order = q.order[1:]
	if len(q.order) == 0 {
		q.order = nil // let the backing array go
	}
	c := q.pending[k]
	delete(q.pending, k)
	return c, true
}

// Deliver sends queued changes to out until ctx is done.
func (q *Queue) Deliver(ctx context.Context, out chan<- store.Change) {
	for {
		c, ok := q.pop()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if !q.send(ctx, out, c) {
			return
		}
	}
}

// send hands c to out; it reports false if ctx is done first. A loss while
// c is a resync not yet received is covered by it, so that no second
// resync follows; anything else queued meanwhile is for pop once c is
// sent.
func (q *Queue) send(ctx context.Context, out chan<- store.Change, c store.Change) bool {
	woke := func() {
		if c.Kind == store.ChangeResync {
			q.mu.Lock()
			q.resync = false
			q.mu.Unlock()
		}
	}
	for {
		select { // a signal already waiting is seen first
		case <-q.wake:
			woke()
			continue
		default:
		}
		select {
		case out <- c:
			return true
		case <-q.wake:
			woke()
		case <-ctx.Done():
			return false
		}
	}
}
