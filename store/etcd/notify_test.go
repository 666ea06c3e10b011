package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// TestWatchResumesAfterCompaction: a watch that etcd cancels because its
// revision was compacted is resumed, a store.ChangeResync announces the
// loss, and later changes still arrive on the same channel.
func TestWatchResumesAfterCompaction(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			srv := server(t, kind)
			st := open(t, srv, newPrefix())
			defer st.Close()
			cli := client(t, srv)
			ctx := ctxFor(t)
			if _, err := st.Disable(ctx, "OLD", "x", "t"); err != nil {
				t.Fatal(err)
			}
			resp, err := cli.Get(ctx, "any")
			if err != nil {
				t.Fatal(err)
			}
			old := resp.Header.Revision
			if _, err := st.Enable(ctx, "OLD", "t"); err != nil {
				t.Fatal(err)
			}
			resp, err = cli.Get(ctx, "any")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
				t.Fatal(err)
			}
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := st.SubscribeFrom(sctx, old)
			if err != nil {
				t.Fatal(err)
			}
			// The compaction cancels the watch at once; a resync comes
			// first, then the resumed watch delivers what follows.
			deadline := time.After(20 * time.Second)
			resynced := false
			for {
				if _, err := st.Disable(ctx, "NEW", "x", "t"); err != nil {
					t.Fatal(err)
				}
				select {
				case c, ok := <-ch:
					if !ok {
						t.Fatal("the subscription ended when etcd cancelled the watch")
					}
					if c.Kind == store.ChangeResync {
						resynced = true
					}
					if c.Kind == store.ChangeControl && c.Lock == "NEW" {
						if !resynced {
							t.Fatalf("a change after the compaction came with no %q change before it", store.ChangeResync)
						}
						return
					}
				case <-deadline:
					t.Fatal("no change delivered after the compaction")
				case <-time.After(500 * time.Millisecond):
				}
				if _, err := st.Enable(ctx, "NEW", "t"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
