package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/masterjob/masterjob/internal/changehint"
	"github.com/masterjob/masterjob/store"
)

// notifyBackoffMax caps the wait between polls after a failed one.
const notifyBackoffMax = 2 * time.Second

// notifySafetyPoll is how often a subscription that watches the file
// polls all the same, for commits that rang no doorbell: those of older
// versions (during a rolling upgrade), of a writer that died between its
// commit and its ring, or whose ring failed.
const notifySafetyPoll = 5 * time.Second

// notifyTx records, in the write transaction tx, a change of kind about
// each of locks, without hints (see notifyChanges).
func (s *Store) notifyTx(ctx context.Context, tx *sql.Tx, kind store.ChangeKind, locks ...string) error {
	changes := make([]store.Change, len(locks))
	for i, l := range locks {
		changes[i] = store.Change{Kind: kind, Lock: l}
	}
	return s.notifyChanges(ctx, tx, changes)
}

// notifyChanges records changes in the write transaction tx, each as a row
// (kind with its hints, as changehint.Kind writes them; lock name), and
// prunes all but the newest notifyKeep rows, or all but this batch when it
// is longer: a subscriber that reads after the commit sees all of it. One
// that reads later finds the rows it missed pruned, and announces the loss
// (poller.read).
func (s *Store) notifyChanges(ctx context.Context, tx *sql.Tx, changes []store.Change) error {
	var (
		res sql.Result
		err error
	)
	switch len(changes) {
	case 0:
		return nil
	case 1:
		res, err = tx.ExecContext(ctx, s.q.notify, changehint.Kind(changes[0]), changes[0].Lock)
	default:
		rows := make([][2]string, len(changes))
		for i, c := range changes {
			rows[i] = [2]string{changehint.Kind(c), c.Lock}
		}
		list, merr := json.Marshal(rows)
		if merr != nil {
			return merr
		}
		res, err = tx.ExecContext(ctx, s.q.notifyMany, string(list))
	}
	if err != nil {
		return err
	}
	s.rung = true // ring once committed (writeTx)
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}
	if floor := id - int64(max(notifyKeep, len(changes))); floor > 0 {
		if _, err := tx.ExecContext(ctx, s.q.pruneNotify, floor); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe implements store.Notifier. It opens a connection of its own to
// the database file, watches the file (on Linux, with inotify) and reads
// the newest notification before it returns, so that a change committed
// after Subscribe returns is delivered. A goroutine then waits for the
// file's doorbell, which every writer of this version rings once a
// transaction that wrote notifications has committed (ring), or for the
// safety poll (every 5 seconds, or WithNotifyPoll if longer); where the file
// cannot be watched (another system, no inotify instance left) it polls
// every WithNotifyPoll instead. Woken, it reads PRAGMA data_version on its
// connection and, when another connection has committed, the new
// notifications, and sends them, with their kind, in commit order, on the
// channel (waiting for the subscriber, or for ctx). A row of a kind this
// version does not know, or written by an older version (which wrote no
// kind), is sent as store.ChangeLease. Failed reads are retried with a
// growing pause. The channel is closed, and the connection, the watch and
// the goroutine are gone, once ctx is done or the Store is closed.
func (s *Store) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	const op = "subscribe"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", s.dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	// One connection, kept open: data_version is per connection.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)

	sctx, cancel := context.WithCancel(ctx)
	p := &poller{s: s, db: db}
	// The watch comes first: a commit after the reads of start rings
	// after it, and so wakes this subscription.
	if !s.noWatch {
		p.w, _ = newWaker(sctx, s.path) // nil: poll at the full rate
	}
	release := func() {
		cancel()
		if p.w != nil {
			_ = p.w.close()
		}
		_ = db.Close()
	}
	if err := p.start(sctx); err != nil {
		err = s.wrap(ctx, op, err)
		release()
		return nil, err
	}

	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		release()
		return nil, fmt.Errorf("sqlite: %s: %w", op, store.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()

	stopOnClose := context.AfterFunc(s.closing, cancel)
	out := make(chan store.Change)
	go func() {
		defer s.subs.Done()
		defer close(out)
		defer release()
		defer stopOnClose()
		p.run(sctx, out)
	}()
	return out, nil
}

// LeaseHints implements store.LeaseHinter: every lease change pushed
// carries its hints.
func (s *Store) LeaseHints() bool { return true }

// waker tells a subscription when to look at the file.
type waker interface {
	// wait blocks until the file is rung, d has passed or ctx is done
	// (the caller checks ctx); rung is false when d passed. An error means
	// the waker is unusable from now on.
	wait(ctx context.Context, d time.Duration) (rung bool, err error)
	close() error
}

// poller is one subscription's connection and position.
type poller struct {
	s       *Store
	db      *sql.DB
	w       waker     // nil: no watch, poll at the full rate
	files   fileStamp // the database and -wal files when data_version was last read
	polls   int       // polls since data_version was last read
	version int64     // data_version at the last read
	last    int64     // id of the last notification read
}

// start records the connection's data_version and then the newest id:
// anything committed after the version was read is read by the next poll.
func (p *poller) start(ctx context.Context) error {
	if err := p.db.QueryRowContext(ctx, "PRAGMA data_version").Scan(&p.version); err != nil {
		return err
	}
	return p.db.QueryRowContext(ctx, p.s.q.notifyMax).Scan(&p.last)
}

// run waits and reads until ctx is done.
func (p *poller) run(ctx context.Context, out chan<- store.Change) {
	interval := p.interval()
	wait := interval
	var t *time.Timer // for polling without a watch
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		rung := false
		if p.w != nil {
			var err error
			rung, err = p.w.wait(ctx, wait)
			if err != nil {
				// Poll at the full rate from now on, starting now.
				_ = p.w.close()
				p.w, rung = nil, true
				interval = p.interval()
			}
		} else {
			if t == nil {
				t = time.NewTimer(wait)
			} else {
				t.Reset(wait)
			}
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		p.s.notifyWakes.Add(1)
		changes, err := p.poll(ctx, rung)
		for _, c := range changes {
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			wait = min(max(2*wait, interval), max(notifyBackoffMax, interval))
		} else {
			wait = interval
		}
	}
}

// interval is the time between polls: the safety poll while the file is
// watched, WithNotifyPoll otherwise.
func (p *poller) interval() time.Duration {
	if p.w != nil {
		return max(p.s.notifyPoll, p.s.safetyPoll)
	}
	return p.s.notifyPoll
}

// fileStamp identifies a version of the database and -wal files' content
// cheaply.
type fileStamp struct {
	db, wal stat
}

type stat struct {
	size    int64
	modTime time.Time
}

func statOf(path string) stat {
	fi, err := os.Stat(path)
	if err != nil {
		return stat{size: -1}
	}
	return stat{fi.Size(), fi.ModTime()}
}

// fullReadEvery bounds how many polls may skip data_version because the
// files looked unchanged: a safety net for file systems whose modification
// times are coarse.
const fullReadEvery = 20

// poll returns the changes notified since the last read, if another
// connection has committed since. rung says the doorbell woke it: the
// files' stamps are then not consulted.
func (p *poller) poll(ctx context.Context, rung bool) ([]store.Change, error) {
	// Every commit writes the -wal file in WAL mode, the database file in
	// rollback-journal mode, so unchanged files mean nothing new: a stat
	// costs microseconds, a query through the driver far more.
	stamp := fileStamp{db: statOf(p.s.path), wal: statOf(p.s.path + "-wal")}
	p.polls++
	if !rung && stamp == p.files && p.polls < fullReadEvery {
		return nil, nil
	}
	changes, err := p.read(ctx)
	if err == nil {
		// Only a read that worked: after a failed one, the next poll reads
		// again, whatever the files look like.
		p.files, p.polls = stamp, 0
	}
	return changes, err
}

// read returns the changes notified since the last read, if another
// connection has committed since. Ids are consecutive (AUTOINCREMENT: a
// rolled-back insert gives its ids back), so a first id beyond the next
// one means that rows this subscription had not read were pruned: a
// store.ChangeResync comes first then.
func (p *poller) read(ctx context.Context) ([]store.Change, error) {
	var v int64
	if err := p.db.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return nil, err
	}
	if v == p.version {
		return nil, nil
	}
	rows, err := p.db.QueryContext(ctx, p.s.q.notifySince, p.last)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		changes []store.Change
		last    = p.last
	)
	for rows.Next() {
		var kind, name string
		if err := rows.Scan(&last, &kind, &name); err != nil {
			return nil, err
		}
		if len(changes) == 0 && last > p.last+1 {
			changes = append(changes, store.Change{Kind: store.ChangeResync})
		}
		c := changehint.Parse(kind, name)
		c.Kind = changeKind(string(c.Kind))
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	p.version, p.last = v, last
	return changes, nil
}

// changeKind reads the kind column: unknown kinds are leases.
func changeKind(k string) store.ChangeKind {
	switch kind := store.ChangeKind(k); kind {
	case store.ChangeLease, store.ChangeControl, store.ChangeHistory, store.ChangeMember:
		return kind
	}
	return store.ChangeLease
}
