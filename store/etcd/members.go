package etcd

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// announcement is what this handle writes for one member.
type announcement struct {
	value string // the record, encoded
	ttl   time.Duration
	// written is the lease the record was last written with (0: not
	// written since it changed).
	written clientv3.LeaseID
}

// Announce implements store.Membership. The record is attached to a lease
// of the member's own, of TTL ttl (LeaseTTL): Acquire and Renew keep that
// lease alive (a keepalive once a third of it has passed, in the same call)
// and rewrite the record only when it changed or its lease is new.
func (s *Store) Announce(m store.Member, ttl time.Duration) {
	locks := slices.Clone(m.Locks)
	sort.Strings(locks)
	v := mustJSON(memberRecord{Info: m.Info, Locks: locks, LockSetID: m.LockSetID, Masters: m.Masters, Weight: m.Weight})
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.announce[m.ID]
	if a == nil || a.value != v || a.ttl != ttl {
		s.announce[m.ID] = &announcement{value: v, ttl: ttl}
	}
}

// memberRefreshLag is how long a member record's lease, of TTL ttl, goes
// without a keepalive while its member calls (memberWrite): a keepalive
// is a round trip of its own, so a call makes one only once a third of the
// TTL has passed since the last. Members reports it (store.Member's
// RefreshLag), so that a reader does not take a member that calls every
// few seconds for one silent since the last keepalive.
func memberRefreshLag(ttl time.Duration) time.Duration { return ttl / 3 }

// memberWrite prepares the member record of id for the call under way:
// it keeps the record's lease alive when a third of it has passed (or
// grants one), and returns the put to add to the call's transaction when
// the record must be written. done records the write once the call
// succeeded.
func (s *Store) memberWrite(ctx context.Context, id string) (ops []clientv3.Op, done func(), err error) {
	s.mu.Lock()
	a := s.announce[id]
	var ann announcement
	if a != nil {
		ann = *a
	}
	s.mu.Unlock()
	if a == nil {
		return nil, func() {}, nil
	}
	secs, err := s.leaseSeconds(ann.ttl)
	if err != nil {
		return nil, nil, err
	}
	l, err := s.ensureLease(ctx, id, ann.ttl, memberRefreshLag(time.Duration(secs)*time.Second))
	if err != nil {
		return nil, nil, err
	}
	if ann.written == l.id {
		return nil, func() {}, nil
	}
	done = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if cur := s.announce[id]; cur != nil && cur.value == ann.value && cur.ttl == ann.ttl {
			cur.written = l.id
		}
	}
	return []clientv3.Op{clientv3.OpPut(s.memberKey(id), ann.value, clientv3.WithLease(l.id))}, done, nil
}

// Members implements store.Membership: one read of the member records and
// one LeaseTimeToLive per member not of this handle, for their TTLs.
func (s *Store) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	if f.Lock != "" {
		if err := store.ValidateLockName(f.Lock); err != nil {
			return nil, err
		}
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, s.prefix+dirMembers, clientv3.WithPrefix())
	if err != nil {
		return nil, s.fail(ctx, "read members", err)
	}
	type rec struct {
		m     store.Member
		lease clientv3.LeaseID
	}
	var recs []rec
	var ids []clientv3.LeaseID
	seen := make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), s.prefix+dirMembers)
		seen[id] = kv
		var r memberRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			continue
		}
		if f.Lock != "" {
			if i := sort.SearchStrings(r.Locks, f.Lock); i == len(r.Locks) || r.Locks[i] != f.Lock {
				continue
			}
		}
		m := store.Member{ID: id, Info: r.Info, LockCount: len(r.Locks), LockSetID: r.LockSetID, Masters: r.Masters, Weight: r.Weight}
		if f.WithLocks {
			m.Locks = r.Locks
			if m.Locks == nil {
				m.Locks = []string{}
			}
		}
		recs = append(recs, rec{m, clientv3.LeaseID(kv.Lease)})
		ids = append(ids, clientv3.LeaseID(kv.Lease))
	}
	s.mu.Lock()
	s.members = seen
	s.mu.Unlock()
	times, err := s.leaseTimes(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := []store.Member{}
	for _, r := range recs {
		lt := times[r.lease]
		if lt.remaining <= 0 {
			continue
		}
		r.m.TTL, r.m.SeenAt = lt.remaining, lt.renewedAt.Round(0)
		r.m.RefreshLag = memberRefreshLag(lt.granted)
		out = append(out, r.m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Leave implements store.Membership.
func (s *Store) Leave(ctx context.Context, id string) error {
	s.mu.Lock()
	delete(s.announce, id)
	s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	if _, err := s.cli.Delete(ctx, s.memberKey(id)); err != nil {
		return s.fail(ctx, "delete the member record", err)
	}
	return nil
}
