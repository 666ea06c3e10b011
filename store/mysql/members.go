package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/masterjob/masterjob/store"
)

// announcement is what this handle writes for a member with each Acquire
// and Renew.
type announcement struct {
	m   store.Member // Locks sorted, never nil
	ttl time.Duration
	// written is set once a call has committed the record with this
	// announcement's lock list: later calls send the list again only if
	// the stored set id turns out different (the record was deleted and
	// made again, say).
	written bool
}

// Announce implements store.Membership. It makes no call: the next Acquire
// or Renew for m.ID on this handle writes the record in its transaction.
// Names in m.Locks that are not valid lock names are left out of the list
// (no lock can have them); an id longer than 255 bytes is never written.
func (s *Store) Announce(m store.Member, ttl time.Duration) {
	locks := make([]string, 0, len(m.Locks))
	for _, l := range m.Locks {
		if store.ValidateLockName(l) == nil {
			locks = append(locks, l)
		}
	}
	slices.Sort(locks)
	m.Locks = slices.Compact(locks)
	m.LockCount = len(m.Locks)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.announce[m.ID] = &announcement{m: m, ttl: ttl}
}

// memberPart is the member's share of an Acquire or Renew batch.
type memberPart struct {
	pre, body string   // statements before and after the sequence is locked
	result    string   // the SELECT of the stored set id
	sets      int      // result sets result adds
	temps     []string // variables body sets
	a         *announcement
}

// memberWrite adds to in what the batch of a call for holder id needs to
// write its member record, if one was announced on this handle.
func (s *Store) memberWrite(id string, in *vars) memberPart {
	s.mu.Lock()
	a := s.announce[id]
	var m store.Member
	var ttl time.Duration
	var written bool
	if a != nil {
		m, ttl, written = a.m, a.ttl, a.written
	}
	s.mu.Unlock()
	if a == nil || len(id) > maxIDLen || len(m.LockSetID) > maxIDLen {
		return memberPart{}
	}
	in.str("mj_mid", id)
	in.str("mj_minfo", m.Info)
	in.str("mj_mset", m.LockSetID)
	// An empty set id cannot tell lists apart: send it every time.
	if !written || m.LockSetID == "" {
		if err := in.json("mj_mlocks", m.Locks); err != nil {
			return memberPart{}
		}
	} else {
		in.null("mj_mlocks")
	}
	in.int("mj_mcount", int64(len(m.Locks)))
	in.int("mj_mmasters", int64(m.Masters))
	in.float("mj_mweight", m.Weight)
	in.int("mj_mttl", max(ttl.Microseconds(), 1))
	return memberPart{
		pre:    s.q.memberPre + "\n",
		body:   s.q.member + "\n",
		result: s.q.memberResult + "\n",
		sets:   1,
		temps:  []string{"mj_mold", "mj_mrw", "mj_dead"},
		a:      a,
	}
}

// memberDone records, after the call committed, whether the store holds
// the lock list of the announcement the call wrote. A later Announce
// replaces the announcement: this marks only the one the call wrote.
func (s *Store) memberDone(p memberPart, stored sql.NullString) {
	if p.a == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p.a.written = stored.Valid && stored.String == p.a.m.LockSetID
}

// Members implements store.Membership: one read-only transaction.
func (s *Store) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	const op = "members"
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
	var in vars
	body := "START TRANSACTION READ ONLY;\n" + s.q.members
	if f.Lock != "" {
		in.str("mj_lock", f.Lock)
		body += s.q.membersOfLock
	}
	body += ";\n"
	sets := 1
	if f.WithLocks {
		body += s.q.memberLocks + "\n"
		sets++
	}
	body += "COMMIT;"
	b := s.batchText(in, nil, body)
	var (
		out   []store.Member
		locks map[string][]string
	)
	reset := func() { out, locks = out[:0], map[string][]string{} }
	err = s.run(ctx, op, b, sets, reset, func(set int, rows *sql.Rows) error {
		if set == 1 {
			var id, lock string
			if err := rows.Scan(&id, &lock); err != nil {
				return err
			}
			locks[id] = append(locks[id], lock)
			return nil
		}
		var (
			m     store.Member
			seen  sql.NullInt64
			ttlUS int64
		)
		if err := rows.Scan(&m.ID, &m.Info, &m.LockSetID, &m.LockCount, &m.Masters, &m.Weight, &seen, &ttlUS); err != nil {
			return err
		}
		m.SeenAt, m.TTL = micros(seen), time.Duration(ttlUS)*time.Microsecond
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if f.WithLocks {
			l := locks[out[i].ID]
			slices.Sort(l)
			if l == nil {
				l = []string{}
			}
			out[i].Locks = l
		}
	}
	slices.SortFunc(out, func(a, b store.Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	if out == nil {
		out = []store.Member{}
	}
	return out, nil
}

// Leave implements store.Membership: it stops this handle from writing the
// record, then deletes it with its lock list, and notifies.
func (s *Store) Leave(ctx context.Context, id string) error {
	const op = "leave"
	s.mu.Lock()
	delete(s.announce, id)
	s.mu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("store/mysql: %s: %w", op, store.ErrClosed)
	}
	if err := validateID(op, "member ID", id); err != nil {
		return err
	}
	ctx, cancel, err := s.begin(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	var in vars
	in.str("mj_mid", id)
	b := s.batchText(in, []string{"mj_need", "mj_base"}, s.q.leave)
	return s.run(ctx, op, b, 0, nil, nil)
}
