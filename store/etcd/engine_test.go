package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
	"github.com/masterjob/masterjob/storeurl"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var holder = store.Holder{ID: "inst-1", Info: `{"host":"h"}`}

func TestLeaseTTL(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{
		{500 * time.Millisecond, 0},
		{time.Second, 1},
		{1500 * time.Millisecond, 1},
		{1900 * time.Millisecond, 2},
		{2 * time.Second, 2},
		{2500 * time.Millisecond, 2},
		{3 * time.Second, 2},
		{3200 * time.Millisecond, 3},
		{4 * time.Second, 3},
		{5 * time.Second, 4},
		{10 * time.Second, 9},
		{24 * time.Second, 23},
		{30 * time.Second, 29},
	} {
		got := etcd.LeaseTTL(c.d)
		if got != c.want {
			t.Errorf("LeaseTTL(%v) = %ds, want %ds", c.d, got, c.want)
		}
		if got == 0 {
			continue
		}
		// The promises of the rule: never more than d except between 1.5 s
		// and 2 s; a trust window (TTL - d/4) longer than the heartbeat
		// (d/3); the keys gone within d when the TTL allows it.
		ttl := time.Duration(got) * time.Second
		if ttl > c.d && !(c.d > 1500*time.Millisecond && c.d < 2*time.Second) {
			t.Errorf("LeaseTTL(%v) = %v, longer than asked", c.d, ttl)
		}
		if ttl-c.d/4 <= c.d/3 {
			t.Errorf("LeaseTTL(%v) = %v: trust window %v not longer than the heartbeat %v", c.d, ttl, ttl-c.d/4, c.d/3)
		}
	}
}

// requests returns the requests srv served, by method: unary calls
// (gRPC's started counter) and lease keepalives (etcd's renewal counter:
// gRPC counts stream messages differently across etcd versions).
func requests(t *testing.T, srv *etcdtest.Server) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range []string{"Range", "Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseTimeToLive", "LeaseRevoke"} {
		v, err := srv.Metric(t.Context(), "grpc_server_started_total", `grpc_method="`+m+`"`)
		if err != nil {
			t.Fatal(err)
		}
		out[m] = v
	}
	v, err := srv.Metric(t.Context(), "etcd_debugging_lease_renewed_total")
	if err != nil {
		t.Fatal(err)
	}
	out["LeaseKeepAlive"] = v
	return out
}

func diff(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// TestRenewIsOneKeepalive: renewing 1 or 1,000 masterships is one
// LeaseKeepAlive and one read, counted by etcd's own metrics; a
// follower's check of 1,000 locks held by another is one read and one
// LeaseTimeToLive (for the holder's one lease).
func TestRenewIsOneKeepalive(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.Start(t, kind, etcdtest.Fast)
			st := open(t, srv, newPrefix())
			defer st.Close()
			ctx := ctxFor(t)
			var counts []map[string]float64
			for _, n := range []int{1, 1000} {
				names := make([]string, n)
				for i := range names {
					names[i] = fmt.Sprintf("N%d-%04d", n, i)
				}
				got, err := st.Acquire(ctx, holder, names, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				refs := make([]store.LeaseRef, 0, n)
				for _, s := range got {
					if !s.Acquired {
						t.Fatalf("%s not acquired", s.Lock)
					}
					refs = append(refs, store.LeaseRef{Lock: s.Lock, Token: s.Token})
				}
				before := requests(t, srv)
				res, err := st.Renew(ctx, holder.ID, refs, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range res {
					if !r.Renewed {
						t.Fatalf("%s not renewed", r.Lock)
					}
				}
				renew := diff(requests(t, srv), before)
				t.Logf("renewal of %d masterships: %v", n, renew)
				if renew["LeaseKeepAlive"] != 1 || renew["Txn"]+renew["Range"] != 1 || len(renew) != 2 {
					t.Errorf("renewal of %d masterships made %v, want one keepalive and one read", n, renew)
				}
				counts = append(counts, renew)

				other := open(t, srv, st.Prefix())
				before = requests(t, srv)
				states, err := other.Acquire(ctx, store.Holder{ID: "inst-2"}, names, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				check := diff(requests(t, srv), before)
				t.Logf("a follower's check of %d locks: %v", n, check)
				for _, s := range states {
					if s.Acquired || !s.Held() || s.Holder != holder.ID {
						t.Fatalf("follower's view of %s: %+v", s.Lock, s)
					}
				}
				if check["Txn"]+check["Range"] != 1 || check["LeaseTimeToLive"] != 1 || len(check) > 2 {
					t.Errorf("a follower's check of %d locks made %v, want one read and one LeaseTimeToLive", n, check)
				}
				other.Close()
			}
		})
	}
}

// twoHandles starts the current etcd and opens two handles on one new
// prefix (a master's and its successor's), closed when the test ends.
func twoHandles(t *testing.T) (*etcdtest.Server, *etcd.Store, *etcd.Store) {
	t.Helper()
	srv := server(t, etcdtest.Current)
	prefix := newPrefix()
	st, succ := open(t, srv, prefix), open(t, srv, prefix)
	t.Cleanup(func() { _, _ = st.Close(), succ.Close() })
	return srv, st, succ
}

// TestSuccessorTakesReservedLockWithoutTTLRead: the successor's
// acquisition of a lock reserved for it, the step of a hand-off etcd's
// own election has no counterpart for, asks no lease's TTL: the state of
// a lock taken is known from the take (it once asked the reservation's
// lease, a round trip after the commit).
func TestSuccessorTakesReservedLockWithoutTTLRead(t *testing.T) {
	srv, st, succ := twoHandles(t)
	ctx := ctxFor(t)
	got, err := st.Acquire(ctx, holder, []string{"RES"}, 30*time.Second)
	if err != nil || !got[0].Acquired {
		t.Fatal(got, err)
	}
	next := store.Holder{ID: "inst-2"}
	if err := st.Release(ctx, holder.ID, []store.LeaseRef{{Lock: "RES", Token: got[0].Token, Successor: next.ID, Reserve: 5 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	before := requests(t, srv)
	took, err := succ.Acquire(ctx, next, []string{"RES"}, 30*time.Second)
	if err != nil || !took[0].Acquired {
		t.Fatal(took, err)
	}
	calls := diff(requests(t, srv), before)
	t.Logf("the successor's acquisition: %v", calls)
	if calls["LeaseTimeToLive"] != 0 {
		t.Errorf("the successor's acquisition made %v: it asked a lease's TTL", calls)
	}
	if took[0].TTL <= 0 || took[0].ReservedFor != "" {
		t.Errorf("state of the lock taken: %+v", took[0])
	}
}

// TestReleaseKeepsTheLease: releasing one lock deletes its key and leaves
// the instance's lease, which its other locks use, alive.
func TestReleaseKeepsTheLease(t *testing.T) {
	srv := server(t, etcdtest.Current)
	prefix := newPrefix()
	st := open(t, srv, prefix)
	defer st.Close()
	cli := client(t, srv)
	ctx := ctxFor(t)
	got, err := st.Acquire(ctx, holder, []string{"A", "B"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	leaseOf := func(lock string) clientv3.LeaseID {
		resp, err := cli.Get(ctx, etcd.LockKeyPrefix(prefix, lock)+"l")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lease key of %s: %v %v", lock, resp, err)
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	la, lb := leaseOf("A"), leaseOf("B")
	if la != lb {
		t.Fatalf("locks of one instance on two leases: %x, %x", la, lb)
	}
	var a, b store.LockState
	for _, s := range got {
		if s.Lock == "A" {
			a = s
		} else {
			b = s
		}
	}
	if err := st.Release(ctx, holder.ID, []store.LeaseRef{{Lock: "A", Token: a.Token}}); err != nil {
		t.Fatal(err)
	}
	ttl, err := cli.TimeToLive(ctx, la)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("the lease after a release of one of its locks: %+v, %v; want alive", ttl, err)
	}
	res, err := st.Renew(ctx, holder.ID, []store.LeaseRef{{Lock: "B", Token: b.Token}}, 10*time.Second)
	if err != nil || !res[0].Renewed {
		t.Fatalf("renewal of the other lock: %+v, %v", res, err)
	}
	if leaseOf("B") != lb {
		t.Error("the other lock moved to another lease")
	}
}

// TestShortToleranceRefused: on a server with etcd's default timing (a
// minimum TTL of 2 s), a lease under 2 s is refused, by CheckTTL and by
// Acquire, with the rule in the message, and an executor with such a
// tolerance does not start.
func TestShortToleranceRefused(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Debian, etcdtest.Default)
	st := open(t, srv, newPrefix())
	defer st.Close()
	ctx := ctxFor(t)
	for _, d := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 1900 * time.Millisecond} {
		err := st.CheckTTL(ctx, d)
		if !errors.Is(err, store.ErrLeaseTooShort) || !strings.Contains(err.Error(), "ceil(1.5 × election timeout)") {
			t.Errorf("CheckTTL(%v) = %v, want ErrLeaseTooShort naming the rule", d, err)
		}
		if _, err := st.Acquire(ctx, holder, []string{"L"}, d); !errors.Is(err, store.ErrLeaseTooShort) {
			t.Errorf("Acquire with a lease of %v: %v, want ErrLeaseTooShort", d, err)
		}
	}
	t.Logf("refusal: %v", st.CheckTTL(ctx, 1500*time.Millisecond))
	if err := st.CheckTTL(ctx, 2*time.Second); err != nil {
		t.Errorf("CheckTTL(2s) = %v, want nil", err)
	}

	e, err := masterjob.New(st, masterjob.WithHeartbeatInterval(300*time.Millisecond), masterjob.WithTolerance(1500*time.Millisecond),
		masterjob.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartMaster("L", masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error { <-ctx.Done(); return nil })); err != nil {
		t.Fatal(err)
	}
	err = e.Run(ctx)
	if !errors.Is(err, masterjob.ErrInvalidConfig) || !errors.Is(err, store.ErrLeaseTooShort) || !strings.Contains(err.Error(), "masterJobTolerance") {
		t.Errorf("Run with a tolerance of 1.5s = %v, want ErrInvalidConfig naming masterJobTolerance", err)
	}
	t.Logf("Run: %v", err)
}

// TestUserClient: New uses the caller's client and leaves it open.
func TestUserClient(t *testing.T) {
	srv := server(t, etcdtest.Debian)
	cli := client(t, srv)
	st, err := etcd.New(cli, etcd.WithPrefix(newPrefix()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	if _, err := st.Acquire(ctx, holder, []string{"L"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Locks(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Locks after Close: %v, want ErrClosed", err)
	}
	if _, err := cli.Get(ctx, "x"); err != nil {
		t.Errorf("the caller's client after Close: %v, want it still open", err)
	}
}

// TestStoreRestart: a restart of etcd (the only member) is survived: calls
// fail with ErrUnavailable while it is down, then succeed, and a
// subscription made before delivers changes made after.
func TestStoreRestart(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.Start(t, kind, etcdtest.Fast)
			st := open(t, srv, newPrefix())
			defer st.Close()
			ctx := ctxFor(t)
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := st.Subscribe(sctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := st.Acquire(ctx, holder, []string{"R"}, 10*time.Second)
			if err != nil || !got[0].Acquired {
				t.Fatalf("Acquire: %+v %v", got, err)
			}
			srv.Kill()
			short, cancelShort := context.WithTimeout(ctx, time.Second)
			_, err = st.Renew(short, holder.ID, []store.LeaseRef{{Lock: "R", Token: got[0].Token}}, 10*time.Second)
			cancelShort()
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("Renew with etcd down: %v, want ErrUnavailable", err)
			}
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				c, cancel := context.WithTimeout(ctx, 2*time.Second)
				res, err := st.Renew(c, holder.ID, []store.LeaseRef{{Lock: "R", Token: got[0].Token}}, 10*time.Second)
				cancel()
				if err == nil {
					if !res[0].Renewed {
						t.Fatalf("after the restart the lease did not renew: %+v", res[0])
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Renew still failing 30s after the restart: %v", err)
				}
			}
			if err := st.Release(ctx, holder.ID, []store.LeaseRef{{Lock: "R", Token: got[0].Token}}); err != nil {
				t.Fatal(err)
			}
			timeout := time.After(30 * time.Second)
			for {
				select {
				case c, ok := <-ch:
					if !ok {
						t.Fatal("the subscription ended with the restart")
					}
					if c.Kind == store.ChangeLease && c.Lock == "R" {
						return
					}
				case <-timeout:
					t.Fatal("no notification of the release after the restart")
				}
			}
		})
	}
}

// TestOpenURL: storeurl opens etcd URLs once this package is imported, and
// errors show no password.
func TestOpenURL(t *testing.T) {
	srv := server(t, etcdtest.Current)
	ctx := ctxFor(t)
	prefix := newPrefix()
	st, err := storeurl.Open(ctx, "etcd://"+srv.Endpoint+",127.0.0.1:1/?prefix="+prefix+"&dial_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Disable(ctx, "U", "test", "t"); err != nil {
		t.Fatal(err)
	}
	if got := st.(*etcd.Store).Prefix(); got != prefix {
		t.Errorf("prefix %q, want %q", got, prefix)
	}
	// A store URL that cannot be reached, opened with no deadline of the
	// caller's (as the CLI's status does): dial_timeout ends the wait,
	// with credentials (the client's authentication waits) and without
	// (the store's first read waits).
	for _, raw := range []string{"etcd://u:s3cret@127.0.0.1:1/?dial_timeout=300ms", "etcd://127.0.0.1:1/?dial_timeout=300ms"} {
		done := make(chan error, 1)
		go func() {
			_, err := storeurl.Open(context.Background(), raw)
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			t.Fatalf("open of %s with no deadline: no answer after a minute", raw)
		}
		if err == nil || strings.Contains(err.Error(), "s3cret") || !errors.Is(err, store.ErrUnavailable) ||
			!errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "dial timeout of 300ms") {
			t.Errorf("open of %s: %v; want ErrUnavailable and the dial timeout named, no password", raw, err)
		}
	}
}

// TestAcquireTTLFromCallStart: a lock acquired on a lease kept alive a
// while ago gets a whole TTL counted from the call's start (the lease is
// kept alive beside the writes), not what was left of the lease: the
// executor counts its trust window from the call's start, and a large
// acquisition (10,000 locks, a second of writes) was otherwise released as
// acquired too late to trust.
func TestAcquireTTLFromCallStart(t *testing.T) {
	srv := server(t, etcdtest.Current)
	st := open(t, srv, newPrefix())
	defer st.Close()
	ctx := ctxFor(t)
	const ttl = 3 * time.Second // a lease of 2 s (LeaseTTL)
	if _, err := st.Acquire(ctx, holder, []string{"FIRST"}, ttl); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // under a third of the lease: no keepalive before the writes
	start := time.Now()
	got, err := st.Acquire(ctx, holder, []string{"SECOND"}, ttl)
	if err != nil || !got[0].Acquired {
		t.Fatalf("Acquire: %+v %v", got, err)
	}
	if got[0].TTL < 2*time.Second-50*time.Millisecond || got[0].TTL > ttl {
		t.Errorf("TTL of the second lock = %v, want about the lease's 2s from the call's start", got[0].TTL)
	}
	if lo := start.Add(got[0].TTL); got[0].ExpiresAt.Before(lo.Add(-5 * time.Millisecond)) {
		t.Errorf("ExpiresAt %v before the call's start + TTL %v", got[0].ExpiresAt, lo)
	}
}

// TestTransferIsOneTransaction: a hand-off's transfer, by a handle that
// renewed the lock and read the member list (as an executor's has), is one
// transaction with a keepalive beside it: no read first, no lease granted.
// A change since those reads (here a Disable) makes it read, and release
// rather than give.
func TestTransferIsOneTransaction(t *testing.T) {
	srv, st, succ := twoHandles(t)
	ctx := ctxFor(t)
	const ttl = 30 * time.Second
	to := store.Holder{ID: "inst-2", Info: `{"host":"g"}`}
	succ.Announce(store.Member{ID: to.ID, Info: to.Info}, ttl)
	if _, err := succ.Acquire(ctx, to, []string{"OTHER"}, ttl); err != nil { // writes its member record
		t.Fatal(err)
	}
	give := func(lock string) store.LeaseRef {
		t.Helper()
		got, err := st.Acquire(ctx, holder, []string{lock}, ttl)
		if err != nil || !got[0].Acquired {
			t.Fatalf("Acquire(%s): %+v, %v", lock, got, err)
		}
		ref := store.LeaseRef{Lock: lock, Token: got[0].Token, Successor: to.ID}
		if res, err := st.Renew(ctx, holder.ID, []store.LeaseRef{ref}, ttl); err != nil || !res[0].Renewed {
			t.Fatalf("Renew(%s): %+v, %v", lock, res, err)
		}
		if _, err := st.Members(ctx, store.MemberFilter{}); err != nil {
			t.Fatal(err)
		}
		return ref
	}

	ref := give("GIVEN")
	before := requests(t, srv)
	if err := st.Transfer(ctx, holder.ID, []store.LeaseRef{ref}, ttl); err != nil {
		t.Fatal(err)
	}
	calls := diff(requests(t, srv), before)
	t.Logf("transfer: %v", calls)
	if calls["Txn"] != 1 || calls["LeaseKeepAlive"] != 1 || len(calls) != 2 {
		t.Errorf("the transfer made %v, want one transaction and one keepalive", calls)
	}
	got, err := succ.Locks(ctx, "GIVEN")
	if err != nil {
		t.Fatal(err)
	}
	if g := got[0]; g.Holder != to.ID || g.Token <= ref.Token || g.TTL <= 0 || g.HolderInfo != to.Info {
		t.Fatalf("after the transfer: %+v, want held by %s with a greater token and its info", g, to.ID)
	}

	ref = give("DISABLED")
	if _, err := succ.Disable(ctx, "DISABLED", "maintenance", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := st.Transfer(ctx, holder.ID, []store.LeaseRef{ref}, ttl); err != nil {
		t.Fatal(err)
	}
	if got, err = succ.Locks(ctx, "DISABLED"); err != nil {
		t.Fatal(err)
	}
	if g := got[0]; g.Held() {
		t.Fatalf("a lock disabled after the handle's last read was given: %+v", g)
	}
}
