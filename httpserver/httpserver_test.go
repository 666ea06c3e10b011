package httpserver_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/dashboard"
	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type fixture struct {
	st  *memstore.Store
	srv *httptest.Server

	mu       sync.Mutex
	readyErr error // what the readiness check returns
}

func (f *fixture) setReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readyErr = err
}

func (f *fixture) ready(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readyErr
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{st: memstore.New()}
	t.Cleanup(func() { _ = f.st.Close() })
	api, err := controlapi.New(f.st, controlapi.WithToken("s3cret"), controlapi.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	obs, err := prom.NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	obs.Transition(masterjob.Transition{Lock: "JOB-SCHEDULER", Kind: masterjob.Acquired, Token: 7})
	f.srv = httptest.NewServer(httpserver.New(httpserver.Config{
		API:          api,
		Gatherer:     reg,
		Ready:        f.ready,
		ReadyOptions: []health.Option{health.WithLogger(quiet())},
		Dashboard:    []dashboard.Option{dashboard.WithTitle("staging")},
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func send(t *testing.T, srv *httptest.Server, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestRoutes(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		method, path string
		status       int
		contains     string
		contentType  string
	}{
		{"GET", "/api/mastercontrols", 200, `"locks"`, "application/json; charset=utf-8"},
		{"GET", "/api/mastercontrols/locks/JOB-SCHEDULER", 404, `unknown lock \"JOB-SCHEDULER\"`, "application/json; charset=utf-8"},
		{"GET", "/api/mastercontrols/history", 200, `"events"`, "application/json; charset=utf-8"},
		{"GET", "/api/mastercontrols/no/such/path", 404, `"error"`, "application/json; charset=utf-8"},
		{"POST", "/api/mastercontrols/disable", 401, `"error"`, "application/json; charset=utf-8"},
		{"GET", "/metrics", 200, `masterjob_is_master{lock="JOB-SCHEDULER"} 1`, ""},
		{"HEAD", "/metrics", 200, "", ""},
		{"POST", "/metrics", 405, "", ""},
		{"GET", "/healthz", 200, "ok", "text/plain; charset=utf-8"},
		{"GET", "/readyz", 200, "ok", "text/plain; charset=utf-8"},
		{"GET", "/", 200, "<title>staging · masterjob</title>", "text/html; charset=utf-8"},
		{"GET", "/dashboard.js", 200, "api/mastercontrols", "text/javascript; charset=utf-8"},
		{"GET", "/dashboard.css", 200, ".badge", "text/css; charset=utf-8"},
		{"GET", "/favicon.svg", 200, "<svg", "image/svg+xml"},
		{"GET", "/nope", 404, "", ""},
		{"GET", "/api/mastercontrolsX", 404, "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			res, body := send(t, f.srv, tc.method, tc.path, "")
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %q", res.StatusCode, tc.status, body)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("body does not contain %q:\n%.500s", tc.contains, body)
			}
			if tc.contentType != "" && res.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("Content-Type %q, want %q", res.Header.Get("Content-Type"), tc.contentType)
			}
		})
	}
}

func TestControlThroughComposition(t *testing.T) {
	f := newFixture(t)
	res, body := send(t, f.srv, "POST", "/api/mastercontrols/disable", `{"lockName":"JOB-SCHEDULER","reason":"maintenance"}`,
		"Content-Type", "application/json", "Authorization", "Bearer s3cret")
	if res.StatusCode != 200 {
		t.Fatalf("disable: %d %s", res.StatusCode, body)
	}
	states, err := f.st.Locks(t.Context(), "JOB-SCHEDULER")
	if err != nil {
		t.Fatal(err)
	}
	if !states[0].Disabled || states[0].Reason != "maintenance" {
		t.Errorf("store after disable: %+v", states[0])
	}
	_, body = send(t, f.srv, "GET", "/api/mastercontrols/history", "")
	var page controlapi.EventPage
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 || page.Events[0].Kind != string(store.EventDisabled) {
		t.Errorf("history: %+v", page.Events)
	}
}

func TestReadyz(t *testing.T) {
	f := newFixture(t)
	f.setReady(masterjob.ErrStoreUnreachable)
	res, body := send(t, f.srv, "GET", "/readyz", "")
	if res.StatusCode != 503 || body != "not ready: store unreachable\n" {
		t.Errorf("not ready: %d %q", res.StatusCode, body)
	}
	f.setReady(nil)
	if res, _ := send(t, f.srv, "GET", "/readyz", ""); res.StatusCode != 200 {
		t.Errorf("ready again: %d", res.StatusCode)
	}
}

func TestDashboardHeaders(t *testing.T) {
	f := newFixture(t)
	res, _ := send(t, f.srv, "GET", "/", "")
	for h, want := range map[string]string{
		"Content-Security-Policy": dashboard.ContentSecurityPolicy,
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
	} {
		if got := res.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
}

// TestPartialConfig checks that missing pieces are not served and that
// the probes always are.
func TestPartialConfig(t *testing.T) {
	srv := httptest.NewServer(httpserver.New(httpserver.Config{}))
	defer srv.Close()
	for path, want := range map[string]int{
		"/api/mastercontrols": 404, "/metrics": 404, "/": 404, "/healthz": 200, "/readyz": 200,
	} {
		if res, _ := send(t, srv, "GET", path, ""); res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, res.StatusCode, want)
		}
	}

	st := memstore.New()
	defer st.Close()
	api, err := controlapi.New(st, controlapi.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(httpserver.New(httpserver.Config{API: api, NoDashboard: true}))
	defer srv2.Close()
	if res, _ := send(t, srv2, "GET", "/", ""); res.StatusCode != 404 {
		t.Errorf("NoDashboard: GET / %d, want 404", res.StatusCode)
	}
	if res, _ := send(t, srv2, "GET", "/api/mastercontrols", ""); res.StatusCode != 200 {
		t.Errorf("NoDashboard: GET /api/mastercontrols %d, want 200", res.StatusCode)
	}
}

// TestStorePingReadiness is the composition `masterjob serve` uses: ready
// while the store answers.
func TestStorePingReadiness(t *testing.T) {
	st := memstore.New()
	srv := httptest.NewServer(httpserver.New(httpserver.Config{
		Ready: health.StorePing(st), ReadyOptions: []health.Option{health.WithLogger(quiet())},
	}))
	defer srv.Close()
	if res, _ := send(t, srv, "GET", "/readyz", ""); res.StatusCode != 200 {
		t.Errorf("open store: %d", res.StatusCode)
	}
	_ = st.Close()
	res, body := send(t, srv, "GET", "/readyz", "")
	if res.StatusCode != 503 {
		t.Errorf("closed store: %d %q", res.StatusCode, body)
	}
}

// TestHostRuleThroughComposition: without a token, the control API and the
// dashboard page answer only requests addressed to a loopback host or
// localhost (a page on a name pointed at 127.0.0.1, DNS rebinding, gets
// 421 from both); the probes and the metrics are not concerned.
func TestHostRuleThroughComposition(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	api, err := controlapi.New(st, controlapi.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.New(httpserver.Config{API: api, Gatherer: prometheus.NewRegistry()}))
	defer srv.Close()
	get := func(path, host string) int {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		path, host string
		want       int
	}{
		{"/", "rebind.attacker.example", http.StatusMisdirectedRequest},
		{"/dashboard.js", "rebind.attacker.example:80", http.StatusMisdirectedRequest},
		{"/api/mastercontrols", "rebind.attacker.example", http.StatusMisdirectedRequest},
		{"/", "localhost:8080", http.StatusOK},
		{"/", "127.0.0.1", http.StatusOK},
		{"/api/mastercontrols", "[::1]:8080", http.StatusOK},
		{"/healthz", "rebind.attacker.example", http.StatusOK},
		{"/metrics", "rebind.attacker.example", http.StatusOK},
	} {
		if got := get(tc.path, tc.host); got != tc.want {
			t.Errorf("GET %s with Host %q: %d, want %d", tc.path, tc.host, got, tc.want)
		}
	}
	res, body := send(t, srv, "POST", "/api/mastercontrols/disable", `{"lockName":"JOB","reason":"r"}`, "Content-Type", "application/json")
	if res.StatusCode != http.StatusOK {
		t.Errorf("disable through 127.0.0.1: %d %s", res.StatusCode, body)
	}
}
