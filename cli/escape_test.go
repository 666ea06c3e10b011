package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
)

// hostile is text a store writer or a server could send to reach the
// operator's terminal: an escape sequence that clears the screen, a
// carriage return that overwrites the line, a bidi override.
const hostile = "ok\x1b[2J\x1b]0;pwned\x07\r\u202egnp.exe"

// noRawControl fails the test when out holds a control or format
// character other than a newline.
func noRawControl(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if r == '\n' {
			continue
		}
		if r < 0x20 || r == 0x7f || r == '\u202e' || (r >= 0x80 && r < 0xa0) {
			t.Errorf("%s holds the raw character %U:\n%q", what, r, out)
			return
		}
	}
}

// disable and enable print what the server (or the store) says of the
// lock, and the client prints the server's JSON error: neither may pass
// terminal escapes through.
func TestControlOutputEscapes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var req controlapi.ControlRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		lock := controlapi.Lock{
			LockName: req.LockName, Master: "inst-" + hostile, Token: 3, ExpiresInMs: 5000,
			ExpiresAt: time.Now().Add(5 * time.Second), Since: time.Now(), LastRenewal: time.Now(),
			Disabled: true, Reason: "reason " + hostile, ChangedBy: "by " + hostile, ChangedAt: time.Now(),
		}
		switch req.LockName {
		case "CHANGED":
			_ = json.NewEncoder(w).Encode(controlapi.ControlResult{Changed: true, Lock: lock, Warning: "warn " + hostile})
		case "SAME":
			_ = json.NewEncoder(w).Encode(controlapi.ControlResult{Changed: false, Lock: lock})
		default:
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "error " + hostile, Field: "field " + hostile})
		}
	}))
	defer srv.Close()

	for _, lock := range []string{"CHANGED", "SAME", "ERROR"} {
		r := mainEnv(nil, "disable", "--server", srv.URL, "--lock", lock, "--reason", "r")
		noRawControl(t, "disable "+lock+" stdout", r.stdout)
		noRawControl(t, "disable "+lock+" stderr", r.stderr)
		if out := r.stdout + r.stderr; !strings.Contains(out, `\x1b[2J`) {
			t.Errorf("disable %s: the escape is not shown escaped: %q", lock, out)
		}
	}
}
