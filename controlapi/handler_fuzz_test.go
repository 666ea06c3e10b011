package controlapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// FuzzHandler sends arbitrary requests to a handler over a store where a
// lock is held. Whatever arrives, the answer is JSON with an expected
// status, errors carry a message, and the lease keeps its holder and token
// (a disable may only revoke it).
func FuzzHandler(f *testing.F) {
	for _, s := range []struct{ method, target, ct, body string }{
		{"POST", "/api/mastercontrols/disable", "application/json", `{"lockName":"HELD","reason":"r"}`},
		{"POST", "/api/mastercontrols/enable", "application/json", `{"lockName":"HELD"}`},
		{"POST", "/api/mastercontrols/disable", "text/plain", `{"lockName":"HELD"}`},
		{"POST", "/api/mastercontrols/disable", "application/json", `{"lockName":"HELD","lockName":"X"}`},
		{"GET", "/api/mastercontrols", "", ""},
		{"GET", "/api/mastercontrols?lockName=HELD&lockName=x", "", ""},
		{"GET", "/api/mastercontrols/locks/HELD", "", ""},
		{"GET", "/api/mastercontrols/history/HELD?limit=5", "", ""},
		{"GET", "/api/mastercontrols/locks/history", "", ""},
		{"GET", "/api/mastercontrols/locks/a/../b", "", ""},
		{"GET", "/api/mastercontrols/locks/%2F", "", ""},
		{"GET", "/api/mastercontrols/history?before=3&lockName=HELD", "", ""},
		{"DELETE", "/api/mastercontrols/locks/HELD", "", ""},
		{"GET", "/api/mastercontrols/locks/a%2F..%2Fb", "", ""},
		{"PATCH", "/api/mastercontrols/disable", "application/json", `{}`},
		{"GET", "/api/mastercontrols/locks/%00", "", ""},
		{"GET", "/api/mastercontrols//locks/x", "", ""},
	} {
		f.Add(s.method, s.target, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target, contentType string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethod(method) {
			return // net/http refuses such requests before any handler
		}
		ms := memstore.New()
		ctx := context.Background()
		held, err := ms.Acquire(ctx, store.Holder{ID: "holder", Info: `{"host":"h"}`}, []string{"HELD"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		h, err := controlapi.New(ms, controlapi.WithLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		req := &http.Request{
			Method: method, URL: u, RequestURI: target, Host: "127.0.0.1:8080",
			Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)), RemoteAddr: "192.0.2.1:1", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch rec.Code {
		case 200, 400, 404, 405, 413, 415:
		default:
			t.Fatalf("%s %s: status %d: %s", method, target, rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Fatalf("Content-Type %q", ct)
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("response is not a JSON object: %v: %s", err, rec.Body)
		}
		if rec.Code >= 400 {
			if msg, _ := v["error"].(string); msg == "" {
				t.Fatalf("status %d without an error message: %s", rec.Code, rec.Body)
			}
		}
		if rec.Code == 405 && rec.Header().Get("Allow") == "" {
			t.Fatal("405 without Allow")
		}
		st, err := ms.Locks(ctx, "HELD")
		if err != nil {
			t.Fatal(err)
		}
		if s := st[0]; s.Holder != "holder" || s.Token != held[0].Token || s.HolderInfo != `{"host":"h"}` || !s.Held() {
			t.Fatalf("after %s %s %q: lease %+v", method, target, body, s)
		}
	})
}

// validMethod reports whether net/http would accept method (an RFC 9110
// token).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}
