package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// BenchmarkCalls measures the two calls an instance makes on its schedule,
// with and without a member record (Membership) written in the same
// transaction: a master's Renew of every lock it holds (one per
// heartbeat), and a follower's Acquire of every lock it follows, all held
// by the master (one per check: nothing is taken). Each call is one
// IMMEDIATE transaction with a synchronous commit. The member's lock set is
// the locks of the benchmark and does not change, as between two
// deployments: after the first call, a member write is one row.
//
//	go test -run '^$' -bench BenchmarkCalls -benchtime 2s ./store/sqlite/
func BenchmarkCalls(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		for _, member := range []bool{false, true} {
			b.Run(fmt.Sprintf("locks=%d/member=%v", n, member), func(b *testing.B) {
				s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := b.Context()
				locks := make([]string, n)
				for i := range locks {
					locks[i] = fmt.Sprintf("tenant-%05d", i)
				}
				master, follower := store.Holder{ID: "master"}, store.Holder{ID: "follower"}
				if member {
					for _, h := range []store.Holder{master, follower} {
						s.Announce(store.Member{ID: h.ID, Info: `{"host":"bench"}`, Locks: locks, LockSetID: "bench-set"}, time.Hour)
					}
				}
				got, err := s.Acquire(ctx, master, locks, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				refs := make([]store.LeaseRef, len(got))
				for i, st := range got {
					refs[i] = store.LeaseRef{Lock: st.Lock, Token: st.Token}
				}
				if _, err := s.Acquire(ctx, follower, locks[:1], time.Hour); err != nil { // writes its member record
					b.Fatal(err)
				}
				b.Run("Renew", func(b *testing.B) {
					for b.Loop() {
						res, err := s.Renew(ctx, master.ID, refs, time.Hour)
						if err != nil || !res[0].Renewed {
							b.Fatalf("Renew: %v", err)
						}
					}
				})
				b.Run("Acquire", func(b *testing.B) {
					for b.Loop() {
						res, err := s.Acquire(ctx, follower, locks, time.Hour)
						if err != nil || res[0].Acquired {
							b.Fatalf("Acquire: %v", err)
						}
					}
				})
			})
		}
	}
}
