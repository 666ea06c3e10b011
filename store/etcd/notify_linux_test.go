//go:build linux

package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/masterjob/masterjob/internal/faultproxy"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// TestWatchResyncAfterCompactionWhileCut: a subscriber cut from etcd
// while changes are made and their revisions compacted gets, once it is
// back, one store.ChangeResync, and the changes made after it.
func TestWatchResyncAfterCompactionWhileCut(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			srv := server(t, kind)
			p := faultproxy.Start(t, srv.Endpoint)
			prefix := newPrefix()
			ctx := ctxFor(t)
			sub := openAt(t, p.Addr(), prefix)
			defer sub.Close()
			st := open(t, srv, prefix)
			defer st.Close()
			cli := client(t, srv)
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := sub.Subscribe(sctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Disable(ctx, "BEFORE", "x", "t"); err != nil {
				t.Fatal(err)
			}
			if n := waitControl(t, ch, "BEFORE", 10*time.Second); n != 0 {
				t.Fatalf("%d resync(s) before any loss", n)
			}

			p.Cut(faultproxy.CutReset)
			for range 3 {
				if _, err := st.Disable(ctx, "DURING", "x", "t"); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Enable(ctx, "DURING", "t"); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := cli.Get(ctx, "any")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
				t.Fatal(err)
			}
			p.Restore()

			// The client resumes its watch from the revision after
			// BEFORE's, which is compacted: etcd cancels it.
			if n := waitResync(t, ch, 30*time.Second); n != 1 {
				t.Fatalf("%d resyncs, want 1", n)
			}
			if _, err := st.Disable(ctx, "AFTER", "x", "t"); err != nil {
				t.Fatal(err)
			}
			if n := waitControl(t, ch, "AFTER", 10*time.Second); n != 0 {
				t.Fatalf("%d more resync(s) after the first", n)
			}
		})
	}
}

// waitResync reads ch until a store.ChangeResync arrives and then until
// it has been quiet for a moment, failing t at the deadline. It returns
// the number of resyncs read.
func waitResync(t *testing.T, ch <-chan store.Change, within time.Duration) int {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	resyncs := 0
	for resyncs == 0 {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("subscription closed")
			}
			if c.Kind == store.ChangeResync {
				resyncs++
			}
		case <-deadline.C:
			t.Fatalf("no %q change within %v", store.ChangeResync, within)
		}
	}
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("subscription closed")
			}
			if c.Kind == store.ChangeResync {
				resyncs++
			}
		case <-time.After(300 * time.Millisecond):
			return resyncs
		}
	}
}

// waitControl reads ch until a control change of lock arrives, failing t
// at the deadline. It returns the number of resyncs read meanwhile.
func waitControl(t *testing.T, ch <-chan store.Change, lock string, within time.Duration) int {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	resyncs := 0
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("subscription closed")
			}
			switch {
			case c.Kind == store.ChangeResync:
				resyncs++
			case c.Kind == store.ChangeControl && c.Lock == lock:
				return resyncs
			}
		case <-deadline.C:
			t.Fatalf("no control change of %s within %v", lock, within)
		}
	}
}
