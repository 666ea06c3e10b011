package redis

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/storetest"
)

// TestCluster runs the store on a Redis Cluster of three masters started
// for the test (redis-server and redis-cli from PATH): the conformance
// suite, the cost of calls in round trips and scripts, and the hash slots
// computed by the store against the server's CLUSTER KEYSLOT.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster: not in -short")
	}
	addrs := startCluster(t, 3)
	newClient := func(t *testing.T, hook goredis.Hook) *goredis.ClusterClient {
		c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		if hook != nil {
			c.OnNewNode(func(n *goredis.Client) { n.AddHook(hook) })
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	openCluster := func(t *testing.T, c *goredis.ClusterClient, prefix string, opts ...Option) *Store {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		s, err := New(ctx, c, append([]Option{WithPrefix(prefix), WithHistoryLimit(historyLimit), WithLogger(quietLogger)}, opts...)...)
		if err != nil {
			t.Fatalf("New on the cluster: %v", err)
		}
		if !s.cluster {
			t.Fatal("the store did not recognise the cluster client")
		}
		return s
	}
	prefixOf := func(t *testing.T) string {
		p := randomPrefix()
		admin := newClient(t, nil)
		t.Cleanup(func() { deleteKeys(t, admin, p) })
		return p
	}

	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) storetest.Harness {
			p := prefixOf(t)
			admin := newClient(t, nil)
			return storetest.Harness{
				Open: func(t *testing.T) store.Store { return openCluster(t, newClient(t, nil), p) },
				DeleteRecords: func(t *testing.T, locks ...string) {
					deleteRecords(t, admin, keys{prefix: p}, locks...)
				},
				HistoryLimit: historyLimit,
			}
		})
	})

	t.Run("RoundTrips", func(t *testing.T) {
		c := &counter{}
		s := openCluster(t, newClient(t, c), prefixOf(t), WithCallTimeout(time.Minute))
		defer s.Close()
		warmUp(t, s)
		for _, n := range []int{1, 100, 10000} {
			names := make([]string, n)
			for i := range names {
				names[i] = costName(n, i)
			}
			scripts := int64(len(s.groups(names)))
			for _, r := range measureCalls(t, s, c, n) {
				t.Logf("cluster of %d masters: %-12s %5d locks: %d round trip(s), %d command(s), %v",
					len(addrs), r.op, r.locks, r.trips, r.cmds, r.elapsed.Round(10*time.Microsecond))
				want := scripts
				if r.op == "Acquire" {
					want++ // the index of lock names lives in another slot
				}
				if r.trips > int64(len(addrs)) || r.cmds != want {
					t.Errorf("%s of %d locks: %d round trips and %d commands, want at most %d (one per node) and %d (one script per slot)",
						r.op, n, r.trips, r.cmds, len(addrs), want)
				}
			}
		}
	})

	t.Run("Slots", func(t *testing.T) {
		c := newClient(t, nil)
		k := keys{prefix: "mj:"}
		for _, key := range []string{
			"123456789", "", "{", "}", "{}", "{}x", "a{b}c", "a{}{b}", "{a}}", "é{ü}",
			k.lease("JOB"), k.lease("a}b"), k.lease("%7D"), k.lease("{x}"), k.history(), k.member("id{1}"),
		} {
			want, err := c.ClusterKeySlot(t.Context(), key).Result()
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
			}
			if got := slotOf(key); int64(got) != want {
				t.Errorf("slotOf(%q) = %d, the server says %d", key, got, want)
			}
		}
	})

	t.Run("EscapedNames", func(t *testing.T) {
		s := openCluster(t, newClient(t, nil), prefixOf(t))
		defer s.Close()
		checkEscapedNames(t, s)
	})
}

func costName(n, i int) string { return fmt.Sprintf("COST-%d-%05d", n, i) }

// checkEscapedNames: lock names holding the characters the key layout
// escapes ("}" ends a hash tag, "%" is the escape) are distinct locks.
func checkEscapedNames(t *testing.T, s *Store) {
	t.Helper()
	names := []string{"a}b", "a", "b", "a%7Db", "%", "%25", "}", "{x}", "x", "{", "a}:lease"}
	got, err := s.Acquire(t.Context(), store.Holder{ID: "h1"}, names, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range got {
		if !st.Acquired {
			t.Errorf("%q not acquired: two names share keys? %+v", st.Lock, st)
		}
	}
	all, err := s.Locks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, st := range all {
		listed = append(listed, st.Lock)
	}
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(listed, want) {
		t.Errorf("Locks() = %q, want %q", listed, want)
	}
}
