package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// Subscribe implements store.Notifier with one etcd watch on the prefix.
// It returns once etcd confirmed the watch. A watch that etcd cancels (a
// lost leader, say) is resumed from the next revision not seen, which
// loses nothing. When the revisions not seen were compacted meanwhile, the
// watch resumes from the oldest revision etcd still has and a
// store.ChangeResync is sent first: the changes in between are lost.
func (s *Store) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return s.subscribe(ctx, 0)
}

// LeaseHints implements store.LeaseHinter: every lease change pushed
// carries its hints.
func (s *Store) LeaseHints() bool { return true }

// subscribe watches from revision from (0: the current one).
func (s *Store) subscribe(ctx context.Context, from int64) (<-chan store.Change, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCreatedNotify()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, s.prefix, opts...)
	next := from
	select {
	case resp, ok := <-wch:
		if !ok || !resp.Created || resp.Err() != nil {
			cancel()
			drain(wch)
			err := resp.Err()
			if err == nil {
				err = fmt.Errorf("watch ended before it started")
			}
			return nil, s.fail(ctx, "watch", err)
		}
		if from == 0 {
			next = resp.Header.Revision + 1
		}
	case <-ctx.Done():
		cancel()
		drain(wch)
		return nil, s.fail(ctx, "watch", ctx.Err())
	}
	out := make(chan store.Change, 64)
	go s.watchLoop(ctx, wctx, cancel, wch, next, out)
	return out, nil
}

// drain waits until the client closed a cancelled watch's channel.
func drain(wch clientv3.WatchChan) {
	for range wch {
	}
}

// watchLoop follows the watch wch, which delivers the revisions from next
// on, and resumes it each time etcd cancels it, until the subscription is
// over.
func (s *Store) watchLoop(ctx, wctx context.Context, cancel context.CancelFunc, wch clientv3.WatchChan, next int64, out chan<- store.Change) {
	defer close(out)
	backoff := 50 * time.Millisecond
	for {
		var lost, ok bool
		if next, lost, ok = s.follow(ctx, cancel, wch, next, out); !ok {
			return
		}
		if lost {
			// The resumed watch delivers everything from the oldest
			// revision kept, so the receiver's read misses nothing.
			select {
			case out <- store.Change{Kind: store.ChangeResync}:
			case <-ctx.Done():
				return
			}
		}
		// etcd cancelled the watch: resume it.
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
		wctx, cancel = context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch = s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(next))
	}
}

// follow passes the changes of one watch, which delivers the revisions
// from next on, to out until it ends, then cancels it and waits until the
// client let go of it. It returns the revision to resume from: the one
// after the last delivered (an event's, or a progress notification's,
// which vouches for every revision before it; not the header of a batch
// of events, which can be ahead of them while etcd catches a watch up),
// or after a compaction the oldest revision etcd kept, with lost set. ok
// is false when the subscription is over (its context done or the store
// closed).
func (s *Store) follow(ctx context.Context, cancel context.CancelFunc, wch clientv3.WatchChan, next int64, out chan<- store.Change) (_ int64, lost, ok bool) {
	defer func() {
		cancel()
		drain(wch)
	}()
	for resp := range wch {
		if resp.IsProgressNotify() {
			next = max(next, resp.Header.GetRevision()+1)
		}
		reserved := s.reservations(resp.Events)
		for _, ev := range resp.Events {
			if name, suffix, ok := s.splitLockKey(string(ev.Kv.Key)); ok && suffix == sufLease {
				if ev.Type == mvccpb.DELETE {
					s.freed.Add(1)
				}
				s.noteLease(name, ev)
			} else if ok && suffix == sufControl && enables(ev) {
				// An Enable frees the lock as a release does: the next
				// Acquire grants its lease beside its read.
				s.freed.Add(1)
			}
			if ch, ok := s.change(ev, reserved); ok {
				select {
				case out <- ch:
				case <-ctx.Done():
					return next, lost, false
				}
			}
			next = max(next, ev.Kv.ModRevision+1)
		}
		if resp.CompactRevision > 0 {
			next, lost = max(next, resp.CompactRevision), true
		}
		if resp.Canceled {
			break
		}
	}
	return next, lost, ctx.Err() == nil && !s.isClosed()
}

// enables reports whether ev, an event of a control key, wrote a record
// that says enabled.
func enables(ev *clientv3.Event) bool {
	var r controlRecord
	return ev.Type == mvccpb.PUT && json.Unmarshal(ev.Kv.Value, &r) == nil && !r.Disabled
}

// noteLease records, from a watch event of lock's lease key, the lease the
// key is on (seenLease).
func (s *Store) noteLease(lock string, ev *clientv3.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Type == mvccpb.DELETE {
		delete(s.seenLease, lock)
		return
	}
	if s.seenLease == nil {
		s.seenLease = map[string]clientv3.LeaseID{}
	}
	s.seenLease[lock] = clientv3.LeaseID(ev.Kv.Lease)
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// reservedAt names a lock and the revision of a transaction.
type reservedAt struct {
	lock string
	rev  int64
}

// reservations returns the successors named by the reservations that the
// events create: a release reserved for a successor deletes the lease key
// and puts the reservation in one transaction (one revision), which one
// watch response delivers whole.
func (s *Store) reservations(evs []*clientv3.Event) map[reservedAt]string {
	var m map[reservedAt]string
	for _, ev := range evs {
		if ev.Type != mvccpb.PUT || ev.Kv.Version != 1 {
			continue
		}
		if name, suffix, ok := s.splitLockKey(string(ev.Kv.Key)); ok && suffix == sufReserve {
			if m == nil {
				m = map[reservedAt]string{}
			}
			m[reservedAt{name, ev.Kv.ModRevision}] = string(ev.Kv.Value)
		}
	}
	return m
}

// change maps one watch event to the change it announces, if any, with
// the hints it carries (store.Change): the holder and token of a lease
// key created, and the successor of a release reserved in the same
// transaction (reserved, from reservations).
func (s *Store) change(ev *clientv3.Event, reserved map[reservedAt]string) (store.Change, bool) {
	key := string(ev.Kv.Key)
	put := ev.Type == mvccpb.PUT
	if name, suffix, ok := s.splitLockKey(key); ok {
		switch {
		case suffix == sufHolder && put:
			// Acquired or given by a transfer: the holder record of the
			// new lease, written at its token's revision, beside the lease
			// key (created, or given to the successor). A release marks
			// the record released beside the lease key's delete, which is
			// the news.
			var r holderRecord
			if json.Unmarshal(ev.Kv.Value, &r) != nil || r.Released || r.Holder == "" {
				return store.Change{}, false
			}
			return store.Change{Kind: store.ChangeLease, Lock: name, Holder: r.Holder, Token: ev.Kv.ModRevision}, true
		case suffix == sufLease && !put:
			// Released (reserved for a successor, maybe), expired or
			// revoked; a lease key moved to another lease of its holder
			// is not news.
			return store.Change{Kind: store.ChangeLease, Lock: name, ReservedFor: reserved[reservedAt{name, ev.Kv.ModRevision}]}, true
		case suffix == sufControl:
			// A Disable names the token it revoked; only a Disable writes
			// a record that says disabled (setControl skips a no-op, and
			// Handoff refuses a disabled lock).
			c := store.Change{Kind: store.ChangeControl, Lock: name}
			var r controlRecord
			if put && json.Unmarshal(ev.Kv.Value, &r) == nil && r.Disabled && r.RevokedToken > 0 {
				c.Revoked = r.RevokedToken
			}
			return c, true
		case suffix == sufReserve && !put:
			// A reservation lapsed or was taken.
			return store.Change{Kind: store.ChangeLease, Lock: name}, true
		}
		return store.Change{}, false
	}
	if rest, ok := strings.CutPrefix(key, s.prefix+dirEvents); ok && put {
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			return store.Change{Kind: store.ChangeHistory, Lock: unescapeName(rest[:i])}, true
		}
	}
	if _, ok := strings.CutPrefix(key, s.prefix+dirMembers); ok && (!put || ev.Kv.Version == 1) {
		return store.Change{Kind: store.ChangeMember}, true
	}
	return store.Change{}, false
}
