package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/masterjob/masterjob/store"
)

// Reconnection of LISTEN connections.
const (
	reconnectBase = 100 * time.Millisecond
	reconnectMax  = 10 * time.Second
	// maxPending bounds the distinct changes (kind and lock) waiting for a
	// slow subscriber; beyond it notifications are dropped (delivery is
	// best effort).
	maxPending = 10000
)

// Subscribe implements store.Notifier. It opens a dedicated connection
// (not from the pool) and LISTENs on the store's channel before it returns,
// so that a change committed after Subscribe returns is delivered unless the
// connection fails. If the server cannot be reached within the call timeout,
// Subscribe still returns a channel and keeps trying in the background with
// capped, jittered backoff; it does the same whenever the connection fails
// later, or stays silent for 30 seconds and then does not answer a ping.
// Notifications sent while disconnected are lost.
//
// Changes arrive in commit order, each with its kind (decodeChange); a
// change (kind and lock) already waiting for delivery is not queued twice.
// The channel is closed, and the connection and goroutines are gone, once
// ctx is done or the Store is closed.
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
	l := &listener{s: s, wake: make(chan struct{}, 1), set: map[store.Change]struct{}{}}
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

	mu    sync.Mutex
	queue []store.Change
	set   map[store.Change]struct{}
}

// decodeChange reads a NOTIFY payload: "<kind>\x1f<lock>" (see payload),
// or a bare lock name as stores before the kinds sent it (for a release,
// disable or enable), delivered as a ChangeLease.
func decodeChange(p string) store.Change {
	if kind, lock, ok := strings.Cut(p, payloadSep); ok {
		return store.Change{Kind: store.ChangeKind(kind), Lock: lock}
	}
	return store.Change{Kind: store.ChangeLease, Lock: p}
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
// the connection fails. conn may be nil: read connects first.
func (l *listener) read(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	failures := 0
	for {
		if conn == nil {
			if !sleep(ctx, backoff(failures)) {
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

// push queues c unless it is already waiting or the queue is full.
func (l *listener) push(c store.Change) {
	l.mu.Lock()
	if _, ok := l.set[c]; ok || len(l.set) >= maxPending {
		l.mu.Unlock()
		return
	}
	l.set[c] = struct{}{}
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *listener) pop() (store.Change, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return store.Change{}, false
	}
	c := l.queue[0]
	l.queue[0] = store.Change{}
	l.queue = l.queue[1:]
	if len(l.queue) == 0 {
		l.queue = nil // let the backing array go
	}
	delete(l.set, c)
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
		select {
		case out <- c:
		case <-ctx.Done():
			return
		}
	}
}

// backoff returns the wait before reconnection attempt number failures+1:
// exponential from reconnectBase, capped at reconnectMax, with the upper
// half jittered so that many subscribers do not reconnect in step.
func backoff(failures int) time.Duration {
	d := reconnectMax
	if failures < 20 {
		d = min(reconnectBase<<failures, reconnectMax)
	}
	return d/2 + rand.N(d/2+1)
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
