package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/internal/changequeue"
	"github.com/masterjob/masterjob/store"
)

// Reconnection of subscriptions.
const (
	reconnectMax = 10 * time.Second
	// defaultMaxPending bounds the changes waiting for a slow subscriber.
	// Beyond it the waiting changes are dropped and a store.ChangeResync
	// is delivered in their place.
	defaultMaxPending = 10000
)

// Subscribe implements store.Notifier. It opens a pub/sub connection of its
// own (go-redis dials it outside the client's pool), subscribes to the
// store's channel and, on a single server unless WithoutExpiryEvents was
// given, to the database's expiry events, and waits for the server to
// confirm every subscription before it returns: a change published after
// Subscribe returns is delivered, or its loss announced if the connection
// fails.
//
// The scripts publish, in the same script as the change, one message per
// call and kind: "lease" with the names acquired or released, "control"
// with the name disabled, enabled or asked to hand off, "history" with the
// names of appended entries, "member" when a member record is written for
// the first time or removed. An expiry event of a lease or reservation key
// (when the server emits them: notify-keyspace-events with E and x, or A)
// is delivered as a lease change; of a member record, as a member change.
// Expiry events come when Redis expires the key, which for a key nobody
// reads is its periodic sampling (about 100 ms late at the default hz,
// later when many keys expire at once). When the server emits none, as
// with the default empty notify-keyspace-events, nothing tells of an
// expiry: followers wake at the TTL their last check reported.
//
// When the connection fails, or stays silent for 30 seconds and then does
// not answer a ping, the subscription reconnects with capped, jittered
// backoff; changes published meanwhile are lost, and once it is subscribed
// again it delivers a store.ChangeResync. A change waiting for delivery is
// not queued twice. When a change arrives while 10,000 wait for a slow
// subscriber, they are dropped and one store.ChangeResync is delivered in
// their place, before the changes that come after. The channel is closed,
// and the connection and goroutines are gone, once ctx is done or the
// Store is closed.
func (s *Store) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	const op = "subscribe"
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store/redis: %s: %w", op, context.Cause(ctx))
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, fmt.Errorf("store/redis: %s: %w", op, store.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.closing, cancel)
	l := &listener{s: s, q: changequeue.New(s.cfg.maxPending)}
	l.channels = []string{s.k.channel()}
	if s.cfg.expiryEvents && !s.cluster {
		l.expired = "__keyevent@" + strconv.Itoa(s.db) + "__:expired"
		l.channels = append(l.channels, l.expired)
	}
	ps, err := l.connect(ctx)
	if err != nil {
		stopOnClose()
		cancel()
		s.subs.Done()
		if errors.Is(context.Cause(ctx), context.Canceled) {
			return nil, fmt.Errorf("store/redis: %s: %w", op, context.Canceled)
		}
		return nil, fmt.Errorf("store/redis: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	out := make(chan store.Change)
	go func() {
		defer s.subs.Done()
		defer stopOnClose()
		defer cancel()
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			l.read(ctx, ps)
		}()
		l.q.Deliver(ctx, out)
		<-readerDone
		close(out)
	}()
	return out, nil
}

// listener is one subscription: a reader that keeps a pub/sub connection
// and queues changes, and a deliverer that hands them to the subscriber.
type listener struct {
	s        *Store
	channels []string
	expired  string // the expiry events channel, "" when not subscribed
	q        *changequeue.Queue
}

// connect subscribes on a new connection and waits, within the call
// timeout, for the server to confirm every channel. Closing the PubSub
// when ctx is done interrupts a wait that go-redis would not.
func (l *listener) connect(ctx context.Context) (*goredis.PubSub, error) {
	cctx, cancel := context.WithTimeout(ctx, l.s.cfg.callTimeout)
	defer cancel()
	ps := l.s.c.Subscribe(cctx, l.channels...)
	stop := context.AfterFunc(cctx, func() { _ = ps.Close() })
	for confirmed := 0; confirmed < len(l.channels); {
		msg, err := ps.ReceiveTimeout(cctx, l.s.cfg.callTimeout)
		if err != nil {
			stop()
			_ = ps.Close()
			if cctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", err, cctx.Err())
			}
			return nil, err
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			confirmed++
		case *goredis.Message:
			l.handle(m)
		}
	}
	if !stop() {
		return nil, fmt.Errorf("subscription closed: %w", cctx.Err())
	}
	return ps, nil
}

// read receives messages on ps until ctx is done, reconnecting when the
// connection fails. A reconnection announces a loss.
func (l *listener) read(ctx context.Context, ps *goredis.PubSub) {
	var (
		mu  sync.Mutex
		cur = ps
	)
	setCur := func(p *goredis.PubSub) {
		mu.Lock()
		cur = p
		mu.Unlock()
	}
	// go-redis does not interrupt a blocked read when its context is
	// cancelled: closing the connection does.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			_ = cur.Close()
		}
	})
	defer func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			_ = cur.Close()
		}
	}()
	failures := 0
	pinged := false
	for {
		if ps == nil {
			if !sleep(ctx, backoff.Delay(failures+1, l.s.cfg.reconnectBase, reconnectMax)) {
				return
			}
			p, err := l.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				continue
			}
			ps, pinged = p, false
			setCur(ps)
			if ctx.Err() != nil {
				return // the AfterFunc may have missed it
			}
			l.s.cfg.logger.Info("store/redis: notifications resubscribed", "after_failures", failures)
			failures = 0
			l.q.Lose()
		}
		msg, err := ps.ReceiveTimeout(ctx, l.s.cfg.listenPing)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			pinged = false
			if m, ok := msg.(*goredis.Message); ok {
				l.handle(m)
			}
			continue
		}
		if isTimeout(err) && !pinged {
			// Silence: check that the connection is still alive; the pong
			// arrives as a message.
			if ps.Ping(ctx) == nil {
				pinged = true
				continue
			}
		}
		if failures == 0 {
			l.s.cfg.logger.Warn("store/redis: notifications connection lost; reconnecting (changes published meanwhile are lost; a resync follows)",
				"err", err)
		}
		_ = ps.Close()
		ps = nil
		setCur(nil)
		failures++
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handle queues the changes a message announces.
func (l *listener) handle(m *goredis.Message) {
	if l.expired != "" && m.Channel == l.expired {
		if lock, ok := l.s.k.lockOfKey(m.Payload); ok {
			l.push(store.Change{Kind: store.ChangeLease, Lock: lock})
		} else if strings.HasPrefix(m.Payload, l.s.k.memberPrefix()) {
			l.push(store.Change{Kind: store.ChangeMember})
		}
		return
	}
	kind, names, _ := strings.Cut(m.Payload, "\n")
	switch k := store.ChangeKind(kind); k {
	case store.ChangeMember:
		l.push(store.Change{Kind: k})
	case store.ChangeLease, store.ChangeControl, store.ChangeHistory:
		for name := range strings.SplitSeq(names, "\n") {
			if name != "" {
				l.push(store.Change{Kind: k, Lock: name})
			}
		}
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
