package etcd

import (
	"context"
	"encoding/json"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// Transfer implements store.Transfers. The locks that transferUnread can
// give without reading first go in one transaction (an executor's
// hand-off). For the others, three requests go out at once: a
// read of the locks, a read of the successors' member records, and a
// keepalive of the lease that this handle holds holderID's locks of TTL
// ttl on (or, when it has none, the grant of a fresh lease of ttl). The
// successors hold the locks given on that lease until their first renewal
// moves each onto their own lease (Renew). A keepalive is answered by
// etcd's leader from memory, where a grant is a write to etcd's log that
// the leader must persist first: giving on the holder's own lease takes
// that write, and its disk sync, off the hand-off's path.
//
// Then one transaction per 100 refs gives each lock, with a nested
// transaction per ref:
//
//   - if holderID still holds it with its token (the fence of Release),
//     the control record is as read (not disabled, not revoked) and the
//     successor's member record is the one read (created at the same
//     revision: it did not leave, nor expire and come back), the lease key is
//     given to the successor on that lease and the holder record is
//     written for it: that write's revision is the new token, greater than
//     every earlier one since etcd's revisions are global;
//   - else the ref is released as Release releases it.
//
// A lease that carries a lock given away must not be kept alive by its
// giver for long, or a successor that died before its first renewal would
// hold the lock for as long as the giver lives. So this handle forgets
// its lease once it gave a lock on it: its next Acquire or Renew for
// holderID grants a new lease and moves its other locks onto it (the move
// keeps the old lease alive once more, as the successor's own move does).
// The given lock is then free at most one TTL after the later of those
// moves, and at once when the successor releases it. Nothing here revokes
// a lease: a lease that carries another's lock lives out its TTL.
//
// A lock held on another lease than this handle's for ttl (another
// handle, another TTL) is given on a lease granted for it after the
// reads. A ref whose lock was read disabled or revoked, or whose
// successor has no member record, is released at once, reserved for the
// successor as asked (the reservation's lease is granted then, off a
// hand-off's usual path); one that loses the race in the transaction is
// released without a reservation.
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	s.ending.Enter()
	defer s.ending.Leave()
	if len(leases) == 0 {
		return nil
	}
	secs, err := s.leaseSeconds(ttl)
	if err != nil {
		return err
	}
	s.mu.Lock()
	var own clientv3.LeaseID // this handle's lease for holderID and ttl
	if l := s.leases[leaseKey{holderID, secs}]; l != nil {
		own = l.id
	}
	s.mu.Unlock()
	if own != 0 {
		if leases, err = s.transferUnread(ctx, holderID, own, leases); err != nil || len(leases) == 0 {
			return err
		}
	}
	var names, successors []string
	for _, r := range leases {
		names = append(names, r.Lock)
		if r.Successor != "" {
			successors = append(successors, r.Successor)
		}
	}
	if len(successors) == 0 {
		return s.Release(ctx, holderID, leases)
	}
	names, successors = dedupe(names), dedupe(successors)
	var (
		ks      map[string]*lockKeys
		members = map[string]*mvccpb.KeyValue{}
		alive   bool             // own was kept alive just now
		granted clientv3.LeaseID // for the locks not on own
		reserve map[int64]clientv3.LeaseID
	)
	err = parallel(3, func(i int) error {
		var err error
		switch i {
		case 0:
			ks, err = s.readLocks(ctx, names)
		case 1:
			ops := make([]clientv3.Op, len(successors))
			for j, id := range successors {
				ops[j] = clientv3.OpGet(s.memberKey(id))
			}
			var resp *clientv3.TxnResponse
			if resp, err = s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return s.fail(ctx, "read the successors' member records", err)
			}
			for j, r := range resp.Responses {
				if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
					members[successors[j]] = kvs[0]
				}
			}
		case 2:
			if own != 0 {
				alive, err = s.keepAlive(ctx, own)
			} else {
				granted, err = s.grantGiven(ctx, secs)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	// A ref that cannot be given, as read, is released as Release
	// releases it, reservation included; only those need a reservation's
	// lease, granted now (not on a hand-off's usual path).
	give := func(r store.LeaseRef) bool {
		c := ks[r.Lock].controlRec()
		return r.Successor != "" && members[r.Successor] != nil && !c.Disabled && c.RevokedToken != r.Token
	}
	onOwn := func(r store.LeaseRef) bool {
		k := ks[r.Lock]
		return alive && k.lease != nil && clientv3.LeaseID(k.lease.Lease) == own
	}
	var refused []store.LeaseRef
	gaveOwn := false
	for _, r := range leases {
		switch {
		case !give(r):
			refused = append(refused, r)
		case onOwn(r):
			gaveOwn = true
		case ks[r.Lock].lease == nil:
			// Not held: released below, its fence fails.
		case granted == 0:
			if granted, err = s.grantGiven(ctx, secs); err != nil {
				return err
			}
		}
	}
	if gaveOwn {
		// Whatever the transaction's outcome: a lease that may carry
		// another's lock is never kept alive by this handle again.
		defer s.forgetLease(ctx, own)
	}
	if reserve, err = s.reservationLeases(ctx, refused); err != nil {
		return err
	}
	acquiredAt := time.Now().UnixNano()
	batches := chunks(len(leases))
	return parallel(len(batches), func(b int) error {
		var ops []clientv3.Op
		for _, r := range leases[batches[b][0]:batches[b][1]] {
			if !give(r) || ks[r.Lock].lease == nil {
				ops = append(ops, s.releaseOp(holderID, r, reserve))
				continue
			}
			on := granted
			if onOwn(r) {
				on = own
			}
			// Changed since the read (the member left, the lock was
			// disabled): released, without a reservation for a successor
			// that may be gone.
			ops = append(ops, s.giveOp(holderID, r, ks[r.Lock].ctl, members[r.Successor], on, acquiredAt,
				s.releaseOp(holderID, r, nil)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return s.fail(ctx, "transfer", err)
		}
		return nil
	})
}

// grantGiven grants a lease of secs seconds for locks given to successors.
func (s *Store) grantGiven(ctx context.Context, secs int64) (clientv3.LeaseID, error) {
	resp, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return 0, s.fail(ctx, "grant the successors' lease", err)
	}
	return resp.ID, nil
}

// forgetLease drops lease id from this handle, so that no later call keeps
// it alive. It waits for a keepalive under way (ensureLease), which would
// otherwise put the lease back: that call's own timeout bounds the wait,
// whatever ctx says.
func (s *Store) forgetLease(ctx context.Context, id clientv3.LeaseID) {
	if s.lockLeases(context.WithoutCancel(ctx)) == nil {
		defer s.unlockLeases()
	}
	s.dropLease(id)
}

// transferUnread gives the locks of leases that it can on lease own in one
// transaction, without reading first, and returns the others. It can give
// a lock whose control key this handle read when its last Acquire or Renew
// found holderID holding it (enabled, not revoked), to a successor whose
// member record its last Members read: the transaction compares both
// keys' revisions with those reads (an older read only fails the
// comparison) beside the holder's fence, and changes nothing when they
// differ. A keepalive of own goes out beside it: the successor trusts the
// time its own read, after the commit, finds left. The refs it did not
// give are returned for Transfer's reading path.
func (s *Store) transferUnread(ctx context.Context, holderID string, own clientv3.LeaseID, leases []store.LeaseRef) ([]store.LeaseRef, error) {
	if len(leases) > maxBatch {
		return leases, nil
	}
	type unread struct {
		ref         store.LeaseRef
		ctl, member *mvccpb.KeyValue
	}
	var try []unread
	var rest []store.LeaseRef
	s.mu.Lock()
	for _, r := range leases {
		ctl, held := s.heldCtl[r.Lock]
		m := s.members[r.Successor]
		k := lockKeys{ctl: ctl}
		c := k.controlRec()
		if r.Successor == "" || !held || m == nil || c.Disabled || c.RevokedToken == r.Token {
			rest = append(rest, r)
			continue
		}
		try = append(try, unread{r, ctl, m})
	}
	s.mu.Unlock()
	if len(try) == 0 {
		return leases, nil
	}
	// Whatever the outcome: a lease that may carry another's lock is never
	// kept alive by this handle again.
	defer s.forgetLease(ctx, own)
	acquiredAt := time.Now().UnixNano()
	ops := make([]clientv3.Op, len(try))
	for i, u := range try {
		ops[i] = s.giveOp(holderID, u.ref, u.ctl, u.member, own, acquiredAt)
	}
	var resp *clientv3.TxnResponse
	err := parallel(2, func(i int) error {
		if i == 1 {
			_, _ = s.keepAlive(ctx, own) // the successor's read finds what is left
			return nil
		}
		var err error
		resp, err = s.cli.Txn(ctx).Then(ops...).Commit()
		return err
	})
	switch {
	case err != nil && isLeaseNotFound(err):
		return leases, nil // own has ended: nothing was written
	case err != nil:
		return nil, s.fail(ctx, "transfer", err)
	}
	var given []string
	for i, u := range try {
		if resp.Responses[i].GetResponseTxn().Succeeded {
			given = append(given, u.ref.Lock)
		} else {
			rest = append(rest, u.ref)
		}
	}
	s.noteHeld(nil, given)
	return rest, nil
}

// giveOp is the nested transaction that gives r's lock to r.Successor on
// lease on, if holderID still holds it with r's token (the fence of
// Release), its control key is still ctl (read enabled and not revoked)
// and the successor's member record still the one read (created at the
// same revision: it did not leave, nor expire and come back); else it runs
// els. The holder record written for the successor carries its member
// Info, and its revision is the new token.
func (s *Store) giveOp(holderID string, r store.LeaseRef, ctl, member *mvccpb.KeyValue, on clientv3.LeaseID, acquiredAt int64, els ...clientv3.Op) clientv3.Op {
	var rec memberRecord
	_ = json.Unmarshal(member.Value, &rec)
	cmps := append(s.fence(r.Lock, holderID, r.Token),
		clientv3.Compare(clientv3.ModRevision(s.controlKey(r.Lock)), "=", modRev(ctl)),
		clientv3.Compare(clientv3.CreateRevision(s.memberKey(r.Successor)), "=", member.CreateRevision))
	return clientv3.OpTxn(cmps, []clientv3.Op{
		clientv3.OpPut(s.leaseKey(r.Lock), r.Successor, clientv3.WithLease(on)),
		clientv3.OpPut(s.holderKey(r.Lock), mustJSON(holderRecord{Holder: r.Successor, Info: rec.Info, AcquiredAt: acquiredAt})),
		clientv3.OpDelete(s.reserveKey(r.Lock)),
	}, els)
}
