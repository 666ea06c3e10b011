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
	"github.com/masterjob/masterjob/internal/changequeue"
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
	l := &listener{s: s, q: changequeue.New(s.maxPending)}
	conn, _ := l.connect(ctx) // on failure, read retries in the background
	out := make(chan store.Change)
	s.listeners.add(l)
	go func() {
		defer s.subs.Done()
		defer stopOnClose()
		defer cancel()
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			defer s.listeners.remove(l)
			l.read(ctx, conn)
		}()
		l.q.Deliver(ctx, out)
		<-readerDone
		close(out)
	}()
	return out, nil
}

// LeaseHints implements store.LeaseHinter: every lease change pushed
// carries its hints.
func (s *Store) LeaseHints() bool { return true }

// listener is one subscription: a reader that keeps a LISTEN connection
// and queues changes, and a deliverer that hands them to the subscriber.
type listener struct {
	s *Store
	q *changequeue.Queue

	mu sync.Mutex
	// heard is when the connection last answered: a notification, a ping
	// or the LISTEN itself.
	heard time.Time
	// interrupt ends the current wait for a notification (errPingAlong);
	// nil between waits.
	interrupt context.CancelCauseFunc
}

// errPingAlong ends a quiet LISTEN connection's wait early, to ping it
// beside another call of the store (pingAlong).
var errPingAlong = errors.New("store/postgres: ping the LISTEN connection beside another call")

// listeners are a Store's subscriptions, for pingAlong.
type listeners struct {
	mu  sync.Mutex
	set map[*listener]struct{}
}

func (ls *listeners) add(l *listener) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.set == nil {
		ls.set = map[*listener]struct{}{}
	}
	ls.set[l] = struct{}{}
}

func (ls *listeners) remove(l *listener) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.set, l)
}

// pingAlong is called as a renewal, a check or a read of the member list
// begins. A LISTEN connection that has been quiet for two thirds of
// listenPing is pinged now, beside that call, instead of on its own once
// the silence reaches listenPing: an idle instance's process then wakes
// once for both (the renewals, every heartbeat, or a follower's checks and
// member reads), not a third time for the ping. Each wake-up from idle
// costs about as much CPU as the calls it makes. The hand-off's calls
// (release, transfer) do not ping along: they have the CPU to themselves.
func (s *Store) pingAlong() {
	s.listeners.mu.Lock()
	defer s.listeners.mu.Unlock()
	if len(s.listeners.set) == 0 {
		return
	}
	now := time.Now()
	for l := range s.listeners.set {
		l.mu.Lock()
		if l.interrupt != nil && now.Sub(l.heard) >= s.listenPing*2/3 {
			l.interrupt(errPingAlong)
			l.interrupt = nil
		}
		l.mu.Unlock()
	}
}

// waitFor waits for a notification on conn for at most listenPing, or
// until pingAlong interrupts it.
func (l *listener) waitFor(ctx context.Context, conn *pgx.Conn) (*pgconn.Notification, context.Context, error) {
	wctx, cancel := context.WithTimeout(ctx, l.s.listenPing)
	defer cancel()
	wctx, interrupt := context.WithCancelCause(wctx)
	defer interrupt(nil)
	l.mu.Lock()
	l.interrupt = interrupt
	l.mu.Unlock()
	n, err := conn.WaitForNotification(wctx)
	l.mu.Lock()
	l.interrupt = nil
	if err == nil {
		l.heard = time.Now()
	}
	l.mu.Unlock()
	return n, wctx, err
}

// pingDue reports whether a wait for a notification ended (err, on wctx)
// because the connection was quiet: for listenPing, or long enough that
// pingAlong asked for the ping now. The connection is still usable then.
func pingDue(wctx context.Context, conn *pgx.Conn, err error) bool {
	if conn.IsClosed() {
		return false
	}
	switch cause := context.Cause(wctx); {
	case errors.Is(cause, context.DeadlineExceeded):
		return pgconn.Timeout(err)
	case errors.Is(cause, errPingAlong):
		return errors.Is(err, context.Canceled)
	}
	return false
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
	l.mu.Lock()
	l.heard = time.Now()
	l.mu.Unlock()
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
			l.q.Lose()
		}
		n, wctx, err := l.waitFor(ctx, conn)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			l.push(decodeChange(n.Payload))
			continue
		case pingDue(wctx, conn, err):
			// Silence: check that the connection is still alive.
			pctx, cancel := context.WithTimeout(ctx, l.s.cfg.callTimeout)
			err = conn.Ping(pctx)
			cancel()
			if hook := l.s.onPing; hook != nil {
				hook(context.Cause(wctx), err)
			}
			if err == nil {
				l.mu.Lock()
				l.heard = time.Now()
				l.mu.Unlock()
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

// push queues c (changequeue.Queue.Push), telling the tests' hook.
func (l *listener) push(c store.Change) {
	if hook := l.s.onPush; hook != nil {
		defer hook(c)
	}
	l.q.Push(c)
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
