package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/internal/changehint"
	"github.com/masterjob/masterjob/store"
)

// Reconnection of LISTEN connections.
const (
	reconnectBase = 100 * time.Millisecond
	reconnectMax  = 10 * time.Second
	// defaultMaxPending bounds the distinct changes (kind and lock) waiting
	// for a slow subscriber. Beyond it the waiting changes are dropped and
	// a store.ChangeResync is delivered in their place.
	defaultMaxPending = 10000
)

// Subscribe implements store.Notifier. It opens a dedicated connection
// (not from the pool) and LISTENs on the store's channel before it returns,
// so that a change committed after Subscribe returns is delivered, or its
// loss announced if the connection fails. If the server cannot be reached
// within the call timeout, Subscribe still returns a channel and keeps
// trying in the background with capped, jittered backoff; it does the same
// whenever the connection fails later, or stays silent for 30 seconds and
// then does not answer a ping.
// Notifications sent while disconnected are lost: once it listens again,
// the subscription delivers a store.ChangeResync.
//
// Changes arrive in commit order, each with its kind (decodeChange); a
// change (kind and lock) already waiting for delivery is not queued twice.
// When a change arrives while 10,000 distinct changes wait for a slow
// subscriber, they are dropped and one store.ChangeResync is delivered in
// their place, before the changes that come after. The channel is closed,
// and the connection and goroutines are gone, once ctx is done or the
// Store is closed.
func (s *Store) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	const op = "subscribe"
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store/postgres: %s: %w", op, err)
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, fmt.Errorf("store/postgres: %s: %w", op, store.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.closing, cancel)
	l := &listener{s: s, wake: make(chan struct{}, 1), pending: map[changeKey]store.Change{}}
	conn, _ := l.connect(ctx) // on failure, read retries in the background
	out := make(chan store.Change)
	go func() {
		defer s.subs.Done()
		defer stopOnClose()
		defer cancel()
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			l.read(ctx, conn)
		}()
		l.deliver(ctx, out)
		<-readerDone
		close(out)
	}()
	return out, nil
}

// listener is one subscription: a reader that keeps a LISTEN connection
// and queues changes, and a deliverer that hands them to the subscriber.
type listener struct {
	s    *Store
	wake chan struct{} // signalled when the queue becomes non-empty

	mu sync.Mutex
	// queue orders the pending changes, one per kind and lock; a change
	// pushed while one of its kind and lock waits is merged into it
	// (changehint.Merge).
	queue   []changeKey
	pending map[changeKey]store.Change
	// resync is set when changes were lost since the last delivery: a
	// store.ChangeResync is delivered next, in place of the queue.
	resync bool
}

// changeKey is what pending changes coalesce on.
type changeKey struct {
	kind store.ChangeKind
	lock string
}

// decodeChange reads a NOTIFY payload: "<kind>\x1f<lock>" (see payload)
// with the hints of a lease change in the first field (leasePayload),
// or a bare lock name as stores before the kinds sent it (for a release,
// disable or enable), delivered as a ChangeLease.
func decodeChange(p string) store.Change {
	kind, lock, ok := strings.Cut(p, payloadSep)
	if !ok {
		return store.Change{Kind: store.ChangeLease, Lock: p}
	}
	return changehint.Parse(kind, lock)
}

// connect opens a connection with the pool's configuration and LISTENs.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.s.cfg.callTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, l.s.pool.Config().ConnConfig)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.s.channel}.Sanitize(), pgx.QueryExecModeSimpleProtocol); err != nil {
		closeConn(conn)
		return nil, err
	}
	if hook := l.s.onListen; hook != nil {
		hook(conn.PgConn().PID())
	}
	return conn, nil
}

// closeConn closes conn, bounded in time (the subscription's context may
// already be done).
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// read receives notifications on conn until ctx is done, reconnecting when
// the connection fails. conn may be nil: read connects first. Every
// connection it makes follows a time without one, so it announces a loss.
func (l *listener) read(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	failures := 0
	for {
		if conn == nil {
			if !sleep(ctx, backoff.Delay(failures+1, reconnectBase, reconnectMax)) {
				return
			}
			c, err := l.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				continue
			}
			conn, failures = c, 0
			l.lose()
		}
		wctx, cancel := context.WithTimeout(ctx, l.s.listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			l.push(decodeChange(n.Payload))
			continue
		case errors.Is(wctx.Err(), context.DeadlineExceeded) && pgconn.Timeout(err) && !conn.IsClosed():
			// Silence: check that the connection is still alive.
			pctx, cancel := context.WithTimeout(ctx, l.s.cfg.callTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return
			}
		}
		closeConn(conn)
		conn = nil
		failures++
	}
}

// push queues c, or merges it into the change of its kind and lock that
// waits already. A full queue is dropped, c with it, and a
// store.ChangeResync takes its place.
func (l *listener) push(c store.Change) {
	if hook := l.s.onPush; hook != nil {
		defer hook(c)
	}
	k := changeKey{c.Kind, c.Lock}
	l.mu.Lock()
	if prev, ok := l.pending[k]; ok {
		l.pending[k] = changehint.Merge(prev, c)
		l.mu.Unlock()
		return
	}
	if len(l.pending) >= l.s.maxPending {
		l.loseLocked()
	} else {
		l.pending[k] = c
		l.queue = append(l.queue, k)
	}
	l.mu.Unlock()
	l.signal()
}

// lose records that changes were lost: one store.ChangeResync is delivered
// next, however many losses come before it is read.
func (l *listener) lose() {
	l.mu.Lock()
	l.loseLocked()
	l.mu.Unlock()
	l.signal()
}

// loseLocked is lose with l.mu held, without the signal. The queued
// changes are dropped: the receiver's read after the resync covers them.
func (l *listener) loseLocked() {
	l.resync = true
	l.queue = nil
	clear(l.pending)
}

// signal wakes the deliverer.
func (l *listener) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pop takes the next change to deliver: a resync if changes were lost,
// else the oldest queued.
func (l *listener) pop() (store.Change, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.resync {
		l.resync = false
		return store.Change{Kind: store.ChangeResync}, true
	}
	if len(l.queue) == 0 {
		return store.Change{}, false
	}
	k := l.queue[0]
	l.queue[0] = changeKey{}
	l.queue = l.queue[1:]
	if len(l.queue) == 0 {
		l.queue = nil // let the backing array go
	}
	c := l.pending[k]
	delete(l.pending, k)
	return c, true
}

// deliver sends queued changes to out until ctx is done.
func (l *listener) deliver(ctx context.Context, out chan<- store.Change) {
	for {
		c, ok := l.pop()
		if !ok {
			select {
			case <-l.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if !l.send(ctx, out, c) {
			return
		}
	}
}

// send hands c to out; it reports false if ctx is done first.
func (l *listener) send(ctx context.Context, out chan<- store.Change, c store.Change) bool {
	for {
		// A signal already waiting is seen first.
		select {
		case <-l.wake:
			l.woke(c)
			continue
		default:
		}
		select {
		case out <- c:
			return true
		case <-l.wake:
			l.woke(c)
		case <-ctx.Done():
			return false
		}
	}
}

// woke handles a signal while c waits to be sent. What was queued is for
// pop once c is sent; a loss while c is a resync not yet received is
// covered by it, so that no second resync follows.
func (l *listener) woke(c store.Change) {
	if c.Kind == store.ChangeResync {
		l.mu.Lock()
		l.resync = false
		l.mu.Unlock()
	}
}

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
