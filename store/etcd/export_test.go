package etcd

import (
	"context"

	"github.com/masterjob/masterjob/store"
)

// SubscribeFrom is Subscribe from an old revision, for the test of a
// watch that etcd cancels because that revision was compacted.
func (s *Store) SubscribeFrom(ctx context.Context, rev int64) (<-chan store.Change, error) {
	return s.subscribe(ctx, rev)
}
