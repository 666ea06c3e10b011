//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Go benchmarks of the batched store calls an instance makes: one renewal
// of n held leases, and one check (Acquire) of n locks another instance
// holds. They run only with -bench, for example:
//
//	go test -run '^$' -bench . -benchtime 50x ./bench/
//
// PostgreSQL is included when $MASTERJOB_TEST_POSTGRES is set.

var benchSizes = []int{1, 100, 1000, 10000}

func benchBackends(b *testing.B) []*Backend {
	dir := b.TempDir()
	out := []*Backend{{Kind: SQLite, dir: dir}}
	if url := os.Getenv("MASTERJOB_TEST_POSTGRES"); url != "" {
		pg, err := NewBackend(url, dir)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, pg)
	}
	return out
}

func lockNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("BENCH-%05d", i)
	}
	return names
}

// withHeld opens a fresh store on which holder "h" holds n leases.
func withHeld(b *testing.B, be *Backend, n int, fn func(st store.Store, refs []store.LeaseRef, names []string)) {
	ctx := context.Background()
	f, err := be.Fresh(fmt.Sprintf("gobench-%d", n))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Drop()
	st, err := f.Open(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	names := lockNames(n)
	states, err := st.Acquire(ctx, store.Holder{ID: "h"}, names, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	refs := make([]store.LeaseRef, 0, n)
	for _, s := range states {
		if !s.Acquired {
			b.Fatalf("lock %s not acquired", s.Lock)
		}
		refs = append(refs, store.LeaseRef{Lock: s.Lock, Token: s.Token})
	}
	fn(st, refs, names)
}

// BenchmarkRenew measures one batched renewal of n leases.
func BenchmarkRenew(b *testing.B) {
	for _, be := range benchBackends(b) {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/locks=%d", be.Kind, n), func(b *testing.B) {
				withHeld(b, be, n, func(st store.Store, refs []store.LeaseRef, _ []string) {
					ctx := context.Background()
					for b.Loop() {
						res, err := st.Renew(ctx, "h", refs, time.Hour)
						if err != nil || len(res) != n || !res[0].Renewed {
							b.Fatalf("renew: %v", err)
						}
					}
				})
			})
		}
	}
}

// BenchmarkCheck measures one batched check (Acquire) of n locks that
// another instance holds: what a follower does at each check.
func BenchmarkCheck(b *testing.B) {
	for _, be := range benchBackends(b) {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/locks=%d", be.Kind, n), func(b *testing.B) {
				withHeld(b, be, n, func(st store.Store, _ []store.LeaseRef, names []string) {
					ctx := context.Background()
					follower := store.Holder{ID: "f"}
					for b.Loop() {
						states, err := st.Acquire(ctx, follower, names, time.Hour)
						if err != nil || len(states) != n || states[0].Acquired {
							b.Fatalf("check: %v", err)
						}
					}
				})
			})
		}
	}
}
