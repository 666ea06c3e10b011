package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/masterjob/masterjob/internal/faultproxy"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// TestReconnectSoonAfterAnOutage: a client of Open tries again and again
// to reconnect while etcd cannot be reached (here: every connection
// refused for 3 s), not on gRPC's default backoff (1 s after the first
// failed attempt, then 1.6, 2.6, 4.1 s... up to two minutes), which left
// a client of an etcd back after a short outage seconds without it, and
// its masters without their leases. It answers once etcd can be reached.
// The count of attempts, not the time to answer, is what is asserted: the
// attempts of the default backoff are jittered, and a busy host delays
// every answer (the conformance suite's Outage/AnswersSoonAfter bounds
// that time, on every engine).
func TestReconnectSoonAfterAnOutage(t *testing.T) {
	srv := server(t, etcdtest.Debian)
	p := faultproxy.Start(t, srv.Endpoint)
	st := openAt(t, p.Addr(), newPrefix())
	defer st.Close()
	ctx := ctxFor(t)
	if _, err := st.Locks(ctx, "A"); err != nil {
		t.Fatal(err)
	}

	const outage = 3 * time.Second
	before := p.Accepted()
	p.Cut(faultproxy.CutReset)
	time.Sleep(outage)
	attempts := p.Accepted() - before
	p.Restore()
	back := time.Now()
	// With at most 500 ms between attempts, about 10; with gRPC's
	// default, 2 or 3.
	if attempts < 6 {
		t.Errorf("the client tried to reconnect %d times in a %v outage; want at least 6 (ReconnectOption: at most 500 ms apart)", attempts, outage)
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := st.Locks(cctx, "A")
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no answer %v after the outage: %v", time.Since(back), err)
		}
	}
	t.Logf("%d attempts to connect in the %v outage; answered %v after it", attempts, outage, time.Since(back).Round(time.Millisecond))
}
