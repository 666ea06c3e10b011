package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// readLocks reads the keys of the named locks, or of every lock when names
// is nil, in one request at one revision: a read-only transaction with one
// range per lock for a few names, one range over every lock otherwise.
func (s *Store) readLocks(ctx context.Context, names []string) (map[string]*lockKeys, error) {
	out := make(map[string]*lockKeys, len(names))
	var kvs []*mvccpb.KeyValue
	if names == nil || len(names) > maxBatch {
		resp, err := s.cli.Get(ctx, s.prefix+dirLocks, clientv3.WithPrefix())
		if err != nil {
			return nil, s.fail(ctx, "read locks", err)
		}
		kvs = resp.Kvs
	} else if len(names) > 0 {
		ops := make([]clientv3.Op, len(names))
		for i, n := range names {
			ops[i] = clientv3.OpGet(s.lockDir(n), clientv3.WithPrefix())
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, s.fail(ctx, "read locks", err)
		}
		for _, r := range resp.Responses {
			kvs = append(kvs, r.GetResponseRange().GetKvs()...)
		}
	}
	for _, n := range names {
		out[n] = &lockKeys{name: n}
	}
	for _, kv := range kvs {
		s.addKey(out, kv, names == nil)
	}
	return out, nil
}

// addKey files kv under its lock in m (adding the lock if all).
func (s *Store) addKey(m map[string]*lockKeys, kv *mvccpb.KeyValue, all bool) {
	name, suffix, ok := s.splitLockKey(string(kv.Key))
	if !ok {
		return
	}
	k := m[name]
	if k == nil {
		if !all {
			return
		}
		k = &lockKeys{name: name}
		m[name] = k
	}
	switch suffix {
	case sufLease:
		k.lease = kv
	case sufHolder:
		k.holder = kv
	case sufControl:
		k.ctl = kv
	case sufReserve:
		k.resrv = kv
	}
}

// leaseIDs lists the leases whose time the states of ks need, but for the
// locks whose states are known already (taken, by Acquire).
func leaseIDs(ks map[string]*lockKeys, taken map[string]store.LockState) []clientv3.LeaseID {
	var ids []clientv3.LeaseID
	for n, k := range ks {
		if _, known := taken[n]; known {
			continue
		}
		if k.lease != nil {
			ids = append(ids, clientv3.LeaseID(k.lease.Lease))
		}
		if k.resrv != nil {
			ids = append(ids, clientv3.LeaseID(k.resrv.Lease))
		}
	}
	return ids
}

// state builds the store.LockState of one lock from its keys.
func state(k *lockKeys, times map[clientv3.LeaseID]leaseTime, now time.Time) store.LockState {
	ls := store.LockState{Lock: k.name, Token: k.token()}
	c := k.controlRec()
	ls.Disabled, ls.Reason, ls.ChangedBy, ls.ChangedAt = c.Disabled, c.Reason, c.ChangedBy, wallTime(c.ChangedAt)
	if k.lease != nil {
		ls.Holder = string(k.lease.Value)
		if h := k.holderRec(); h.Holder == ls.Holder && h.Token == ls.Token {
			ls.HolderInfo, ls.AcquiredAt = h.Info, wallTime(h.AcquiredAt)
		}
		lt := times[clientv3.LeaseID(k.lease.Lease)]
		ls.TTL = lt.remaining
		ls.ExpiresAt = now.Add(lt.remaining).Round(0)
		ls.RenewedAt = lt.renewedAt.Round(0)
		if ls.RenewedAt.Before(ls.AcquiredAt) {
			ls.RenewedAt = ls.AcquiredAt
		}
		if ls.AcquiredAt.IsZero() {
			ls.AcquiredAt = ls.RenewedAt
		}
		ls.Revoked = c.RevokedToken == ls.Token
		if ls.TTL > 0 && c.HandoffToken == ls.Token {
			ls.HandoffRequested, ls.HandoffTo = true, c.HandoffTo
		}
	}
	if k.resrv != nil {
		if lt := times[clientv3.LeaseID(k.resrv.Lease)]; lt.remaining > 0 {
			ls.ReservedFor, ls.ReservedTTL = string(k.resrv.Value), lt.remaining
		}
	}
	return ls
}

// ttlFrom is the time l has left from t, a moment before its last grant or
// keepalive began: l.secs, plus the time from t to that start. It is not
// positive for a lease found gone.
func ttlFrom(l lease, t time.Time) time.Duration {
	if l.secs <= 0 {
		return 0
	}
	return time.Duration(l.secs)*time.Second + l.began.Sub(t)
}

// acquirable reports whether holder may take the lock as read.
func (k *lockKeys) acquirable(holder string) bool {
	if k.lease != nil || k.controlRec().Disabled {
		return false
	}
	return k.resrv == nil || string(k.resrv.Value) == holder
}

// Acquire implements store.Store: one read of the named locks, then, if
// any is free, one transaction (per 100 locks) that takes each free lock
// on its own condition: its lease key absent and its control, holder
// record and reservation unchanged since the read. A lock taken by
// another instance in between is reported as that instance's.
func (s *Store) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	if err := validate(locks); err != nil {
		return nil, err
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	if len(locks) == 0 {
		return []store.LockState{}, nil
	}
	callStart := time.Now()
	names := dedupe(locks)
	// A lock was just freed (a release or an expiry this handle was
	// pushed): this call will likely take it, so grant (or keep alive)
	// the holder's lease beside the read rather than after it. A follower's
	// lease has lapsed, as it renews nothing; the grant is one more
	// durable write, which the takeover would otherwise wait for.
	var early chan error
	if n := s.freed.Load(); s.freedSeen.Swap(n) != n {
		early = make(chan error, 1)
		go func() {
			_, err := s.ensureLease(ctx, h.ID, ttl, time.Duration(LeaseTTL(ttl))*time.Second/3)
			early <- err
		}()
	}
	ks, err := s.readLocks(ctx, names)
	if early != nil {
		// Its error, if any, comes again from take's own ensureLease.
		<-early
	}
	if err != nil {
		return nil, err
	}
	var want []string
	for _, n := range names {
		if ks[n].acquirable(h.ID) {
			want = append(want, n)
		}
	}
	acquired := map[string]store.LockState{}
	memberOps, memberDone, err := s.memberWrite(ctx, h.ID)
	if err != nil {
		return nil, err
	}
	if len(want) > 0 {
		if acquired, err = s.take(ctx, h, ks, want, ttl, callStart, memberOps); err != nil {
			return nil, err
		}
		memberOps = nil
	}
	if len(memberOps) > 0 {
		if _, err := s.cli.Txn(ctx).Then(memberOps...).Commit(); err != nil {
			return nil, s.fail(ctx, "write the member record", err)
		}
	}
	memberDone()
	// The locks taken have their states already: asking the TTLs of the
	// leases they were read with (a reservation's, say) would add a round
	// trip after the take, in the middle of a hand-off.
	times, err := s.leaseTimes(ctx, leaseIDs(ks, acquired))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]store.LockState, 0, len(names))
	for _, n := range names {
		if st, ok := acquired[n]; ok {
			out = append(out, st)
			continue
		}
		out = append(out, state(ks[n], times, now))
	}
	return out, nil
}

// take acquires the locks want (free when read) for h, in transactions of
// at most maxBatch locks with one nested transaction per lock; it updates
// ks with what the losers' else branches read, and returns the states of
// the locks taken. extra (the member record) goes in the first
// transaction.
//
// The TTL it reports is counted from callStart, the start of the Acquire
// call, as the executor counts its trust window from there: the lease is
// granted or kept alive after callStart (a keepalive beside the writes
// when the lease was kept alive before the call), so it expires no
// earlier than callStart plus that TTL, however long the writes took.
func (s *Store) take(ctx context.Context, h store.Holder, ks map[string]*lockKeys, want []string, ttl time.Duration, callStart time.Time, extra []clientv3.Op) (map[string]store.LockState, error) {
	var l lease
	var err error
	var acquiredAt int64
	var resps []*clientv3.TxnResponse
	for attempt := 0; ; attempt++ {
		// A lease kept alive less than a third of its TTL ago can take the
		// keys without a keepalive first.
		if l, err = s.ensureLease(ctx, h.ID, ttl, time.Duration(LeaseTTL(ttl))*time.Second/3); err != nil {
			return nil, err
		}
		acquiredAt = time.Now().UnixNano()
		batches := chunks(len(want))
		resps = make([]*clientv3.TxnResponse, len(batches))
		n := len(batches)
		keepalive := l.began.Before(callStart)
		if keepalive {
			n++
		}
		err = parallel(n, func(b int) error {
			if b == len(batches) {
				if _, err := s.keepAlive(ctx, l.id); err != nil {
					return err
				}
				return nil
			}
			ops := make([]clientv3.Op, 0, maxBatch+len(extra))
			for _, n := range want[batches[b][0]:batches[b][1]] {
				k := ks[n]
				cmps := []clientv3.Cmp{
					clientv3.Compare(clientv3.CreateRevision(s.leaseKey(n)), "=", 0),
					clientv3.Compare(clientv3.ModRevision(s.controlKey(n)), "=", modRev(k.ctl)),
					clientv3.Compare(clientv3.ModRevision(s.holderKey(n)), "=", modRev(k.holder)),
					clientv3.Compare(clientv3.ModRevision(s.reserveKey(n)), "=", modRev(k.resrv)),
				}
				then := []clientv3.Op{
					clientv3.OpPut(s.leaseKey(n), h.ID, clientv3.WithLease(l.id)),
					clientv3.OpPut(s.holderKey(n), mustJSON(holderRecord{Holder: h.ID, Info: h.Info, AcquiredAt: acquiredAt})),
				}
				if k.resrv != nil {
					then = append(then, clientv3.OpDelete(s.reserveKey(n)))
				}
				ops = append(ops, clientv3.OpTxn(cmps, then, []clientv3.Op{clientv3.OpGet(s.lockDir(n), clientv3.WithPrefix())}))
			}
			if b == 0 {
				ops = append(ops, extra...)
			}
			resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
			resps[b] = resp
			return err
		})
		if err != nil && isLeaseNotFound(err) && attempt == 0 {
			// The lease ended between its keepalive and the transaction.
			s.dropLease(l.id)
			continue
		}
		if err != nil {
			return nil, s.fail(ctx, "acquire", err)
		}
		break
	}
	s.mu.Lock()
	if cur := s.byID[l.id]; cur != nil {
		l = *cur // as the keepalive beside the writes left it
	}
	s.mu.Unlock()
	if l.began.Before(callStart) {
		// The keepalive found the lease gone: so are the keys just put on
		// it.
		l.secs = 0
	}
	out := map[string]store.LockState{}
	taken := map[string]*mvccpb.KeyValue{} // control keys, for noteHeld
	for b, bt := range chunks(len(want)) {
		resp := resps[b]
		for i, n := range want[bt[0]:bt[1]] {
			sub := resp.Responses[i].GetResponseTxn()
			k := ks[n]
			if !sub.Succeeded {
				// Lost the race: report what the else branch read.
				nk := &lockKeys{name: n}
				m := map[string]*lockKeys{n: nk}
				for _, kv := range sub.Responses[0].GetResponseRange().GetKvs() {
					s.addKey(m, kv, false)
				}
				ks[n] = nk
				continue
			}
			// Every key a transaction creates has its revision.
			rev := resp.Header.Revision
			prev := k.holderRec()
			hv, _ := json.Marshal(holderRecord{Holder: h.ID, Info: h.Info, AcquiredAt: acquiredAt})
			nk := &lockKeys{
				name:   n,
				lease:  &mvccpb.KeyValue{Key: []byte(s.leaseKey(n)), Value: []byte(h.ID), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: int64(l.id)},
				holder: &mvccpb.KeyValue{Key: []byte(s.holderKey(n)), Value: hv, ModRevision: rev},
				ctl:    k.ctl,
			}
			st := state(nk, map[clientv3.LeaseID]leaseTime{l.id: {remaining: min(ttlFrom(l, callStart), ttl), renewedAt: l.began}}, callStart)
			st.Acquired = true
			taken[n] = k.ctl
			if k.holder != nil && prev.Holder != "" && !prev.Released {
				st.PrevHolder, st.PrevToken, st.PrevExpired = prev.Holder, prev.Token, true
			}
			out[n] = st
		}
	}
	s.noteHeld(taken, nil)
	return out, nil
}

// Renew implements store.Store: one keepalive of holderID's lease (which
// renews every lock on it), then one read that checks each lock is still
// held with its token. A lock held on another lease of the holder (another
// TTL, or another handle) is moved onto this one by a fenced transaction,
// after a keepalive of its lease proves that lease alive.
func (s *Store) Renew(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	if len(leases) == 0 {
		return []store.RenewResult{}, nil
	}
	l, err := s.ensureLease(ctx, holderID, ttl, 0)
	if err != nil {
		return nil, err
	}
	memberOps, memberDone, err := s.memberWrite(ctx, holderID)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(leases))
	for _, r := range leases {
		names = append(names, r.Lock)
	}
	names = dedupe(names)
	ks, err := s.readLocks(ctx, names)
	if err != nil {
		return nil, err
	}
	out := make([]store.RenewResult, len(leases))
	var move []int // indexes of refs held on another lease
	held := make(map[string]*mvccpb.KeyValue, len(leases))
	var lost []string
	for i, ref := range leases {
		res := store.RenewResult{Lock: ref.Lock, Token: ref.Token}
		k := ks[ref.Lock]
		c := k.controlRec()
		res.Disabled = c.Disabled
		if k.lease == nil || k.token() != ref.Token || string(k.lease.Value) != holderID {
			lost = append(lost, ref.Lock)
		} else {
			held[ref.Lock] = k.ctl
			res.Revoked = c.RevokedToken == ref.Token
			if c.HandoffToken == ref.Token {
				res.HandoffRequested, res.HandoffTo = true, c.HandoffTo
			}
			if clientv3.LeaseID(k.lease.Lease) == l.id {
				res.Renewed, res.TTL = true, time.Duration(l.secs)*time.Second
			} else {
				move = append(move, i)
			}
		}
		out[i] = res
	}
	s.noteHeld(held, lost)
	if len(move) > 0 {
		if err := s.move(ctx, holderID, l, ks, leases, move, out, memberOps); err != nil {
			return nil, err
		}
		memberOps = nil
	}
	if len(memberOps) > 0 {
		if _, err := s.cli.Txn(ctx).Then(memberOps...).Commit(); err != nil {
			return nil, s.fail(ctx, "write the member record", err)
		}
	}
	memberDone()
	return out, nil
}

// move puts the locks leases[i] for i in idx, held by holderID on other
// leases, onto l, each only if its old lease is alive (kept alive just
// before) and the lock still holds the same token on it.
func (s *Store) move(ctx context.Context, holderID string, l lease, ks map[string]*lockKeys, refs []store.LeaseRef, idx []int, out []store.RenewResult, extra []clientv3.Op) error {
	alive := map[clientv3.LeaseID]bool{}
	for _, i := range idx {
		alive[clientv3.LeaseID(ks[refs[i].Lock].lease.Lease)] = false
	}
	ids := make([]clientv3.LeaseID, 0, len(alive))
	for id := range alive {
		ids = append(ids, id)
	}
	oks := make([]bool, len(ids))
	if err := parallel(len(ids), func(j int) (err error) {
		oks[j], err = s.keepAlive(ctx, ids[j])
		return err
	}); err != nil {
		return err
	}
	var todo []int
	for j, id := range ids {
		alive[id] = oks[j]
	}
	for _, i := range idx {
		if alive[clientv3.LeaseID(ks[refs[i].Lock].lease.Lease)] {
			todo = append(todo, i)
		}
	}
	batches := chunks(len(todo))
	if len(batches) == 0 && len(extra) > 0 {
		batches = [][2]int{{0, 0}}
	}
	return parallel(len(batches), func(b int) error {
		var ops []clientv3.Op
		for _, i := range todo[batches[b][0]:batches[b][1]] {
			ref := refs[i]
			key := s.leaseKey(ref.Lock)
			cmps := append(s.fence(ref.Lock, holderID, ref.Token),
				clientv3.Compare(clientv3.LeaseValue(key), "=", ks[ref.Lock].lease.Lease))
			ops = append(ops, clientv3.OpTxn(cmps, []clientv3.Op{clientv3.OpPut(key, holderID, clientv3.WithLease(l.id))}, nil))
		}
		if b == 0 {
			ops = append(ops, extra...)
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return s.fail(ctx, "renew", err)
		}
		for j, i := range todo[batches[b][0]:batches[b][1]] {
			if resp.Responses[j].GetResponseTxn().Succeeded {
				out[i].Renewed, out[i].TTL = true, time.Duration(l.secs)*time.Second
			}
		}
		return nil
	})
}

// Release implements store.Store: one transaction with one nested
// transaction per lease, each deleting the lease key only if it still
// holds holderID's token. The lease itself is left alone (the holder's
// other locks live on it). A release to a successor first grants the
// reservation's own lease.
func (s *Store) Release(ctx context.Context, holderID string, leases []store.LeaseRef) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	s.ending.Enter()
	defer s.ending.Leave()
	if len(leases) == 0 {
		return nil
	}
	dropped := make([]string, len(leases))
	for i, r := range leases {
		dropped[i] = r.Lock
	}
	s.noteHeld(nil, dropped)
	reserve, err := s.reservationLeases(ctx, leases)
	if err != nil {
		return err
	}
	batches := chunks(len(leases))
	return parallel(len(batches), func(b int) error {
		var ops []clientv3.Op
		for _, r := range leases[batches[b][0]:batches[b][1]] {
			ops = append(ops, s.releaseOp(holderID, r, reserve))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return s.fail(ctx, "release", err)
		}
		return nil
	})
}

// noteHeld records the control keys of the locks a call found its caller
// holding, as it read them (held: lock to key, nil for an absent key), and
// forgets those of the locks in dropped, under one hold of the mutex.
func (s *Store) noteHeld(held map[string]*mvccpb.KeyValue, dropped []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.Copy(s.heldCtl, held)
	for _, l := range dropped {
		delete(s.heldCtl, l)
	}
}

// fence is the condition that holderID holds lock with token: the lease
// key is there with holderID as value, and the holder record was written
// at revision token (by the acquisition or transfer that began the lease).
func (s *Store) fence(lock, holderID string, token int64) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.holderKey(lock)), "=", token),
		clientv3.Compare(clientv3.Value(s.leaseKey(lock)), "=", holderID),
	}
}

// reservationLeases grants one lease per reservation length that refs ask
// for (a ref with a Successor and a positive Reserve), keyed by its TTL
// in seconds.
func (s *Store) reservationLeases(ctx context.Context, refs []store.LeaseRef) (map[int64]clientv3.LeaseID, error) {
	reserve := map[int64]clientv3.LeaseID{}
	for _, r := range refs {
		if r.Successor == "" || r.Reserve <= 0 {
			continue
		}
		secs := reserveSeconds(r.Reserve)
		if _, ok := reserve[secs]; ok {
			continue
		}
		resp, err := s.cli.Grant(ctx, secs)
		if err != nil {
			return nil, s.fail(ctx, "grant a reservation lease", err)
		}
		reserve[secs] = resp.ID
	}
	return reserve, nil
}

func reserveSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// releaseOp is the nested transaction that releases r if holderID holds
// it: the lease key deleted, the holder record marked released, and the
// reservation for r's successor put on its lease (reserve).
func (s *Store) releaseOp(holderID string, r store.LeaseRef, reserve map[int64]clientv3.LeaseID) clientv3.Op {
	then := []clientv3.Op{
		clientv3.OpDelete(s.leaseKey(r.Lock)),
		clientv3.OpPut(s.holderKey(r.Lock), mustJSON(holderRecord{Holder: holderID, Token: r.Token, Released: true})),
	}
	if id, ok := reserve[reserveSeconds(r.Reserve)]; ok && r.Successor != "" && r.Reserve > 0 {
		then = append(then, clientv3.OpPut(s.reserveKey(r.Lock), r.Successor, clientv3.WithLease(id)))
	}
	return clientv3.OpTxn(s.fence(r.Lock, holderID, r.Token), then, nil)
}

// Disable implements store.Store.
func (s *Store) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	return s.setControl(ctx, lock, true, reason, by)
}

// Enable implements store.Store.
func (s *Store) Enable(ctx context.Context, lock, by string) (store.ControlChange, error) {
	return s.setControl(ctx, lock, false, "", by)
}

// setControl writes the control record of lock with a compare-and-swap
// on it and on the lease key, retried until it applies.
func (s *Store) setControl(ctx context.Context, lock string, disabled bool, reason, by string) (store.ControlChange, error) {
	if err := store.ValidateLockName(lock); err != nil {
		return store.ControlChange{}, err
	}
	var ch store.ControlChange
	err := s.casControl(ctx, lock, func(k *lockKeys, c *controlRecord) (bool, error) {
		if c.Disabled == disabled {
			return false, nil
		}
		c.Disabled, c.Reason, c.ChangedBy, c.ChangedAt = disabled, reason, by, time.Now().UnixNano()
		if disabled {
			c.RevokedToken = 0
			if k.lease != nil {
				c.RevokedToken = k.token()
			}
			c.HandoffToken, c.HandoffTo = 0, ""
		}
		return true, nil
	}, func(st store.LockState, changed bool) { ch = store.ControlChange{Changed: changed, State: st} })
	return ch, err
}

// casControl reads lock, lets update change its control record (or decide
// to leave it), and writes it if the control record and the lease key are
// unchanged since the read; else it reads again. done gets the lock's state
// after the write.
func (s *Store) casControl(ctx context.Context, lock string, update func(*lockKeys, *controlRecord) (bool, error), done func(store.LockState, bool)) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	for {
		ks, err := s.readLocks(ctx, []string{lock})
		if err != nil {
			return err
		}
		k := ks[lock]
		c := k.controlRec()
		write, uerr := update(k, &c)
		if write {
			ck, lk := s.controlKey(lock), s.leaseKey(lock)
			var leaseRev int64
			if k.lease != nil {
				leaseRev = k.lease.CreateRevision
			}
			// The holder record's revision changes with every new lease,
			// a transfer's too, which leaves the lease key's creation.
			resp, err := s.cli.Txn(ctx).If(
				clientv3.Compare(clientv3.ModRevision(ck), "=", modRev(k.ctl)),
				clientv3.Compare(clientv3.CreateRevision(lk), "=", leaseRev),
				clientv3.Compare(clientv3.ModRevision(s.holderKey(lock)), "=", modRev(k.holder)),
			).Then(clientv3.OpPut(ck, mustJSON(c))).Commit()
			if err != nil {
				return s.fail(ctx, "change the control of "+fmt.Sprintf("%q", lock), err)
			}
			if !resp.Succeeded {
				continue
			}
			k.ctl = &mvccpb.KeyValue{Key: []byte(ck), Value: []byte(mustJSON(c)), ModRevision: resp.Header.Revision}
		}
		times, err := s.leaseTimes(ctx, leaseIDs(ks, nil))
		if err != nil {
			return err
		}
		done(state(k, times, time.Now()), write)
		return uerr
	}
}

// Handoff implements store.Handoffs: the request is recorded in the lock's
// control record with the token of the lease it is for, so that it ends
// with that lease.
func (s *Store) Handoff(ctx context.Context, lock, to, by string) (store.LockState, error) {
	if err := store.ValidateLockName(lock); err != nil {
		return store.LockState{}, err
	}
	var st store.LockState
	err := s.casControl(ctx, lock, func(k *lockKeys, c *controlRecord) (bool, error) {
		switch {
		case c.Disabled:
			return false, fmt.Errorf("etcd: hand-off of %q: %w", lock, store.ErrLockDisabled)
		case k.lease == nil:
			return false, fmt.Errorf("etcd: hand-off of %q: %w", lock, store.ErrNotHeld)
		}
		c.HandoffToken, c.HandoffTo = k.token(), to
		return true, nil
	}, func(ls store.LockState, _ bool) { st = ls })
	return st, err
}

// Locks implements store.Store.
func (s *Store) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	if err := validate(names); err != nil {
		return nil, err
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	var ask []string
	if len(names) > 0 {
		ask = dedupe(names)
	}
	// The leases the subscription last saw the keys on are asked for
	// beside the read; a key found on another lease costs a second call.
	// Each time left counts from its own call's start, after this call
	// began, whatever the order of the two answers.
	var guess []clientv3.LeaseID
	s.mu.Lock()
	for _, n := range ask {
		if id, ok := s.seenLease[n]; ok {
			guess = append(guess, id)
		}
	}
	s.mu.Unlock()
	var (
		ks    map[string]*lockKeys
		times map[clientv3.LeaseID]leaseTime
	)
	err := parallel(1+min(1, len(guess)), func(i int) (err error) {
		if i == 0 {
			ks, err = s.readLocks(ctx, ask)
		} else {
			times, err = s.leaseTimes(ctx, guess)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var more []clientv3.LeaseID
	for _, id := range leaseIDs(ks, nil) {
		if _, ok := times[id]; !ok {
			more = append(more, id)
		}
	}
	rest, err := s.leaseTimes(ctx, more)
	if err != nil {
		return nil, err
	}
	maps.Copy(rest, times)
	times = rest
	now := time.Now()
	out := make([]store.LockState, 0, len(ks))
	for _, k := range ks {
		if ask == nil && !k.known() {
			continue
		}
		out = append(out, state(k, times, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lock < out[j].Lock })
	return out, nil
}
