package etcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// eventsPerTxn is how many entries one transaction appends, leaving room
// in etcd's --max-txn-ops (128) for as many deletions of old entries.
const eventsPerTxn = 60

// idStride spaces the ids of one transaction's entries: an entry's id is
// its transaction's revision × idStride + its position in it.
const idStride = 128

// AppendEvents implements store.History. Each entry is a key under
// P e/LOCK/, written by one transaction per 60 entries (one for any batch
// the executor makes) that also deletes the oldest entries beyond the
// retention, found by a read just before. An entry's id is its
// transaction's revision × 128 + its position in the transaction.
func (s *Store) AppendEvents(ctx context.Context, events []store.Event) error {
	for _, e := range events {
		if err := store.ValidateLockName(e.Lock); err != nil {
			return fmt.Errorf("etcd: append events: %w", err)
		}
	}
	if err := s.begin(ctx); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if over := len(events) - s.historyLimit; over > 0 {
		// The oldest of a batch longer than the retention would be pruned
		// at once: they are not written.
		events = events[over:]
	}
	// After the releases and transfers in flight (Store.ending).
	if err := s.ending.Wait(ctx); err != nil {
		return s.fail(ctx, "wait for the releases in flight", err)
	}
	dir := s.prefix + dirEvents
	// How many entries exist, and the oldest, in one read.
	read, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend),
			clientv3.WithLimit(int64(len(events)+eventsPerTxn))),
	).Commit()
	if err != nil {
		return s.fail(ctx, "read the history's size", err)
	}
	count := read.Responses[0].GetResponseRange().GetCount()
	oldest := read.Responses[1].GetResponseRange().GetKvs()
	over := max(0, int(count)+len(events)-s.historyLimit)
	over = min(over, len(oldest))
	tag := randomTag()
	now := time.Now().UnixNano()
	for start := 0; start < len(events); start += eventsPerTxn {
		batch := events[start:min(start+eventsPerTxn, len(events))]
		ops := make([]clientv3.Op, 0, 2*len(batch))
		for i, e := range batch {
			v := mustJSON(eventRecord{
				Lock: e.Lock, Kind: store.CleanText(string(e.Kind)), Instance: store.CleanText(e.Instance),
				Token: e.Token, Reason: store.CleanText(e.Reason), Remote: store.CleanText(e.Remote),
				At: now, Index: int64(i),
			})
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%s%s-%03d", s.eventDir(e.Lock), tag, fmt.Sprint(start/eventsPerTxn), i), v))
		}
		// Deletions go with the first transactions, at most one per
		// entry appended.
		n := min(over, len(batch))
		for _, kv := range oldest[:n] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
		oldest, over = oldest[n:], over-n
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return s.fail(ctx, "append events", err)
		}
	}
	return nil
}

func randomTag() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Events implements store.History: one sorted range, by create revision,
// over every entry or one lock's.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	dir := s.prefix + dirEvents
	if f.Lock != "" {
		if err := store.ValidateLockName(f.Lock); err != nil {
			return nil, fmt.Errorf("etcd: events: %w", err)
		}
		dir = s.eventDir(f.Lock)
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	limit := store.EventsLimit(f.Limit)
	opts := []clientv3.OpOption{
		clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend),
		// Entries of the revision of BeforeID that are not before it.
		clientv3.WithLimit(int64(limit + idStride)),
	}
	if f.BeforeID > 0 {
		opts = append(opts, clientv3.WithMaxCreateRev(f.BeforeID/idStride))
	}
	resp, err := s.cli.Get(ctx, dir, opts...)
	if err != nil {
		return nil, s.fail(ctx, "read events", err)
	}
	out := make([]store.Event, 0, min(limit, len(resp.Kvs)))
	for _, kv := range resp.Kvs {
		var r eventRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			continue
		}
		e := store.Event{
			ID: kv.CreateRevision*idStride + r.Index, Lock: r.Lock, Kind: store.EventKind(r.Kind),
			Instance: r.Instance, Token: r.Token, Reason: r.Reason, Remote: r.Remote, At: wallTime(r.At),
		}
		if f.BeforeID > 0 && e.ID >= f.BeforeID {
			continue
		}
		out = append(out, e)
	}
	// Within one revision, the range is in key order: put the entries of
	// a transaction newest (highest position) first.
	slices.SortStableFunc(out, func(a, b store.Event) int {
		switch {
		case a.ID > b.ID:
			return -1
		case a.ID < b.ID:
			return 1
		}
		return strings.Compare(a.Lock, b.Lock)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
