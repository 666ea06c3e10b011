package controlapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// These tests talk to the handler through a real listener
// (httptest.NewServer on 127.0.0.1) with real requests.

// client is a client without keep-alive, so that no connection outlives a
// test (goleak).
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// send sends one request to srv and returns the status, the headers and
// the body. host, when not empty, is the Host header; hdr holds header
// name, value pairs.
func send(t *testing.T, srv *httptest.Server, method, path, host, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// lockPath is the path of a lock's endpoint: its name percent-encoded,
// dots too, so that "." and ".." are names and not path segments.
func lockPath(prefix, name string) string {
	return controlapi.BasePath + prefix + "/" + strings.ReplaceAll(url.PathEscape(name), ".", "%2E")
}

// TestEveryLockNameReachable: every valid lock name, those of the
// endpoints ("history", "disable", "enable", "locks") and those made of
// slashes and dots included, is read at /api/mastercontrols/locks/{name}
// and its history at /api/mastercontrols/history/{name}; the seed's POST
// paths keep answering GET with 405 and Allow: POST.
func TestEveryLockNameReachable(t *testing.T) {
	ms := memstore.New()
	srv := httptest.NewServer(newHandler(t, ms))
	defer srv.Close()
	names := []string{"history", "disable", "enable", "locks", "/", "//", "a/b", "a/", "/a", "history/x", ".", "..",
		"a/../b", "%", "%2F", "x?y#z", "sp ace", "ü", "JOB-SCHEDULER", strings.Repeat("n", store.MaxLockNameLen)}
	for i, name := range names {
		if i%2 == 0 {
			acquire(t, ms, holderA, name, time.Minute)
		} else {
			disable(t, srv.Config.Handler, name, "r")
		}
	}
	for _, name := range names {
		code, _, body := send(t, srv, "GET", lockPath("/locks", name), "", "")
		var l controlapi.Lock
		if err := json.Unmarshal([]byte(body), &l); code != http.StatusOK || err != nil || l.LockName != name || l.Unknown {
			t.Errorf("GET %s: %d %s; want lock %q", lockPath("/locks", name), code, body, name)
		}
		code, _, body = send(t, srv, "GET", lockPath("/history", name), "", "")
		var page controlapi.EventPage
		if err := json.Unmarshal([]byte(body), &page); code != http.StatusOK || err != nil {
			t.Errorf("GET %s: %d %s", lockPath("/history", name), code, body)
		}
		for _, e := range page.Events {
			if e.LockName != name {
				t.Errorf("GET %s: an entry of %q", lockPath("/history", name), e.LockName)
			}
		}
	}
	for _, p := range []string{"/disable", "/enable"} {
		code, hdr, body := send(t, srv, "GET", controlapi.BasePath+p, "", "")
		if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != "POST" || !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s: %d, Allow %q, %s; want 405 with Allow: POST", p, code, hdr.Get("Allow"), body)
		}
	}
}

// TestUnknownLock: a lock the store has no record of (token 0, never
// changed) gets 404 with a JSON error at its path, and is marked unknown in
// a list that names it; a lock once held, or disabled, is known, even when
// free and enabled again.
func TestUnknownLock(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store.Store) {
		h := newHandler(t, st)
		srv := httptest.NewServer(h)
		defer srv.Close()
		acquire(t, st, holderA, "HELD", time.Minute)
		disable(t, h, "WAS-DISABLED", "r")
		enable(t, h, "WAS-DISABLED")
		enable(t, h, "ENABLED-ONLY") // changes nothing: still unknown

		code, _, body := send(t, srv, "GET", "/api/mastercontrols/locks/NOBODY", "", "")
		var e controlapi.Error
		if err := json.Unmarshal([]byte(body), &e); code != http.StatusNotFound || err != nil ||
			e.Field != "lockName" || !strings.Contains(e.Error, `unknown lock "NOBODY"`) {
			t.Errorf("GET of an unknown lock: %d %s; want 404 naming it", code, body)
		}
		for _, name := range []string{"HELD", "WAS-DISABLED"} {
			if code, _, body := send(t, srv, "GET", "/api/mastercontrols/locks/"+name, "", ""); code != http.StatusOK || strings.Contains(body, "unknown") {
				t.Errorf("GET %s: %d %s; want 200, not unknown", name, code, body)
			}
		}

		list := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols?lockName=NOBODY&lockName=HELD&lockName=WAS-DISABLED&lockName=ENABLED-ONLY", ""), http.StatusOK)
		unknown := map[string]bool{}
		for _, l := range list.Locks {
			unknown[l.LockName] = l.Unknown
		}
		want := map[string]bool{"NOBODY": true, "HELD": false, "WAS-DISABLED": false, "ENABLED-ONLY": true}
		for n, w := range want {
			if got, ok := unknown[n]; !ok || got != w {
				t.Errorf("list: %q unknown=%v (listed %v), want %v: %+v", n, got, ok, w, list.Locks)
			}
		}
		raw := do(t, h, "GET", "/api/mastercontrols?lockName=NOBODY&lockName=HELD", "").Body.String()
		if strings.Count(raw, `"unknown":true`) != 1 || strings.Contains(raw, `"unknown":false`) {
			t.Errorf("raw list %s: want \"unknown\":true once, and no \"unknown\":false", raw)
		}
	})
}

// TestDNSRebinding: without a token, a request whose Host is not a
// loopback address or localhost is refused with 421 and changes nothing,
// as a page on a name pointed at 127.0.0.1 would send it; loopback hosts,
// names allowed with WithAllowedHosts, and any host with a token, are
// served.
func TestDNSRebinding(t *testing.T) {
	ms := memstore.New()
	srv := httptest.NewServer(newHandler(t, ms))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	evil := "rebind.attacker.example:" + port
	body := `{"lockName":"prod-billing","reason":"pwned"}`

	// What the attacker's page sends: to the browser it is same-origin.
	code, _, resp := send(t, srv, "POST", "/api/mastercontrols/disable", evil, body,
		"Origin", "http://"+evil, "Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors")
	if code != http.StatusMisdirectedRequest || !strings.Contains(resp, `"error"`) {
		t.Errorf("disable through a rebound name: %d %s; want 421 with a JSON error", code, resp)
	}
	if s := lockState(t, ms, "prod-billing"); s.Disabled {
		t.Fatal("a request through a rebound name disabled the lock")
	}
	for _, host := range []string{evil, "rebind.attacker.example", "127.0.0.1.nip.io:" + port, "localhost.attacker.example", "0.0.0.0:" + port, "10.0.0.5"} {
		if code, _, resp := send(t, srv, "GET", "/api/mastercontrols", host, ""); code != http.StatusMisdirectedRequest {
			t.Errorf("GET with Host %q: %d %s; want 421", host, code, resp)
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LocalHost", "localhost.", "[::1]:" + port, "127.9.8.7", "[::ffff:127.0.0.1]:" + port} {
		if code, _, resp := send(t, srv, "GET", "/api/mastercontrols", host, ""); code != http.StatusOK {
			t.Errorf("GET with Host %q: %d %s; want 200", host, code, resp)
		}
	}

	// No Host at all (HTTP/1.0) is no loopback host either.
	wantError(t, do(t, srv.Config.Handler, "GET", "/api/mastercontrols", "", "Host", ""), http.StatusMisdirectedRequest, "")

	// A name the operator allows.
	allowed := httptest.NewServer(newHandler(t, ms, controlapi.WithAllowedHosts("ops.example.com")))
	defer allowed.Close()
	if code, _, resp := send(t, allowed, "GET", "/api/mastercontrols", "OPS.example.com:8080", ""); code != http.StatusOK {
		t.Errorf("allowed host: %d %s", code, resp)
	}
	if code, _, _ := send(t, allowed, "GET", "/api/mastercontrols", evil, ""); code != http.StatusMisdirectedRequest {
		t.Errorf("other host beside an allowed one: %d, want 421", code)
	}
	anyHost := httptest.NewServer(newHandler(t, ms, controlapi.WithAllowedHosts("*")))
	defer anyHost.Close()
	if code, _, resp := send(t, anyHost, "GET", "/api/mastercontrols", evil, ""); code != http.StatusOK {
		t.Errorf("WithAllowedHosts(\"*\"): %d %s", code, resp)
	}

	// With a token, the token protects: any host.
	tokened := httptest.NewServer(newHandler(t, ms, controlapi.WithToken("a-token-of-some-length")))
	defer tokened.Close()
	if code, _, resp := send(t, tokened, "POST", "/api/mastercontrols/disable", "masterjob.example.com", body,
		"Authorization", "Bearer a-token-of-some-length"); code != http.StatusOK {
		t.Errorf("disable with the token: %d %s", code, resp)
	}

	for _, bad := range []string{"", "a:80", "a/b", "a b"} {
		if _, err := controlapi.New(ms, controlapi.WithAllowedHosts(bad)); err == nil {
			t.Errorf("WithAllowedHosts(%q) accepted", bad)
		}
	}
}

// gated is a store whose reads wait until the gate opens.
type gated struct {
	store.Store
	history store.History
	gate    chan struct{}
	entered chan struct{}
}

func (g gated) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.Locks(ctx, names...)
}

// TestMaxInFlight: with n reads calling the store, the next read is
// answered 503 with Retry-After within about BusyWait, while control
// requests, counted apart, still go through; once the store answers, reads
// are served again.
func TestMaxInFlight(t *testing.T) {
	const n = 2
	ms := memstore.New()
	g := gated{Store: ms, gate: make(chan struct{}), entered: make(chan struct{}, 100)}
	srv := httptest.NewServer(newHandler(t, g, controlapi.WithMaxInFlight(n), controlapi.WithHistory(ms)))
	defer srv.Close()

	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			code, _, _ := send(t, srv, "GET", "/api/mastercontrols", "", "")
			codes <- code
		})
	}
	for range n {
		<-g.entered // n reads hold the store
	}

	start := time.Now()
	code, hdr, body := send(t, srv, "GET", "/api/mastercontrols/history", "", "")
	took := time.Since(start)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, "busy") {
		t.Errorf("read beyond the limit: %d, Retry-After %q, %s; want 503 busy with Retry-After", code, hdr.Get("Retry-After"), body)
	}
	if took < controlapi.BusyWait/2 || took > controlapi.BusyWait+time.Second {
		t.Errorf("the busy answer took %v; want about BusyWait (%v)", took, controlapi.BusyWait)
	}
	t.Logf("busy answer after %v", took.Round(time.Millisecond))

	// Control requests have their own slots.
	if code, _, resp := send(t, srv, "POST", "/api/mastercontrols/disable", "", `{"lockName":"JOB","reason":"r"}`); code != http.StatusOK {
		t.Errorf("disable while reads are at the limit: %d %s", code, resp)
	}

	close(g.gate)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("a read within the limit: %d", c)
		}
	}
	if code, _, resp := send(t, srv, "GET", "/api/mastercontrols", "", ""); code != http.StatusOK {
		t.Errorf("read after the store answered: %d %s", code, resp)
	}
	if _, err := controlapi.New(ms, controlapi.WithMaxInFlight(0)); err == nil {
		t.Error("WithMaxInFlight(0) accepted")
	}
}

// TestDisableNeedsReasonOverNetwork: the seed refused a disable without a
// reason with 400; so does the API, naming the field, and nothing changes.
func TestDisableNeedsReasonOverNetwork(t *testing.T) {
	ms := memstore.New()
	srv := httptest.NewServer(newHandler(t, ms))
	defer srv.Close()
	for _, body := range []string{`{"lockName":"JOB"}`, `{"lockName":"JOB","reason":""}`, `{"lockName":"JOB","reason":"   "}`} {
		code, _, resp := send(t, srv, "POST", "/api/mastercontrols/disable", "", body)
		var e controlapi.Error
		if err := json.Unmarshal([]byte(resp), &e); code != http.StatusBadRequest || err != nil || e.Field != "reason" {
			t.Errorf("disable %s: %d %s; want 400 naming the reason", body, code, resp)
		}
	}
	if s := lockState(t, ms, "JOB"); s.Disabled {
		t.Fatal("a disable without a reason disabled the lock")
	}
	// Enable needs none.
	if code, _, resp := send(t, srv, "POST", "/api/mastercontrols/enable", "", `{"lockName":"JOB"}`); code != http.StatusOK {
		t.Errorf("enable without a reason: %d %s", code, resp)
	}
}
