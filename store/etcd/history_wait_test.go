package etcd_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// txnGate holds, once armed, the first KV request the client sends in its
// interceptor until let go, and reports any other KV request sent
// meanwhile.
type txnGate struct {
	mu      sync.Mutex
	armed   bool
	holding bool
	held    chan struct{} // closed when the first request is held
	letGo   chan struct{}
	other   chan string // methods sent while one is held
}

func newTxnGate() *txnGate {
	return &txnGate{held: make(chan struct{}), letGo: make(chan struct{}), other: make(chan string, 16)}
}

func (g *txnGate) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if strings.HasPrefix(method, "/etcdserverpb.KV/") {
		g.mu.Lock()
		switch {
		case g.armed:
			g.armed, g.holding = false, true
			g.mu.Unlock()
			close(g.held)
			<-g.letGo
		case g.holding:
			g.mu.Unlock()
			select {
			case g.other <- method:
			default:
			}
		default:
			g.mu.Unlock()
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (g *txnGate) arm() { g.mu.Lock(); g.armed = true; g.mu.Unlock() }

func (g *txnGate) release() {
	g.mu.Lock()
	g.holding = false
	g.mu.Unlock()
	close(g.letGo)
}

// An executor appends the history entry of a release as soon as its job
// stopped, while the release (or the transfer to a successor) is in
// flight. The append's read and write went to etcd beside the hand-off's
// transaction, one more entry in etcd's log ahead of the successor's
// wake-up. The append now waits for the hand-off to return: while the
// hand-off's transaction is held in the client, the append sends nothing.
func TestHistoryAppendWaitsForHandOff(t *testing.T) {
	srv := server(t, etcdtest.Current)
	for _, transfer := range []bool{false, true} {
		name := "Release"
		if transfer {
			name = "Transfer"
		}
		t.Run(name, func(t *testing.T) {
			ctx := ctxFor(t)
			prefix := newPrefix()
			gate := newTxnGate()
			st, err := etcd.Open(ctx, clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second,
				Logger: nopLogger(), DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(gate.intercept)}},
				etcd.WithPrefix(prefix))
			if err != nil {
				t.Fatal(err)
			}
			succ := open(t, srv, prefix)
			t.Cleanup(func() { _, _ = st.Close(), succ.Close() })
			const ttl = 30 * time.Second
			to := store.Holder{ID: "inst-2"}
			succ.Announce(store.Member{ID: to.ID}, ttl)
			if _, err := succ.Acquire(ctx, to, []string{"OTHER"}, ttl); err != nil { // writes its member record
				t.Fatal(err)
			}
			got, err := st.Acquire(ctx, holder, []string{"L"}, ttl)
			if err != nil || !got[0].Acquired {
				t.Fatalf("Acquire: %+v, %v", got, err)
			}
			ref := store.LeaseRef{Lock: "L", Token: got[0].Token}
			if transfer {
				ref.Successor = to.ID
				if res, err := st.Renew(ctx, holder.ID, []store.LeaseRef{ref}, ttl); err != nil || !res[0].Renewed {
					t.Fatalf("Renew: %+v, %v", res, err)
				}
				if _, err := st.Members(ctx, store.MemberFilter{}); err != nil {
					t.Fatal(err)
				}
			}

			gate.arm()
			ended := make(chan error, 1)
			go func() {
				if transfer {
					ended <- st.Transfer(ctx, holder.ID, []store.LeaseRef{ref}, ttl)
				} else {
					ended <- st.Release(ctx, holder.ID, []store.LeaseRef{ref})
				}
			}()
			<-gate.held
			appended := make(chan error, 1)
			go func() {
				appended <- st.AppendEvents(ctx, []store.Event{{Lock: "L", Kind: store.EventReleased, Instance: holder.ID, Token: ref.Token}})
			}()
			// Time for an append that does not wait to send its read.
			select {
			case m := <-gate.other:
				t.Errorf("the append sent %s while the %s was in flight", m, name)
			case err := <-appended:
				t.Errorf("the append returned (%v) while the %s was in flight", err, name)
				appended <- err
			case <-time.After(200 * time.Millisecond):
			}
			gate.release()
			if err := <-ended; err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := <-appended; err != nil {
				t.Fatalf("append: %v", err)
			}
			evs, err := st.Events(ctx, store.EventFilter{Lock: "L"})
			if err != nil || len(evs) != 1 || evs[0].Kind != store.EventReleased {
				t.Fatalf("history of L: %+v, %v; want the one release appended", evs, err)
			}
			if l, err := succ.Locks(ctx, "L"); err != nil || (transfer && l[0].Holder != to.ID) || (!transfer && l[0].Held()) {
				t.Fatalf("L after the %s: %+v, %v", name, l, err)
			}
		})
	}
}
