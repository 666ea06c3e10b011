package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/masterjob/masterjob/store"
)

// announcement is what a handle writes for a member with each Acquire and
// Renew (Membership). It is never changed once stored: Announce replaces
// it.
type announcement struct {
	m     store.Member // Locks nil: see locks
	ttl   int64        // milliseconds
	locks []string     // sorted, without duplicates; shared, read-only
	key   string       // the member_locks set key of locks
}

// setKey is the key under which a lock set is stored in member_locks. The
// caller's LockSetID identifies the set (store.Member); with the count
// beside it, a caller that reused an id for a set of another size would
// not share that set's rows. Without an id, the key is a hash of the
// names.
func setKey(id string, locks []string) string {
	if id != "" {
		return strconv.Itoa(len(locks)) + ":" + id
	}
	h := sha256.New()
	for _, l := range locks {
		h.Write([]byte(l))
		h.Write([]byte{0})
	}
	return strconv.Itoa(len(locks)) + ":sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Announce implements store.Membership: it records, in this handle only,
// the member record that every later Acquire and Renew for m.ID writes in
// its transaction, with a TTL of ttl on the lease clock. It makes no call.
// While m.LockSetID stays the same (and is not empty), m.Locks is not even
// read again: the lock list is copied, and written to the database, only
// when the set changes.
func (s *Store) Announce(m store.Member, ttl time.Duration) {
	s.annMu.Lock()
	defer s.annMu.Unlock()
	if s.announce == nil {
		s.announce = map[string]*announcement{}
	}
	a := &announcement{m: m, ttl: millis(max(ttl, time.Millisecond))}
	a.m.Locks = nil
	if prev := s.announce[m.ID]; prev != nil && m.LockSetID != "" && prev.m.LockSetID == m.LockSetID {
		a.locks, a.key = prev.locks, prev.key
	} else {
		a.locks = slices.Compact(slices.Sorted(slices.Values(m.Locks)))
		a.key = setKey(m.LockSetID, a.locks)
	}
	a.m.LockCount = len(a.locks)
	s.announce[m.ID] = a
}

// announced reports whether a member record was announced for id on this
// handle.
func (s *Store) announced(id string) bool {
	s.annMu.Lock()
	defer s.annMu.Unlock()
	return s.announce[id] != nil
}

// writeMember writes, in the write transaction tx, the member record
// announced for id on this handle, if any: one row of the members table,
// plus the lock set's rows in member_locks if no member has that set yet
// (the first member of a set, or a member whose set changed). A record
// written for the first time, or after it expired, is notified. Expired
// records of every member are pruned, with their sets when no live member
// shares them.
func (s *Store) writeMember(ctx context.Context, tx *sql.Tx, now stamp, id string) error {
	if id == "" {
		return nil
	}
	s.annMu.Lock()
	a := s.announce[id]
	s.annMu.Unlock()
	if a == nil {
		return nil
	}
	var (
		oldKey, clk       string
		expires, wallExps int64
	)
	err := s.queryRow(ctx, tx, s.q.getMember, id).Scan(&oldKey, &clk, &expires, &wallExps)
	existed := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	joined := !existed || remainingOn(clk, expires, wallExps, now) <= 0
	if (!existed || oldKey != a.key) && len(a.locks) > 0 {
		var has bool
		if err := tx.QueryRowContext(ctx, s.q.hasSet, a.key).Scan(&has); err != nil {
			return err
		}
		if !has {
			list, err := json.Marshal(a.locks)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.q.insertSet, a.key, string(list)); err != nil {
				return err
			}
		}
	}
	m := a.m
	if _, err := s.exec(ctx, tx, s.q.upsertMember, id, m.Info, m.LockSetID, a.key, m.LockCount, m.Masters, m.Weight,
		now.wall, now.clock, now.at+a.ttl, now.wall+a.ttl); err != nil {
		return err
	}
	if existed && oldKey != a.key {
		if _, err := tx.ExecContext(ctx, s.q.dropSet, oldKey); err != nil {
			return err
		}
	}
	if err := s.pruneMembers(ctx, tx, now); err != nil {
		return err
	}
	if joined {
		return s.notifyTx(ctx, tx, store.ChangeMember, "")
	}
	return nil
}

// pruneMembers deletes the expired member records, and the lock sets no
// live member has any more. The members table has a row per live instance
// (and those that died since the last prune): reading it is cheap.
func (s *Store) pruneMembers(ctx context.Context, tx *sql.Tx, now stamp) error {
	stmt, err := s.prep(ctx, tx, s.q.memberExpiries)
	if err != nil {
		return err
	}
	rows, err := stmt.QueryContext(ctx)
	if err != nil {
		return err
	}
	var expired, keys []string
	for rows.Next() {
		var (
			id, key, clk      string
			expires, wallExps int64
		)
		if err := rows.Scan(&id, &key, &clk, &expires, &wallExps); err != nil {
			rows.Close()
			return err
		}
		if remainingOn(clk, expires, wallExps, now) <= 0 {
			expired, keys = append(expired, id), append(keys, key)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range expired {
		if _, err := tx.ExecContext(ctx, s.q.deleteMember, id); err != nil {
			return err
		}
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if _, err := tx.ExecContext(ctx, s.q.dropSet, k); err != nil {
			return err
		}
	}
	return nil
}

// Members implements store.Membership, reading one consistent snapshot:
// the unexpired member records, sorted by id, those taking part in f.Lock
// if it is set (an index lookup), each with its lock list if f.WithLocks
// (read once per distinct lock set).
func (s *Store) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	const op = "members"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if f.Lock != "" {
		if err := store.ValidateLockName(f.Lock); err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w", op, err)
		}
	}
	out := []store.Member{}
	if !s.features.cluster {
		return out, nil // a database from before version 5, read-only
	}
	err := s.readTx(ctx, op, func(tx *sql.Tx, now stamp) error {
		query, args := s.q.membersAll, []any{}
		if f.Lock != "" {
			query, args = s.q.membersLock, []any{f.Lock}
		}
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		var keys []string
		for rows.Next() {
			var (
				m                      store.Member
				key, clk               string
				seen, expires, wallExp int64
			)
			if err := rows.Scan(&m.ID, &m.Info, &m.LockSetID, &key, &m.LockCount, &m.Masters, &m.Weight,
				&seen, &clk, &expires, &wallExp); err != nil {
				rows.Close()
				return err
			}
			ms := remainingOn(clk, expires, wallExp, now)
			if ms <= 0 {
				continue
			}
			m.SeenAt, m.TTL = msTime(seen), time.Duration(ms)*time.Millisecond
			out = append(out, m)
			keys = append(keys, key)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if !f.WithLocks {
			return nil
		}
		sets := map[string][]string{}
		for i, k := range keys {
			locks, ok := sets[k]
			if !ok {
				if locks, err = s.setLocks(ctx, tx, k); err != nil {
					return err
				}
				sets[k] = locks
			}
			out[i].Locks = slices.Clone(locks)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// setLocks reads the lock names of one set, sorted.
func (s *Store) setLocks(ctx context.Context, tx *sql.Tx, key string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, s.q.setLocks, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	locks := []string{}
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return nil, err
		}
		locks = append(locks, l)
	}
	return locks, rows.Err()
}

// Leave implements store.Membership: this handle stops writing id's
// record, and one IMMEDIATE transaction deletes it (with its lock set if
// no other member has it) and notifies its departure.
func (s *Store) Leave(ctx context.Context, id string) error {
	const op = "leave"
	s.annMu.Lock()
	delete(s.announce, id)
	s.annMu.Unlock()
	return s.writeTx(ctx, op, func(tx *sql.Tx, _ stamp) error {
		var key string
		err := tx.QueryRowContext(ctx, s.q.deleteMember, id).Scan(&key)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q.dropSet, key); err != nil {
			return err
		}
		return s.notifyTx(ctx, tx, store.ChangeMember, "")
	})
}
