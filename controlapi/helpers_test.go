package controlapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const remote = "192.0.2.7:4242"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// backend is a store to run handler tests on.
type backend struct {
	name string
	open func(t *testing.T) store.Store
}

var backends = []backend{
	{"memstore", func(t *testing.T) store.Store { return memstore.New() }},
	{"sqlite", func(t *testing.T) store.Store {
		s, err := sqlite.Open(filepath.Join(t.TempDir(), "masterjob.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
}

// eachBackend runs fn on every backend.
func eachBackend(t *testing.T, fn func(t *testing.T, st store.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.open(t))
		})
	}
}

func newHandler(t testing.TB, st store.Store, opts ...controlapi.Option) *controlapi.Handler {
	t.Helper()
	h, err := controlapi.New(st, append([]controlapi.Option{controlapi.WithLogger(quiet())}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

// do sends one request to h, addressed to localhost:8080 (the Host of a
// loopback listener). A non-empty body is sent as JSON unless hdr says
// otherwise; hdr holds header name, value pairs (an empty value deletes the
// header; "Host" sets the request's Host).
func do(t testing.TB, h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.RemoteAddr = remote
	req.Host = "localhost:8080"
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decode checks that rec is a JSON response with status and decodes it.
func decode[T any](t testing.TB, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	var v T
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type %q, want JSON; body %s", ct, rec.Body)
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %T: %v", v, err)
	}
	return v
}

// wantError checks an error response: status, a message, and the field.
func wantError(t testing.TB, rec *httptest.ResponseRecorder, status int, field string) controlapi.Error {
	t.Helper()
	e := decode[controlapi.Error](t, rec, status)
	if e.Error == "" {
		t.Errorf("status %d with an empty error message", status)
	}
	if e.Field != field {
		t.Errorf("status %d, error %q: field %q, want %q", status, e.Error, e.Field, field)
	}
	return e
}

func disable(t testing.TB, h http.Handler, lock, reason string, hdr ...string) controlapi.ControlResult {
	t.Helper()
	body, _ := json.Marshal(controlapi.ControlRequest{LockName: lock, Reason: reason})
	return decode[controlapi.ControlResult](t, do(t, h, "POST", "/api/mastercontrols/disable", string(body), hdr...), http.StatusOK)
}

func enable(t testing.TB, h http.Handler, lock string, hdr ...string) controlapi.ControlResult {
	t.Helper()
	body, _ := json.Marshal(controlapi.ControlRequest{LockName: lock})
	return decode[controlapi.ControlResult](t, do(t, h, "POST", "/api/mastercontrols/enable", string(body), hdr...), http.StatusOK)
}
