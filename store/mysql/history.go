package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"

	"github.com/masterjob/masterjob/store"
)

// AppendEvents implements store.History: one transaction inserts the batch,
// prunes the entries beyond the retention and notifies each lock's
// subscribers.
func (s *Store) AppendEvents(ctx context.Context, events []store.Event) error {
	const op = "append events"
	if s.closed.Load() {
		return fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	for _, e := range events {
		if err := store.ValidateLockName(e.Lock); err != nil {
			return fmt.Errorf("store/mysql: %s: %w", op, err)
		}
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(events) == 0 {
		return nil
	}
	// Of a batch longer than the retention only the newest entries would
	// survive the pruning: insert only those.
	if over := len(events) - s.cfg.historyLimit; over > 0 {
		events = events[over:]
	}
	rows := make([][6]any, len(events))
	var locks []string
	seen := map[string]bool{}
	for i, e := range events {
		rows[i] = [6]any{e.Lock, store.CleanText(string(e.Kind)), store.CleanText(e.Instance), e.Token,
			store.CleanText(e.Reason), store.CleanText(e.Remote)}
		if !seen[e.Lock] {
			seen[e.Lock] = true
			locks = append(locks, e.Lock)
		}
	}
	var in vars
	if err := in.json("mj_req", rows); err != nil {
		return fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	if err := in.json("mj_locks", locks); err != nil {
		return fmt.Errorf("store/mysql: %s: %w", op, err)
	}
	in.int("mj_limit", int64(s.cfg.historyLimit))
	b := s.batchText(in, []string{"mj_hn", "mj_hmax", "mj_hbase"}, s.q.appendEvents)
	return s.run(ctx, op, b, 0, nil, nil)
}

// Events implements store.History.
func (s *Store) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	const op = "events"
	if s.closed.Load() {
		return nil, fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if f.Lock != "" {
		if err := validateNames(op, []string{f.Lock}); err != nil {
			return nil, err
		}
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	before := f.BeforeID
	if before <= 0 {
		before = math.MaxInt64
	}
	var in vars
	in.int("mj_before", before)
	body := s.q.eventsAll
	if f.Lock != "" {
		in.str("mj_lock", f.Lock)
		body = s.q.eventsLock
	}
	body += " " + strconv.Itoa(store.EventsLimit(f.Limit)) + ";"
	b := s.batchText(in, nil, body)
	out := []store.Event{}
	err = s.run(ctx, op, b, 1, func() { out = out[:0] }, func(_ int, rows *sql.Rows) error {
		var (
			e    store.Event
			kind string
			at   sql.NullInt64
		)
		if err := rows.Scan(&e.ID, &e.Lock, &kind, &e.Instance, &e.Token, &e.Reason, &e.Remote, &at); err != nil {
			return err
		}
		e.Kind, e.At = store.EventKind(kind), micros(at)
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
