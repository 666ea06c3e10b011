package controlapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

var (
	holderA = store.Holder{ID: "host-a-101-aaaa", Info: `{"host":"host-a","pid":101,"address":"10.0.0.1:8080","version":"1.2.3"}`}
	holderB = store.Holder{ID: "host-b-202-bbbb", Info: `not json`}
)

func acquire(t *testing.T, st store.Store, h store.Holder, lock string, ttl time.Duration) store.LockState {
	t.Helper()
	got, err := st.Acquire(context.Background(), h, []string{lock}, ttl)
	if err != nil || len(got) != 1 || !got[0].Acquired {
		t.Fatalf("Acquire(%s, %q): %+v, %v", h.ID, lock, got, err)
	}
	return got[0]
}

func lockState(t *testing.T, st store.Store, lock string) store.LockState {
	t.Helper()
	got, err := st.Locks(context.Background(), lock)
	if err != nil || len(got) != 1 {
		t.Fatalf("Locks(%q): %+v, %v", lock, got, err)
	}
	return got[0]
}

func historyOf(t *testing.T, st store.Store) []store.Event {
	t.Helper()
	got, err := st.(store.History).Events(context.Background(), store.EventFilter{Limit: store.MaxEventsLimit})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestDisableEnable: the seed's semantics. Disabling is recorded with its
// reason and caller; disabling again says so and is no error (the first
// reason stays); a lock may be disabled before anybody used it; enabling
// twice likewise. Only changes go into the history.
func TestDisableEnable(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store.Store) {
		h := newHandler(t, st)
		res := disable(t, h, "JOB-SCHEDULER", "testing")
		if !res.Changed || !res.Lock.Disabled || res.Lock.Reason != "testing" || res.Lock.ChangedBy != "http" ||
			res.Lock.ChangedAt.IsZero() || res.Lock.LockName != "JOB-SCHEDULER" || res.Lock.Master != "" {
			t.Errorf("first disable: %+v", res)
		}
		// The seed's sentences begin the messages.
		if !strings.HasPrefix(res.Message, "Flagged JOB-SCHEDULER as disabled") {
			t.Errorf("message %q", res.Message)
		}
		again := disable(t, h, "JOB-SCHEDULER", "another reason")
		if again.Changed || !again.Lock.Disabled || again.Lock.Reason != "testing" ||
			!strings.HasPrefix(again.Message, "JOB-SCHEDULER is already flagged as disabled") {
			t.Errorf("second disable: %+v, want unchanged, first reason kept, said so", again)
		}
		en := enable(t, h, "JOB-SCHEDULER")
		if !en.Changed || en.Lock.Disabled || en.Lock.Reason != "" || en.Lock.ChangedBy != "http" ||
			!strings.HasPrefix(en.Message, "JOB-SCHEDULER is flagged for (re)enablement") {
			t.Errorf("enable: %+v", en)
		}
		if en2 := enable(t, h, "JOB-SCHEDULER"); en2.Changed || !strings.HasPrefix(en2.Message, "JOB-SCHEDULER is flagged for (re)enablement") ||
			!strings.Contains(en2.Message, "was not disabled") {
			t.Errorf("second enable: %+v", en2)
		}
		if en3 := enable(t, h, "NEVER-SEEN"); en3.Changed || en3.Lock.Disabled {
			t.Errorf("enable of an unknown lock: %+v", en3)
		}
		// The state is the store's.
		if s := lockState(t, st, "JOB-SCHEDULER"); s.Disabled {
			t.Errorf("store: %+v after enable", s)
		}
		ev := historyOf(t, st)
		if len(ev) != 2 {
			t.Fatalf("history %+v, want one disabled and one enabled entry", ev)
		}
		if e := ev[1]; e.Kind != store.EventDisabled || e.Lock != "JOB-SCHEDULER" || e.Reason != "testing" ||
			e.Instance != "http" || e.Remote != remote || e.Token != 0 {
			t.Errorf("disable entry %+v", e)
		}
		if e := ev[0]; e.Kind != store.EventEnabled || e.Instance != "http" || e.Remote != remote {
			t.Errorf("enable entry %+v", e)
		}
	})
}

// TestList: every lock with its master, the master's description, token,
// times, time to expiry and control.
func TestList(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store.Store) {
		h := newHandler(t, st)
		a := acquire(t, st, holderA, "B-HELD", time.Minute)
		b := acquire(t, st, holderB, "C-ODD-INFO", time.Minute)
		disable(t, h, "A-DISABLED", "maintenance")
		acquire(t, st, holderA, "D-EXPIRED", time.Millisecond)
		time.Sleep(5 * time.Millisecond)

		list := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols", ""), http.StatusOK)
		var names []string
		for _, l := range list.Locks {
			names = append(names, l.LockName)
		}
		if !slices.Equal(names, []string{"A-DISABLED", "B-HELD", "C-ODD-INFO", "D-EXPIRED"}) {
			t.Fatalf("locks %q", names)
		}
		dis, held, odd, exp := list.Locks[0], list.Locks[1], list.Locks[2], list.Locks[3]
		if !dis.Disabled || dis.Reason != "maintenance" || dis.ChangedBy != "http" || dis.ChangedAt.IsZero() || dis.Master != "" {
			t.Errorf("disabled lock: %+v", dis)
		}
		want := controlapi.Holder{Host: "host-a", PID: 101, Address: "10.0.0.1:8080", Version: "1.2.3"}
		if held.Master != holderA.ID || held.Holder == nil || *held.Holder != want || held.HolderInfo != "" || held.Token != a.Token {
			t.Errorf("held lock: %+v (holder %+v)", held, held.Holder)
		}
		if held.ExpiresInMs <= 50000 || held.ExpiresInMs > 60000 || held.Since.IsZero() || held.LastRenewal.IsZero() ||
			held.ExpiresAt.Sub(held.Since) < 59*time.Second || held.Disabled || held.Revoked {
			t.Errorf("held lock times: %+v", held)
		}
		if odd.Master != holderB.ID || odd.Holder != nil || odd.HolderInfo != "not json" || odd.Token != b.Token {
			t.Errorf("lock whose holder info is not JSON: %+v", odd)
		}
		if exp.Master != "" || exp.ExpiresInMs != 0 || exp.Holder != nil || !exp.Since.IsZero() || exp.Token == 0 {
			t.Errorf("expired lease: %+v, want no master and the last token", exp)
		}

		// The raw JSON uses the documented names; zero times are left out.
		raw := do(t, h, "GET", "/api/mastercontrols/", "").Body.String()
		for _, key := range []string{`"lockName":"B-HELD"`, `"master":"host-a-101-aaaa"`, `"holder":{"host":"host-a","pid":101`,
			`"token":`, `"since":`, `"lastRenewal":`, `"expiresInMs":`, `"disabled":true`, `"reason":"maintenance"`, `"changedBy":"http"`, `"changedAt":`} {
			if !strings.Contains(raw, key) {
				t.Errorf("list JSON lacks %s: %s", key, raw)
			}
		}

		// Named locks, including one whose name is an endpoint's.
		some := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols?lockName=disable&lockName=B-HELD", ""), http.StatusOK)
		if len(some.Locks) != 2 || some.Locks[0].LockName != "B-HELD" || some.Locks[1].LockName != "disable" {
			t.Errorf("list of named locks: %+v", some.Locks)
		}
	})
}

// TestGetLock: one lock by name; the name is validated and may hold any
// character, percent-encoded.
func TestGetLock(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store.Store) {
		h := newHandler(t, st)
		a := acquire(t, st, holderA, "JOB", time.Minute)
		got := decode[controlapi.Lock](t, do(t, h, "GET", "/api/mastercontrols/locks/JOB", ""), http.StatusOK)
		if got.LockName != "JOB" || got.Master != holderA.ID || got.Token != a.Token || got.ExpiresInMs <= 0 || got.Unknown {
			t.Errorf("GET JOB: %+v", got)
		}
		odd := "a/b c?d#e%f ü"
		acquire(t, st, holderB, odd, time.Minute)
		got = decode[controlapi.Lock](t, do(t, h, "GET", "/api/mastercontrols/locks/"+url.PathEscape(odd), ""), http.StatusOK)
		if got.LockName != odd || got.Master != holderB.ID {
			t.Errorf("GET %q: %+v", odd, got)
		}
		if rec := do(t, h, "HEAD", "/api/mastercontrols/locks/JOB", ""); rec.Code != http.StatusOK {
			t.Errorf("HEAD: %d", rec.Code)
		}
		wantError(t, do(t, h, "GET", "/api/mastercontrols/locks/"+strings.Repeat("x", store.MaxLockNameLen+1), ""), 400, "lockName")
		wantError(t, do(t, h, "GET", "/api/mastercontrols/locks/bad%01name", ""), 400, "lockName")
		wantError(t, do(t, h, "GET", "/api/mastercontrols/locks/", ""), 400, "lockName")
		wantError(t, do(t, h, "GET", "/api/mastercontrols/history/", ""), 400, "lockName")
		wantError(t, do(t, h, "GET", "/api/mastercontrols/locks/JOB?x=1", ""), 400, "x")
		// The stores did not learn any of these names.
		all := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols", ""), http.StatusOK)
		if len(all.Locks) != 2 {
			t.Errorf("after reads, the store knows %d locks, want 2: %+v", len(all.Locks), all.Locks)
		}
	})
}

// TestHistoryEndpoints: the history newest first, by lock (query or path),
// paged with limit and before; bad parameters name themselves.
func TestHistoryEndpoints(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store.Store) {
		h := newHandler(t, st)
		hs := st.(store.History)
		var batch []store.Event
		for i := range 30 {
			batch = append(batch, store.Event{Lock: []string{"A", "B"}[i%2], Kind: store.EventAcquired, Instance: "i", Token: int64(i + 1)})
		}
		if err := hs.AppendEvents(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		disable(t, h, "A", "why")

		page := decode[controlapi.EventPage](t, do(t, h, "GET", "/api/mastercontrols/history", ""), http.StatusOK)
		if len(page.Events) != 31 || page.Events[0].Kind != "disabled" || page.Events[0].Reason != "why" ||
			page.Events[0].Remote != remote || page.Events[1].Token != 30 || page.NextBefore != 0 {
			t.Fatalf("history: %d events, first %+v, nextBefore %d", len(page.Events), page.Events[0], page.NextBefore)
		}
		for _, target := range []string{"/api/mastercontrols/history?lockName=B&limit=4", "/api/mastercontrols/history/B?limit=4"} {
			var tokens []int64
			next := target
			for range 10 {
				p := decode[controlapi.EventPage](t, do(t, h, "GET", next, ""), http.StatusOK)
				for _, e := range p.Events {
					if e.LockName != "B" {
						t.Fatalf("%s: entry of lock %q", next, e.LockName)
					}
					tokens = append(tokens, e.Token)
				}
				if p.NextBefore == 0 {
					break
				}
				next = fmt.Sprintf("%s&before=%d", target, p.NextBefore)
			}
			want := []int64{30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2}
			if !slices.Equal(tokens, want) {
				t.Errorf("%s paged: %v, want %v", target, tokens, want)
			}
		}
		for _, tc := range []struct{ target, field string }{
			{"/api/mastercontrols/history?limit=0", "limit"},
			{"/api/mastercontrols/history?limit=1001", "limit"},
			{"/api/mastercontrols/history?limit=ten", "limit"},
			{"/api/mastercontrols/history?limit=1&limit=2", "limit"},
			{"/api/mastercontrols/history?before=-1", "before"},
			{"/api/mastercontrols/history?before=x", "before"},
			{"/api/mastercontrols/history?lockName=", "lockName"},
			{"/api/mastercontrols/history?lockName=%00", "lockName"},
			{"/api/mastercontrols/history?since=yesterday", "since"},
			{"/api/mastercontrols/history/A?lockName=B", "lockName"},
			{"/api/mastercontrols/history?a=%zz", ""},
		} {
			wantError(t, do(t, h, "GET", tc.target, ""), http.StatusBadRequest, tc.field)
		}
	})
}

// noHistory is a store without store.History.
type noHistory struct{ store.Store }

func TestHistoryUnsupported(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, noHistory{ms})
	wantError(t, do(t, h, "GET", "/api/mastercontrols/history", ""), http.StatusNotImplemented, "")
	wantError(t, do(t, h, "GET", "/api/mastercontrols/history/JOB", ""), http.StatusNotImplemented, "")
	// Control still works, unrecorded.
	if res := disable(t, h, "JOB", "r"); !res.Changed || res.Warning != "" {
		t.Errorf("disable without history: %+v", res)
	}
	// WithHistory supplies one.
	h = newHandler(t, noHistory{ms}, controlapi.WithHistory(ms))
	enable(t, h, "JOB")
	if ev := historyOf(t, ms); len(ev) != 1 || ev[0].Kind != store.EventEnabled {
		t.Errorf("history through WithHistory: %+v", ev)
	}
}

// TestAuth: with a token the mutating endpoints need it, reads do not
// unless asked; named tokens name the caller in the records.
func TestAuth(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms, controlapi.WithToken("s3cret-token"), controlapi.WithNamedToken("alice", "alice-token"))
	body := `{"lockName":"JOB","reason":"r"}`
	for _, tc := range []struct {
		name, auth, challenge string
	}{
		{"missing", "", `Bearer realm="masterjob"`},
		{"other scheme", "Basic czNjcmV0LXRva2Vu", `Bearer realm="masterjob"`},
		{"empty bearer", "Bearer ", `Bearer realm="masterjob"`},
		{"wrong", "Bearer s3cret-tokem", `Bearer realm="masterjob", error="invalid_token"`},
		{"prefix", "Bearer s3cret", `Bearer realm="masterjob", error="invalid_token"`},
		{"longer", "Bearer s3cret-token2", `Bearer realm="masterjob", error="invalid_token"`},
	} {
		for _, path := range []string{"/api/mastercontrols/disable", "/api/mastercontrols/enable"} {
			rec := do(t, h, "POST", path, body, "Authorization", tc.auth)
			wantError(t, rec, http.StatusUnauthorized, "")
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, got, tc.challenge)
			}
		}
	}
	// Two Authorization headers are refused.
	req, _ := http.NewRequest("POST", "/api/mastercontrols/disable", strings.NewReader(body))
	req.Host = "localhost"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Authorization", "Bearer s3cret-token")
	req.Header.Add("Authorization", "Bearer alice-token")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	wantError(t, rec, http.StatusUnauthorized, "")
	if s := lockState(t, ms, "JOB"); s.Disabled {
		t.Fatal("a refused request disabled the lock")
	}

	// Reads are open.
	decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols", ""), http.StatusOK)
	// The right token works, scheme in any case.
	res := disable(t, h, "JOB", "r", "Authorization", "bearer s3cret-token")
	if !res.Changed || res.Lock.ChangedBy != "http" {
		t.Errorf("disable with the token: %+v", res)
	}
	res = enable(t, h, "JOB", "Authorization", "Bearer alice-token")
	if !res.Changed || res.Lock.ChangedBy != "alice" {
		t.Errorf("enable with alice's token: %+v", res)
	}
	if ev := historyOf(t, ms); len(ev) != 2 || ev[0].Instance != "alice" || ev[1].Instance != "http" {
		t.Errorf("history callers: %+v", ev)
	}

	// WithTokenForReads closes the reads too.
	h = newHandler(t, ms, controlapi.WithToken("s3cret-token"), controlapi.WithTokenForReads())
	for _, path := range []string{"/api/mastercontrols", "/api/mastercontrols/locks/JOB", "/api/mastercontrols/history", "/api/mastercontrols/history/JOB"} {
		wantError(t, do(t, h, "GET", path, ""), http.StatusUnauthorized, "")
		if rec := do(t, h, "GET", path, "", "Authorization", "Bearer s3cret-token"); rec.Code != http.StatusOK {
			t.Errorf("GET %s with the token: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// TestBadInput: every malformed request gets a JSON error with the right
// status, naming the field at fault, and changes nothing.
func TestBadInput(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms)
	held := acquire(t, ms, holderA, "JOB", time.Minute)
	long := strings.Repeat("x", store.MaxLockNameLen+1)
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		field                    string
	}{
		{"malformed JSON", "POST", "/disable", `{"lockName": "JOB"`, nil, 400, ""},
		{"not JSON", "POST", "/disable", `lockName=JOB`, nil, 400, ""},
		{"empty body", "POST", "/disable", ``, []string{"Content-Type", "application/json"}, 400, "lockName"},
		{"whitespace body", "POST", "/enable", "  \n", nil, 400, "lockName"},
		{"array", "POST", "/disable", `[{"lockName":"JOB"}]`, nil, 400, ""},
		{"string", "POST", "/disable", `"JOB"`, nil, 400, ""},
		{"null", "POST", "/disable", `null`, nil, 400, ""},
		{"unknown field", "POST", "/disable", `{"lockName":"JOB","force":true}`, nil, 400, "force"},
		{"wrong case", "POST", "/disable", `{"LockName":"JOB"}`, nil, 400, "LockName"},
		{"duplicate field", "POST", "/disable", `{"lockName":"OTHER","lockName":"JOB"}`, nil, 400, "lockName"},
		{"lockName number", "POST", "/disable", `{"lockName":42}`, nil, 400, "lockName"},
		{"lockName bool", "POST", "/enable", `{"lockName":true}`, nil, 400, "lockName"},
		{"lockName null", "POST", "/disable", `{"lockName":null}`, nil, 400, "lockName"},
		{"lockName object", "POST", "/disable", `{"lockName":{"name":"JOB"}}`, nil, 400, "lockName"},
		{"lockName array", "POST", "/disable", `{"lockName":["JOB"]}`, nil, 400, "lockName"},
		{"reason number", "POST", "/disable", `{"lockName":"JOB","reason":1}`, nil, 400, "reason"},
		{"trailing object", "POST", "/disable", `{"lockName":"JOB"} {"lockName":"X"}`, nil, 400, ""},
		{"trailing garbage", "POST", "/disable", `{"lockName":"JOB"}x`, nil, 400, ""},
		{"trailing comma", "POST", "/disable", `{"lockName":"JOB",}`, nil, 400, ""},
		{"missing lockName", "POST", "/disable", `{"reason":"r"}`, nil, 400, "lockName"},
		{"missing reason", "POST", "/disable", `{"lockName":"JOB"}`, nil, 400, "reason"},
		{"empty reason", "POST", "/disable", `{"lockName":"JOB","reason":""}`, nil, 400, "reason"},
		{"blank reason", "POST", "/disable", `{"lockName":"JOB","reason":" \t\n"}`, nil, 400, "reason"},
		{"empty object", "POST", "/enable", `{}`, nil, 400, "lockName"},
		{"empty lockName", "POST", "/disable", `{"lockName":""}`, nil, 400, "lockName"},
		{"long lockName", "POST", "/disable", `{"lockName":"` + long + `"}`, nil, 400, "lockName"},
		{"control char lockName", "POST", "/disable", `{"lockName":"JO\u0000B"}`, nil, 400, "lockName"},
		{"newline lockName", "POST", "/disable", `{"lockName":"JOB\n"}`, nil, 400, "lockName"},
		{"bidi override lockName", "POST", "/disable", `{"lockName":"gnp-\u202Egnillib","reason":"r"}`, nil, 400, "lockName"},
		{"zero-width lockName", "POST", "/enable", "{\"lockName\":\"JOB\u200B\"}", nil, 400, "lockName"},
		{"bidi override in path", "GET", "/locks/gnp-%E2%80%AEgnillib", ``, nil, 400, "lockName"},
		{"bidi override in query", "GET", "?lockName=%E2%80%AEx", ``, nil, 400, "lockName"},
		{"long reason", "POST", "/disable", `{"lockName":"JOB","reason":"` + strings.Repeat("r", controlapi.MaxReasonLen+1) + `"}`, nil, 400, "reason"},
		{"NUL in reason", "POST", "/disable", `{"lockName":"JOB","reason":"a\u0000b"}`, nil, 400, "reason"},
		{"invalid UTF-8", "POST", "/disable", "{\"lockName\":\"J\xffOB\"}", nil, 400, ""},
		{"query on POST", "POST", "/disable?lockName=JOB", `{"lockName":"JOB"}`, nil, 400, "lockName"},
		{"too large", "POST", "/disable", `{"lockName":"JOB","reason":"` + strings.Repeat(" ", controlapi.DefaultMaxBodyBytes) + `"}`, nil, 413, ""},
		{"form content type", "POST", "/disable", `{"lockName":"JOB"}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, ""},
		{"text content type", "POST", "/disable", `{"lockName":"JOB"}`, []string{"Content-Type", "text/plain"}, 415, ""},
		{"no content type", "POST", "/disable", `{"lockName":"JOB"}`, []string{"Content-Type", ""}, 415, ""},
		{"bad charset", "POST", "/disable", `{"lockName":"JOB"}`, []string{"Content-Type", "application/json; charset=latin1"}, 415, ""},
		{"malformed content type", "POST", "/disable", `{"lockName":"JOB"}`, []string{"Content-Type", "application/json; ==="}, 415, ""},
		{"GET disable", "GET", "/disable", ``, nil, 405, ""},
		{"PUT enable", "PUT", "/enable", `{"lockName":"JOB"}`, nil, 405, ""},
		{"POST list", "POST", "", `{"lockName":"JOB"}`, nil, 405, ""},
		{"DELETE lock", "DELETE", "/locks/JOB", ``, nil, 405, ""},
		{"POST lock history", "POST", "/history/JOB", ``, nil, 405, ""},
		{"POST history", "POST", "/history", ``, nil, 405, ""},
		{"unknown path", "GET", "/JOB", ``, nil, 404, ""},
		{"unknown path below", "GET", "/JOB/history", ``, nil, 404, ""},
		{"locks without a name", "GET", "/locks", ``, nil, 404, ""},
		{"dot segment", "GET", "/locks/../disable", ``, nil, 404, ""},
		{"empty segment", "POST", "//disable", `{"lockName":"JOB","reason":"r"}`, nil, 404, ""},
		{"deep path", "GET", "/a/b/c", ``, nil, 404, ""},
		{"prefix lookalike", "GET", "x", ``, nil, 404, ""},
		{"list unknown param", "GET", "?sort=name", ``, nil, 400, "sort"},
		{"list zero limit", "GET", "?limit=0", ``, nil, 400, "limit"},
		{"list huge limit", "GET", "?limit=10001", ``, nil, 400, "limit"},
		{"list bad state", "GET", "?state=held", ``, nil, 400, "state"},
		{"list bad after", "GET", "?after=", ``, nil, 400, "after"},
		{"list bad instance", "GET", "?instance=%E2%80%AE", ``, nil, 400, "instance"},
		{"list bad name", "GET", "?lockName=" + long, ``, nil, 400, "lockName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(t, h, tc.method, "/api/mastercontrols"+tc.path, tc.body, tc.hdr...)
			wantError(t, rec, tc.status, tc.field)
			switch tc.status {
			case 405:
				if rec.Header().Get("Allow") == "" {
					t.Error("405 without an Allow header")
				}
			case 415:
				if rec.Header().Get("Accept-Post") != "application/json" {
					t.Error("415 without Accept-Post")
				}
			}
		})
	}
	if got := do(t, h, "GET", "/api/mastercontrols/disable", "").Header().Get("Allow"); got != "POST" {
		t.Errorf("Allow on /disable = %q, want POST", got)
	}
	if got := do(t, h, "POST", "/api/mastercontrols/locks/JOB", "{}").Header().Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow on a lock = %q, want GET, HEAD", got)
	}
	if got := do(t, h, "GET", "/other", "").Code; got != 404 {
		t.Errorf("path outside the API: %d, want 404", got)
	}
	// Nothing changed.
	if s := lockState(t, ms, "JOB"); s.Disabled || s.Holder != holderA.ID || s.Token != held.Token || s.Revoked {
		t.Errorf("after bad requests: %+v", s)
	}
	if all, _ := ms.Locks(context.Background()); len(all) != 1 {
		t.Errorf("bad requests created locks: %+v", all)
	}
	if ev := historyOf(t, ms); len(ev) != 0 {
		t.Errorf("bad requests were recorded: %+v", ev)
	}
}

// TestMaxBodyBytes: the cap is configurable and counts the whole body.
func TestMaxBodyBytes(t *testing.T) {
	h := newHandler(t, memstore.New(), controlapi.WithMaxBodyBytes(1024))
	pad := strings.Repeat(" ", 1024)
	wantError(t, do(t, h, "POST", "/api/mastercontrols/disable", `{"lockName":"JOB"}`+pad), http.StatusRequestEntityTooLarge, "")
	disable(t, h, "JOB", strings.Repeat("r", 900))
}

// failing is a store whose every call fails with err.
type failing struct {
	store.Store
	err error
}

func (f failing) Locks(context.Context, ...string) ([]store.LockState, error) { return nil, f.err }
func (f failing) Disable(context.Context, string, string, string) (store.ControlChange, error) {
	return store.ControlChange{}, f.err
}

// TestStoreFailures: an unavailable store gets 503 with Retry-After; other
// failures 500; neither passes the backend's words on.
func TestStoreFailures(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms)
	ms.SetFailure(errors.New("dial tcp 10.1.2.3:5432: connection refused (password=hunter2)"))
	for _, rec := range []interface {
		Result() *http.Response
	}{
		do(t, h, "GET", "/api/mastercontrols", ""),
		do(t, h, "GET", "/api/mastercontrols/locks/JOB", ""),
		do(t, h, "GET", "/api/mastercontrols/history", ""),
		do(t, h, "POST", "/api/mastercontrols/disable", `{"lockName":"JOB","reason":"r"}`),
		do(t, h, "POST", "/api/mastercontrols/enable", `{"lockName":"JOB"}`),
	} {
		resp := rec.Result()
		var e controlapi.Error
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 503 {
			t.Errorf("store down: %d %+v %v, want 503 JSON", resp.StatusCode, e, err)
		}
		if strings.Contains(e.Error, "10.1.2.3") || strings.Contains(e.Error, "hunter2") || e.Error == "" {
			t.Errorf("error %q leaks the store's error", e.Error)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
	ms.SetFailure(nil)

	sqlErr := errors.New(`sqlite: locks: SQL logic error: no such table: "masterjob_locks" (1)`)
	h = newHandler(t, failing{ms, sqlErr})
	for _, rec := range []interface {
		Result() *http.Response
	}{
		do(t, h, "GET", "/api/mastercontrols", ""),
		do(t, h, "POST", "/api/mastercontrols/disable", `{"lockName":"JOB","reason":"r"}`),
	} {
		resp := rec.Result()
		var e controlapi.Error
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 500 || e.Error != "internal error" {
			t.Errorf("store error: %d %+v %v, want 500 internal error", resp.StatusCode, e, err)
		}
	}
	h = newHandler(t, failing{ms, fmt.Errorf("postgres: %w", store.ErrClosed)})
	wantError(t, do(t, h, "GET", "/api/mastercontrols", ""), 503, "")
}

// slowHistory fails every append, after the control change succeeded.
type slowHistory struct{ store.History }

func (slowHistory) AppendEvents(context.Context, []store.Event) error {
	return fmt.Errorf("x: %w", store.ErrUnavailable)
}

// TestHistoryFailureWarns: a change that could not be recorded is still
// made and reported, with a warning.
func TestHistoryFailureWarns(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms, controlapi.WithHistory(slowHistory{ms}))
	res := disable(t, h, "JOB", "r")
	if !res.Changed || res.Warning == "" {
		t.Errorf("disable with a failing history: %+v, want changed with a warning", res)
	}
}

// TestCannotCorruptLease: disabling a held lock over HTTP revokes the lease
// but leaves its holder and token: the master can still renew (to keep it
// while its job stops) and release it, nobody else can take it meanwhile,
// and the next lease gets a greater token.
func TestCannotCorruptLease(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store.Store) {
		h := newHandler(t, st)
		ctx := context.Background()
		a := acquire(t, st, holderA, "JOB", time.Minute)
		res := disable(t, h, "JOB", "stop it")
		if res.Lock.Master != holderA.ID || res.Lock.Token != a.Token || !res.Lock.Revoked || !res.Lock.Disabled {
			t.Fatalf("disable of a held lock: %+v", res.Lock)
		}
		if ev := historyOf(t, st); len(ev) != 1 || ev[0].Token != a.Token {
			t.Errorf("history %+v, want the revoked lease's token", ev)
		}
		s := lockState(t, st, "JOB")
		if s.Holder != holderA.ID || s.Token != a.Token || s.HolderInfo != holderA.Info || !s.Revoked {
			t.Fatalf("store after disable: %+v", s)
		}
		rr, err := st.Renew(ctx, holderA.ID, []store.LeaseRef{{Lock: "JOB", Token: a.Token}}, time.Minute)
		if err != nil || !rr[0].Renewed || !rr[0].Revoked {
			t.Fatalf("renewal of the revoked lease: %+v %v", rr, err)
		}
		enable(t, h, "JOB")
		if got, _ := st.Acquire(ctx, holderB, []string{"JOB"}, time.Minute); got[0].Acquired {
			t.Fatal("another holder took a revoked lease before it was released")
		}
		// Hostile requests about the lock change nothing.
		for _, body := range []string{
			`{"lockName":"JOB","reason":"'; UPDATE masterjob_locks SET token = 0; --"}`,
			`{"lockName":"JOB' OR '1'='1"}`,
		} {
			do(t, h, "POST", "/api/mastercontrols/disable", body)
			do(t, h, "POST", "/api/mastercontrols/enable", body)
		}
		s = lockState(t, st, "JOB")
		if s.Holder != holderA.ID || s.Token != a.Token {
			t.Fatalf("after hostile requests: %+v", s)
		}
		if err := st.Release(ctx, holderA.ID, []store.LeaseRef{{Lock: "JOB", Token: a.Token}}); err != nil {
			t.Fatal(err)
		}
		b := acquire(t, st, holderB, "JOB", time.Minute)
		if b.Token <= a.Token {
			t.Errorf("next token %d, not above %d", b.Token, a.Token)
		}
	})
}

// TestCrossOrigin: a browser's cross-origin control request is refused; a
// same-origin one and a trusted origin's pass.
func TestCrossOrigin(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms, controlapi.WithTrustedOrigin("https://ops.example.com"))
	body := `{"lockName":"JOB","reason":"r"}`
	wantError(t, do(t, h, "POST", "/api/mastercontrols/disable", body,
		"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"), http.StatusForbidden, "")
	if s := lockState(t, ms, "JOB"); s.Disabled {
		t.Fatal("a cross-origin request disabled the lock")
	}
	disable(t, h, "JOB", "r", "Origin", "http://localhost:8080", "Sec-Fetch-Site", "same-origin")
	enable(t, h, "JOB", "Origin", "https://ops.example.com", "Sec-Fetch-Site", "cross-site")
}

// TestMounting: mounted as documented, in a mux or under another prefix.
func TestMounting(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms)
	mux := http.NewServeMux()
	mux.Handle("/api/mastercontrols", h)
	mux.Handle("/api/mastercontrols/", h)
	mux.Handle("/ops/api/mastercontrols/", http.StripPrefix("/ops", h))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "app", http.StatusTeapot) })

	disable(t, mux, "a/b", "r")
	for _, path := range []string{"/api/mastercontrols", "/api/mastercontrols/", "/ops/api/mastercontrols/"} {
		l := decode[controlapi.LockList](t, do(t, mux, "GET", path, ""), http.StatusOK)
		if len(l.Locks) != 1 || l.Locks[0].LockName != "a/b" {
			t.Errorf("GET %s: %+v", path, l)
		}
	}
	if l := decode[controlapi.Lock](t, do(t, mux, "GET", "/ops/api/mastercontrols/locks/a%2Fb", ""), http.StatusOK); !l.Disabled {
		t.Errorf("GET under /ops: %+v", l)
	}
	if rec := do(t, mux, "GET", "/elsewhere", ""); rec.Code != http.StatusTeapot {
		t.Errorf("the application's own routes: %d", rec.Code)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	ms := memstore.New()
	if _, err := controlapi.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	for name, opts := range map[string][]controlapi.Option{
		"empty token":            {controlapi.WithToken("")},
		"token with space":       {controlapi.WithToken("a b")},
		"token with newline":     {controlapi.WithToken("ab\n")},
		"non-ASCII token":        {controlapi.WithToken("tökén")},
		"empty caller":           {controlapi.WithNamedToken("", "t")},
		"reads without token":    {controlapi.WithTokenForReads()},
		"tiny body cap":          {controlapi.WithMaxBodyBytes(10)},
		"zero timeout":           {controlapi.WithCallTimeout(0)},
		"malformed origin":       {controlapi.WithTrustedOrigin("not an origin")},
		"caller with control ch": {controlapi.WithNamedToken("a\x00", "t")},
	} {
		if _, err := controlapi.New(ms, opts...); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestCheckListenAddr(t *testing.T) {
	for _, tc := range []struct {
		addr            string
		token, insecure bool
		ok              bool
	}{
		{"127.0.0.1:8080", false, false, true},
		{"127.1.2.3:8080", false, false, true},
		{"[::1]:8080", false, false, true},
		{"localhost:8080", false, false, true},
		{"LOCALHOST.:8080", false, false, true},
		{"[::ffff:127.0.0.1]:80", false, false, true},
		{":8080", false, false, false},
		{"0.0.0.0:8080", false, false, false},
		{"[::]:8080", false, false, false},
		{"10.0.0.5:8080", false, false, false},
		{"[fe80::1%eth0]:8080", false, false, false},
		{"example.com:8080", false, false, false},
		{"localhost.example.com:80", false, false, false},
		{":8080", true, false, true},
		{"0.0.0.0:8080", false, true, true},
		{"10.0.0.5:8080", true, true, true},
		{"no-port", true, false, false},
		{"", true, true, false},
	} {
		err := controlapi.CheckListenAddr(tc.addr, tc.token, tc.insecure)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListenAddr(%q, token=%v, insecure=%v) = %v, want ok=%v", tc.addr, tc.token, tc.insecure, err, tc.ok)
		}
		if err != nil && tc.addr != "" && tc.addr != "no-port" && !errors.Is(err, controlapi.ErrInsecureListener) {
			t.Errorf("CheckListenAddr(%q): %v does not wrap ErrInsecureListener", tc.addr, err)
		}
	}
}
