package mysql

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/masterjob/masterjob/store"
)

// notifyBackoffMax caps the wait between polls after a failed one.
const notifyBackoffMax = 2 * time.Second

// notifyBatch is how many notifications one poll reads at most; a full
// batch is followed by another poll at once.
const notifyBatch = 1000

// Subscribe implements store.Notifier. MySQL cannot push: a subscription
// polls the notify table, where every change is written in the transaction
// that makes it, numbered from the sequence. Subscribe reads the
// sequence's committed value before it returns, so that a change committed
// afterwards (it takes a greater number) is delivered. A goroutine then
// asks every WithNotifyPoll interval for the notifications numbered above
// the last one seen (one indexed range read, empty while nothing happens),
// and sends them on the channel in commit order, waiting for the
// subscriber (or ctx). Failed polls are retried with a growing pause, up
// to 2s. The channel is closed, and the goroutine gone, once ctx is done
// or the Store is closed.
//
// Writers prune the notifications more than 50,000 numbers old. A
// subscription that finds some it had not read pruned (it fell that far
// behind) sends store.ChangeResync before the rows it still finds.
//
// Numbers commit in order because a writer holds the sequence's row lock
// until it commits: a poll never sees a number while a smaller one is
// still to come.
func (s *Store) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	const op = "subscribe"
	cctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	var last int64
	err = queryRow(cctx, s.db, s.q.notifyMax, &last)
	if err != nil {
		err = s.wrapErr(cctx, op, err)
	}
	cancel()
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()

	ctx, stopSub := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.closing, stopSub)
	out := make(chan store.Change)
	go func() {
		defer s.subs.Done()
		defer close(out)
		defer stopOnClose()
		defer stopSub()
		s.poll(ctx, last, out)
	}()
	return out, nil
}

// poll reads and delivers notifications until ctx is done.
func (s *Store) poll(ctx context.Context, last int64, out chan<- store.Change) {
	interval := s.cfg.notifyPoll
	wait := interval
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changes, next, err := s.pollOnce(ctx, last)
		for _, c := range changes {
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
		last = next
		switch {
		case err != nil:
			wait = min(max(2*wait, interval), max(notifyBackoffMax, interval))
		case len(changes) >= notifyBatch:
			wait = 0
		default:
			wait = interval
		}
		t.Reset(wait)
	}
}

// pollOnce returns the notifications numbered above last, in order, and
// the number of the last one. A store.ChangeResync comes first when rows
// above last were pruned before this read (lostBefore).
func (s *Store) pollOnce(ctx context.Context, last int64) ([]store.Change, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.callTimeout)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, s.q.notifyFrom+" "+strconv.FormatInt(last, 10)+
		" ORDER BY ver LIMIT "+strconv.Itoa(notifyBatch))
	if err != nil {
		return nil, last, err
	}
	defer rows.Close()
	var out []store.Change
	next := last
	for rows.Next() {
		var (
			ver, low, seq int64
			kind, lock    string
		)
		if err := rows.Scan(&ver, &kind, &lock, &low, &seq); err != nil {
			return nil, last, err
		}
		if len(out) == 0 && s.lostBefore(last, low, seq) {
			out = append(out, store.Change{Kind: store.ChangeResync})
		}
		out = append(out, store.Change{Kind: store.ChangeKind(kind), Lock: lock})
		next = ver
	}
	if err := rows.Err(); err != nil {
		return nil, last, err
	}
	return out, next, nil
}

// lostBefore reports whether notifications numbered above last may have
// been pruned before they were read, from the smallest number the table
// keeps (low) and the sequence's value (seq), read in one snapshot. A
// writer whose numbers start above base deletes every row numbered up to
// base - keep, and base < seq: rows above last are gone only if no row
// numbered last+1 or less is left and seq-1-keep > last. Numbers have gaps
// (an acquisition draws one per candidate and writes rows for those it
// took), so the first test alone would report gaps as losses; with both,
// only a subscription more than keep numbers behind can be told of a loss
// that did not happen.
func (s *Store) lostBefore(last, low, seq int64) bool {
	return low > last+1 && seq-1-int64(s.cfg.notifyKeep) > last
}
