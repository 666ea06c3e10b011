package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// SubscribeFrom is Subscribe from an old revision, for the test of a
// watch that etcd cancels because that revision was compacted.
func (s *Store) SubscribeFrom(ctx context.Context, rev int64) (<-chan store.Change, error) {
	return s.subscribe(ctx, rev)
}

// ChaosEndLease is the chaos harness's store-side loss on etcd
// (chaos.Engine.EndLease) for the keys under prefix: mode "delete" removes
// every key of the lock, as `etcdctl del --prefix` of its LockKeyPrefix
// would, unless the lock is disabled; mode "expire" removes the lease key
// only, which is what etcd does when the holder's lease expires (the
// holder record and the control stay). Either is one transaction, fenced
// on the lease key's create revision and the holder record's revision
// (and, for delete, on the control record's revision), retried when a renewal or an acquisition moved the
// lock meanwhile. It returns the token and holder of the lease it ended.
func ChaosEndLease(ctx context.Context, cli *clientv3.Client, prefix, lock, mode string) (int64, string, error) {
	s := &Store{prefix: prefix}
	lk, ck, hk := s.leaseKey(lock), s.controlKey(lock), s.holderKey(lock)
	for {
		resp, err := cli.Txn(ctx).Then(clientv3.OpGet(lk), clientv3.OpGet(ck), clientv3.OpGet(hk)).Commit()
		if err != nil {
			return 0, "", err
		}
		lease, ctl, holder := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs, resp.Responses[2].GetResponseRange().Kvs
		if len(lease) == 0 {
			return 0, "", nil
		}
		k := lockKeys{name: lock, lease: lease[0]}
		if len(ctl) > 0 {
			k.ctl = ctl[0]
		}
		if len(holder) > 0 {
			k.holder = holder[0]
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", k.lease.CreateRevision),
			clientv3.Compare(clientv3.ModRevision(hk), "=", modRev(k.holder)),
		}
		del := clientv3.OpDelete(lk)
		switch mode {
		case "expire":
		case "delete":
			if k.controlRec().Disabled {
				return 0, "", nil
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ck), "=", modRev(k.ctl)))
			del = clientv3.OpDelete(s.lockDir(lock), clientv3.WithPrefix())
		default:
			return 0, "", fmt.Errorf("store-side loss: no mode %q on etcd", mode)
		}
		done, err := cli.Txn(ctx).If(cmps...).Then(del).Commit()
		if err != nil {
			return 0, "", err
		}
		if done.Succeeded {
			return k.token(), string(k.lease.Value), nil
		}
	}
}

// SeenLease returns the lease this handle's subscriptions last saw lock's
// key on (0 if none).
func (s *Store) SeenLease(lock string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.seenLease[lock])
}

// SetSeenLease makes the handle believe lock's key is on lease id.
func (s *Store) SetSeenLease(lock string, id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seenLease == nil {
		s.seenLease = map[string]clientv3.LeaseID{}
	}
	s.seenLease[lock] = clientv3.LeaseID(id)
}
