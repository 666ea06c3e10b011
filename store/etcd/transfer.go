package etcd

import (
	"context"
	"encoding/json"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// Transfer implements store.Transfers. Three requests go out at once: a
// read of the locks, a read of the successors' member records, and the
// grant of the lease (of ttl) that the successors will hold their locks
// on until their first renewal moves each onto their own lease (Renew).
// Then one transaction per 100 refs gives each lock, with a nested
// transaction per ref:
//
//   - if holderID still holds it with its token (the fence of Release),
//     the control record is as read (not disabled, not revoked) and the
//     successor's member record is the one read (created at the same
//     revision: it did not leave, nor expire and come back), the lease key is
//     given to the successor on the granted lease and the holder record is
//     written for it: that write's revision is the new token, greater than
//     every earlier one since etcd's revisions are global;
//   - else the ref is released as Release releases it.
//
// A ref whose lock was read disabled or revoked, or whose successor has no
// member record, is released at once, reserved for the successor as asked
// (the reservation's lease is granted then, off a hand-off's usual path);
// one that loses the race in the transaction is released without a
// reservation. The granted lease is left to expire when no lock was given
// on it.
func (s *Store) Transfer(ctx context.Context, holderID string, leases []store.LeaseRef, ttl time.Duration) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if len(leases) == 0 {
		return nil
	}
	secs, err := s.leaseSeconds(ttl)
	if err != nil {
		return err
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
		given   clientv3.LeaseID
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
			var resp *clientv3.LeaseGrantResponse
			if resp, err = s.cli.Grant(ctx, secs); err != nil {
				return s.fail(ctx, "grant the successors' lease", err)
			}
			given = resp.ID
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
	var refused []store.LeaseRef
	for _, r := range leases {
		if !give(r) {
			refused = append(refused, r)
		}
	}
	if reserve, err = s.reservationLeases(ctx, refused); err != nil {
		return err
	}
	acquiredAt := time.Now().UnixNano()
	batches := chunks(len(leases))
	return parallel(len(batches), func(b int) error {
		var ops []clientv3.Op
		for _, r := range leases[batches[b][0]:batches[b][1]] {
			if !give(r) {
				ops = append(ops, s.releaseOp(holderID, r, reserve))
				continue
			}
			k, m := ks[r.Lock], members[r.Successor]
			var rec memberRecord
			_ = json.Unmarshal(m.Value, &rec)
			cmps := append(s.fence(r.Lock, holderID, r.Token),
				clientv3.Compare(clientv3.ModRevision(s.controlKey(r.Lock)), "=", modRev(k.ctl)),
				clientv3.Compare(clientv3.CreateRevision(s.memberKey(r.Successor)), "=", m.CreateRevision))
			then := []clientv3.Op{
				clientv3.OpPut(s.leaseKey(r.Lock), r.Successor, clientv3.WithLease(given)),
				clientv3.OpPut(s.holderKey(r.Lock), mustJSON(holderRecord{Holder: r.Successor, Info: rec.Info, AcquiredAt: acquiredAt})),
				clientv3.OpDelete(s.reserveKey(r.Lock)),
			}
			// Changed since the read (the member left, the lock was
			// disabled): released, without a reservation for a successor
			// that may be gone.
			ops = append(ops, clientv3.OpTxn(cmps, then, []clientv3.Op{s.releaseOp(holderID, r, nil)}))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return s.fail(ctx, "transfer", err)
		}
		return nil
	})
}
