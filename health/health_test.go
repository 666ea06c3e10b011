package health_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func get(t *testing.T, h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestLiveness(t *testing.T) {
	h := health.Liveness()
	rec := get(t, h, "GET", "/healthz")
	if rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Errorf("GET /healthz: %d %q, want 200 \"ok\\n\"", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	rec = get(t, h, "HEAD", "/healthz")
	if rec.Code != 200 {
		t.Errorf("HEAD /healthz: %d", rec.Code)
	}
	rec = get(t, h, "GET", "/healthz", "Accept", "application/json")
	var st health.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Status != "ok" {
		t.Errorf("JSON liveness: %q (%v)", rec.Body, err)
	}
	rec = get(t, h, "POST", "/healthz")
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /healthz: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestReadiness(t *testing.T) {
	secret := errors.New("dial tcp db.internal:5432: connection refused for user admin")
	for _, tc := range []struct {
		name       string
		err        error
		wantCode   int
		wantReason string
	}{
		{"ready", nil, 200, ""},
		{"not running", masterjob.ErrNotRunning, 503, "executor not running"},
		{"store unreachable", fmt.Errorf("%w since 3s ago: %w", masterjob.ErrStoreUnreachable, secret), 503, "store unreachable"},
		{"past trust window", fmt.Errorf("%w: lock \"A\", 2s past", masterjob.ErrPastTrustWindow), 503, "a job is running past its lease's trust window"},
		{"store error", fmt.Errorf("%w: %w", store.ErrUnavailable, secret), 503, "store unreachable"},
		{"store closed", store.ErrClosed, 503, "shutting down"},
		{"other", secret, 503, "not ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := health.Readiness(func(context.Context) error { return tc.err }, health.WithLogger(quiet()))
			rec := get(t, h, "GET", "/readyz")
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d, want %d; body %q", rec.Code, tc.wantCode, rec.Body)
			}
			wantText := "ok\n"
			if tc.err != nil {
				wantText = "not ready: " + tc.wantReason + "\n"
				if ra := rec.Header().Get("Retry-After"); ra == "" {
					t.Error("no Retry-After on 503")
				}
			}
			if rec.Body.String() != wantText {
				t.Errorf("body %q, want %q", rec.Body, wantText)
			}
			if strings.Contains(rec.Body.String(), "db.internal") {
				t.Error("the backend's words leaked into the response")
			}

			rec = get(t, h, "GET", "/readyz?format=json")
			var st health.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatalf("JSON body %q: %v", rec.Body, err)
			}
			if rec.Code != tc.wantCode || st.Reason != tc.wantReason || st.Error != "" {
				t.Errorf("JSON: %d %+v, want %d reason %q and no error", rec.Code, st, tc.wantCode, tc.wantReason)
			}
			if want := map[bool]string{true: "ok", false: "not ready"}[tc.err == nil]; st.Status != want {
				t.Errorf("JSON status %q, want %q", st.Status, want)
			}
		})
	}
}

func TestReadinessDetails(t *testing.T) {
	err := fmt.Errorf("%w: boom", store.ErrUnavailable)
	h := health.Readiness(func(context.Context) error { return err }, health.WithDetails(), health.WithLogger(quiet()))
	rec := get(t, h, "GET", "/readyz", "Accept", "text/html, application/json;q=0.9")
	var st health.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if st.Error != err.Error() || st.Reason != "store unreachable" {
		t.Errorf("got %+v, want the full error with WithDetails", st)
	}
	rec = get(t, h, "GET", "/readyz")
	if want := "not ready: store unreachable (" + err.Error() + ")\n"; rec.Body.String() != want {
		t.Errorf("text body %q, want %q", rec.Body, want)
	}
}

func TestReadinessTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ignoresCtx := func(context.Context) error { <-release; return nil }
	honoursCtx := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	for name, check := range map[string]func(context.Context) error{"ignores its context": ignoresCtx, "honours its context": honoursCtx} {
		t.Run(name, func(t *testing.T) {
			h := health.Readiness(check, health.WithTimeout(50*time.Millisecond), health.WithLogger(quiet()))
			start := time.Now()
			rec := get(t, h, "GET", "/readyz")
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("probe took %v with a 50ms timeout", took)
			}
			if rec.Code != 503 || rec.Body.String() != "not ready: readiness check timed out\n" {
				t.Errorf("%d %q, want 503 timed out", rec.Code, rec.Body)
			}
		})
	}
}

func TestReadinessNilCheckAndMethods(t *testing.T) {
	h := health.Readiness(nil)
	if rec := get(t, h, "GET", "/readyz"); rec.Code != 200 {
		t.Errorf("nil check: %d", rec.Code)
	}
	if rec := get(t, h, "DELETE", "/readyz"); rec.Code != 405 {
		t.Errorf("DELETE: %d, want 405", rec.Code)
	}
}

func TestReadinessLogsChanges(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var fail error
	h := health.Readiness(func(context.Context) error { return fail }, health.WithLogger(log))
	fail = store.ErrUnavailable
	for range 3 {
		get(t, h, "GET", "/readyz")
	}
	fail = nil
	for range 2 {
		get(t, h, "GET", "/readyz")
	}
	out := buf.String()
	if n := strings.Count(out, "msg=\"not ready\""); n != 1 {
		t.Errorf("%d not-ready lines at Info and above, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "msg=\"ready again\""); n != 1 {
		t.Errorf("%d ready-again lines, want 1:\n%s", n, out)
	}
}

func TestStorePing(t *testing.T) {
	st := memstore.New()
	h := health.Readiness(health.StorePing(st), health.WithLogger(quiet()))
	if rec := get(t, h, "GET", "/readyz"); rec.Code != 200 {
		t.Fatalf("open store: %d %q", rec.Code, rec.Body)
	}
	locks, err := st.Locks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 0 {
		t.Errorf("the ping created locks: %+v", locks)
	}
	_ = st.Close()
	if rec := get(t, h, "GET", "/readyz"); rec.Code != 503 || rec.Body.String() != "not ready: shutting down\n" {
		t.Errorf("closed store: %d %q", rec.Code, rec.Body)
	}
}

// TestExecutorReady probes a real executor: not ready before Run, ready
// while it runs on a healthy store.
func TestExecutorReady(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	ex, err := masterjob.New(st, masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInitDelay(0), masterjob.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	h := health.Readiness(func(context.Context) error { return ex.Ready() }, health.WithLogger(quiet()))
	if rec := get(t, h, "GET", "/readyz"); rec.Code != 503 || rec.Body.String() != "not ready: executor not running\n" {
		t.Errorf("before Run: %d %q", rec.Code, rec.Body)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec := get(t, h, "GET", "/readyz")
		if rec.Code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready 5s after Run: %d %q", rec.Code, rec.Body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
