package httpserver

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// The budget refills by one per Interval up to Burst, by the injected
// clock; at most MaxClients addresses are remembered, the one refused
// least recently forgotten first; IPv6 addresses share the budget of
// their /64.
func TestThrottleBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	th := newThrottle(AuthThrottle{Burst: 3, Interval: time.Second, MaxClients: 4}, slog.New(slog.DiscardHandler), http.NotFoundHandler())
	th.now = func() time.Time { return now }
	key := func(a string) netip.Prefix {
		k, ok := clientKey(a)
		if !ok {
			t.Fatalf("clientKey(%q) failed", a)
		}
		return k
	}
	a := key("10.0.0.1:5555")
	for i := range 3 {
		if d := th.wait(a); d != 0 {
			t.Fatalf("refusal %d: wait %v, want 0", i, d)
		}
		if ranOut := th.refused(a); ranOut != (i == 2) {
			t.Fatalf("refusal %d: ran out %v", i, ranOut)
		}
	}
	if d := th.wait(a); d != time.Second {
		t.Fatalf("after the burst: wait %v, want 1s", d)
	}
	now = now.Add(400 * time.Millisecond)
	if d := th.wait(a); d != 600*time.Millisecond {
		t.Fatalf("400ms later: wait %v, want 600ms", d)
	}
	now = now.Add(600 * time.Millisecond)
	if d := th.wait(a); d != 0 {
		t.Fatalf("1s later: wait %v, want 0", d)
	}
	if ranOut := th.refused(a); ranOut {
		t.Fatalf("still throttled: logged again")
	}
	now = now.Add(time.Hour)
	th.refused(a)
	if d := th.wait(a); d != 0 {
		t.Fatalf("after a full refill: wait %v", d)
	}

	// IPv6: one /64, one budget.
	v6a, v6b := key("[2001:db8:1:2::1]:1"), key("[2001:db8:1:2:ffff::9]:2")
	if v6a != v6b || key("[2001:db8:1:3::1]:1") == v6a {
		t.Fatalf("IPv6 keys: %v %v", v6a, v6b)
	}
	if key("[::ffff:10.0.0.1]:5") != a {
		t.Fatalf("an IPv4-mapped address has another key than its IPv4 form")
	}

	// Bounded memory: a flood of addresses keeps MaxClients.
	for i := range 1000 {
		th.refused(key(fmt.Sprintf("10.1.%d.%d:1", i/256, i%256)))
		if n := th.remembered(); n > 4 {
			t.Fatalf("%d addresses remembered, want at most 4", n)
		}
	}
	if _, ok := th.clients[a]; ok {
		t.Fatalf("the least recently refused address was not forgotten")
	}
}
