package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/masterjob/masterjob/store"
)

// notifyBackoffMax caps the wait between polls after a failed one.
const notifyBackoffMax = 2 * time.Second

// notifyTx records, in the write transaction tx, a change of kind about
// each of locks, and prunes all but the newest notifyKeep rows. Of a batch
// longer than that only the last notifyKeep are written: the others would
// be pruned in the same transaction, unseen.
func (s *Store) notifyTx(ctx context.Context, tx *sql.Tx, kind store.ChangeKind, locks ...string) error {
	var (
		res sql.Result
		err error
	)
	switch len(locks) {
	case 0:
		return nil
	case 1:
		res, err = tx.ExecContext(ctx, s.q.notify, string(kind), locks[0])
	default:
		if over := len(locks) - notifyKeep; over > 0 {
			locks = locks[over:]
		}
		list, merr := json.Marshal(locks)
		if merr != nil {
			return merr
		}
		res, err = tx.ExecContext(ctx, s.q.notifyMany, string(kind), string(list))
	}
	if err != nil {
		return err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}
	if floor := id - notifyKeep; floor > 0 {
		if _, err := tx.ExecContext(ctx, s.q.pruneNotify, floor); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe implements store.Notifier. It opens a connection of its own to
// the database file and reads the newest notification before it returns, so
// that a change committed after Subscribe returns is delivered. A goroutine
// then polls that connection every WithNotifyPoll interval with PRAGMA
// data_version and, when another connection has committed, reads the new
// notifications and sends them, with their kind, in commit order, on the
// channel (waiting for the subscriber, or for ctx). A row of a kind this
// version does not know, or written by an older version (which wrote no
// kind), is sent as store.ChangeLease. Failed polls are
// retried with a growing pause. The channel is closed, and the connection
// and goroutine are gone, once ctx is done or the Store is closed.
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
	p := &poller{s: s, db: db}
	if err := p.start(ctx); err != nil {
		_ = db.Close()
		return nil, s.wrap(ctx, op, err)
	}

	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", op, store.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.closing, cancel)
	out := make(chan store.Change)
	go func() {
		defer s.subs.Done()
		defer close(out)
		defer func() { _ = db.Close() }()
		defer stopOnClose()
		defer cancel()
		p.run(ctx, out)
	}()
	return out, nil
}

// poller is one subscription's connection and position.
type poller struct {
	s       *Store
	db      *sql.DB
	wal     fileStamp // the -wal file when data_version was last read
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

// run polls until ctx is done.
func (p *poller) run(ctx context.Context, out chan<- store.Change) {
	interval := p.s.notifyPoll
	wait := interval
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changes, err := p.poll(ctx)
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
		t.Reset(wait)
	}
}

// fileStamp identifies a version of a file's content cheaply.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{size: -1}
	}
	return fileStamp{fi.Size(), fi.ModTime()}
}

// fullReadEvery bounds how many polls may skip data_version because the
// -wal file looked unchanged: a safety net for filesystems whose
// modification times are coarse.
const fullReadEvery = 20

// poll returns the changes notified since the last poll, if another
// connection has committed since.
func (p *poller) poll(ctx context.Context) ([]store.Change, error) {
	// Every commit in WAL mode writes the -wal file, so an unchanged file
	// means nothing new: a stat costs microseconds, a query through the
	// driver hundreds of times more, twenty times a second in every process.
	stamp := stampOf(p.s.path + "-wal")
	p.polls++
	if stamp == p.wal && p.polls < fullReadEvery {
		return nil, nil
	}
	p.wal, p.polls = stamp, 0
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
		changes = append(changes, store.Change{Kind: changeKind(kind), Lock: name})
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
