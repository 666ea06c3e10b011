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

// BenchmarkLockSetChange measures a Renew of one lease by the only member
// of a lock set of n locks whose set changes at each call (alternating
// between two sets): the new set's n rows are written and the old set's n
// deleted, in the Renew's transaction. It is what a member's first call
// costs too, without the deletion.
//
//	go test -run '^$' -bench BenchmarkLockSetChange ./store/sqlite/
func BenchmarkLockSetChange(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("locks=%d", n), func(b *testing.B) {
			s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := b.Context()
			sets := [2][]string{make([]string, n), make([]string, n)}
			for i := range n {
				sets[0][i], sets[1][i] = fmt.Sprintf("tenant-%05d", i), fmt.Sprintf("tenant-%05d", i+1)
			}
			h := store.Holder{ID: "member"}
			got, err := s.Acquire(ctx, h, sets[0][:1], time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			refs := []store.LeaseRef{{Lock: got[0].Lock, Token: got[0].Token}}
			i := 0
			for b.Loop() {
				i++
				s.Announce(store.Member{ID: h.ID, Locks: sets[i%2], LockSetID: fmt.Sprint(i % 2)}, time.Hour)
				if _, err := s.Renew(ctx, h.ID, refs, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
