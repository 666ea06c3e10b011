package httpserver_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/store/memstore"
)

// clientFrom returns a client whose connections come from the local
// address ip (any of 127.0.0.0/8 on Linux).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: d.DialContext}}
}

// An address that keeps sending wrong tokens has at most Burst of them
// checked at once and one per Interval after that; the others get 429
// with Retry-After. Other addresses, and requests without a token, are
// not affected; the address recovers once its budget refills.
func TestAuthThrottle(t *testing.T) {
	const (
		token    = "the-right-token-0123456789"
		burst    = 5
		interval = 400 * time.Millisecond
	)
	st := memstore.New()
	defer st.Close()
	api, err := controlapi.New(st, controlapi.WithToken(token), controlapi.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	s := serveT(t, httpserver.ServerConfig{Handler: httpserver.New(httpserver.Config{
		API:          api,
		AuthThrottle: httpserver.AuthThrottle{Burst: burst, Interval: interval},
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	})})
	base := s.URL()
	post := func(c *http.Client, tok string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/api/mastercontrols/enable", strings.NewReader(`{"lockName":"L"}`))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	attacker := clientFrom("127.0.0.1")
	const guesses = 200
	counts := map[int]int{}
	retryAfter := ""
	start := time.Now()
	for i := range guesses {
		resp := post(attacker, "wrong-guess-"+string(rune('a'+i%26)))
		counts[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	elapsed := time.Since(start)
	allowed := burst + int(elapsed/interval) + 1
	t.Logf("%d wrong tokens in %v: %d checked (401), %d refused unchecked (429); at most %d may be checked",
		guesses, elapsed.Round(time.Millisecond), counts[401], counts[429], allowed)
	if counts[401] > allowed || counts[401] < burst || counts[401]+counts[429] != guesses {
		t.Fatalf("statuses %v: want at least %d and at most %d 401s, the rest 429", counts, burst, allowed)
	}
	if retryAfter == "" || retryAfter == "0" {
		t.Errorf("429 without a Retry-After (%q)", retryAfter)
	}
	// While throttled, even the right token waits; requests without one
	// pass. The budget refills continuously: right after the loop it may
	// be a moment from its next whole request (a slow loop on a loaded
	// host made the right token pass in CI). Once a wrong token has been
	// checked again, the budget is empty and the next refill is a whole
	// interval away.
	for deadline := time.Now().Add(10 * interval); ; time.Sleep(interval / 50) {
		if post(attacker, "wrong-again").StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no wrong token checked within %v of throttling: the budget does not refill", 10*interval)
		}
	}
	if resp := post(attacker, token); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the right token from the throttled address: %d, want 429", resp.StatusCode)
	}
	if resp, err := attacker.Get(base + "/api/mastercontrols"); err != nil || resp.StatusCode != 200 {
		t.Errorf("a read without a token from the throttled address: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Another address is not affected.
	if resp := post(clientFrom("127.0.0.2"), token); resp.StatusCode != http.StatusOK {
		t.Errorf("the right token from another address: %d, want 200", resp.StatusCode)
	}
	// The budget refills.
	time.Sleep(2 * interval)
	if resp := post(attacker, token); resp.StatusCode != http.StatusOK {
		t.Errorf("the right token after the budget refilled: %d, want 200", resp.StatusCode)
	}
	if n := strings.Count(logs.String(), "throttled"); n != 1 {
		t.Errorf("%d throttle lines logged, want 1:\n%s", n, logs.String())
	}
}

// Disabled turns the throttle off.
func TestAuthThrottleDisabled(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	api, err := controlapi.New(st, controlapi.WithToken("the-right-token-0123456789"), controlapi.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	s := serveT(t, httpserver.ServerConfig{Handler: httpserver.New(httpserver.Config{
		API: api, AuthThrottle: httpserver.AuthThrottle{Disabled: true},
	})})
	for range 3 * httpserver.DefaultAuthBurst {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", s.URL()+"/api/mastercontrols/enable", strings.NewReader(`{"lockName":"L"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := plainClient(5 * time.Second).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("throttle disabled: %d, want 401", resp.StatusCode)
		}
	}
}
