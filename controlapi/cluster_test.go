package controlapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/store/sqlite"
)

// fakeClock is a store clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// announce writes a member record for id, as an instance on its own
// handle would with its next renewal.
func announce(t testing.TB, ms *memstore.Store, m store.Member, ttl time.Duration) *memstore.Store {
	t.Helper()
	h := ms.Reopen()
	if m.LockSetID == "" {
		m.LockSetID = "set-" + m.ID
	}
	h.Announce(m, ttl)
	if _, err := h.Renew(context.Background(), m.ID, nil, ttl); err != nil {
		t.Fatal(err)
	}
	return h
}

func infoJSON(host string, pid int, addr string) string {
	b, _ := json.Marshal(map[string]any{"host": host, "pid": pid, "address": addr, "version": "v1.2.3",
		"started": "2025-01-02T03:00:00Z"})
	return string(b)
}

// TestInstances: members appear in GET /api/instances with what they
// announced, are selected by lock, and disappear when they expire or
// leave. A store without a member list answers 501.
func TestInstances(t *testing.T) {
	clk := newFakeClock()
	ms := memstore.New(memstore.WithClock(clk.now))
	h := newHandler(t, ms)
	list := func(query string) []controlapi.Instance {
		t.Helper()
		return decode[controlapi.InstanceList](t, do(t, h, "GET", "/api/instances"+query, ""), http.StatusOK).Instances
	}
	if got := list(""); len(got) != 0 {
		t.Fatalf("no member yet: %+v", got)
	}
	a := announce(t, ms, store.Member{ID: "web-1-a", Info: infoJSON("web-1", 41, "web-1:8080"), Locks: []string{"A", "B"}, Masters: 1, Weight: 2}, 10*time.Second)
	announce(t, ms, store.Member{ID: "web-2-b", Info: "free text", Locks: []string{"A"}}, 5*time.Second)
	got := list("")
	if len(got) != 2 {
		t.Fatalf("two members: %+v", got)
	}
	want := controlapi.Instance{ID: "web-1-a", Host: "web-1", PID: 41, Version: "v1.2.3", Address: "web-1:8080",
		Started: time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC), Masters: 1, LockCount: 2, Weight: 2, LastSeen: clk.now(), TTLMs: 10000}
	if got[0] != want {
		t.Errorf("first member\n got %+v\nwant %+v", got[0], want)
	}
	if got[1].ID != "web-2-b" || got[1].Info != "free text" || got[1].Weight != 1 || got[1].LockCount != 1 || got[1].TTLMs != 5000 {
		t.Errorf("second member: %+v", got[1])
	}
	if got := list("?lockName=B"); len(got) != 1 || got[0].ID != "web-1-a" {
		t.Errorf("members taking part in B: %+v", got)
	}

	clk.advance(6 * time.Second)
	if got := list(""); len(got) != 1 || got[0].ID != "web-1-a" || got[0].TTLMs != 4000 {
		t.Errorf("after web-2-b's record expired: %+v", got)
	}
	if err := a.Leave(context.Background(), "web-1-a"); err != nil {
		t.Fatal(err)
	}
	if got := list(""); len(got) != 0 {
		t.Errorf("after web-1-a left: %+v", got)
	}

	wantError(t, do(t, h, "GET", "/api/instances?lockName=", ""), http.StatusBadRequest, "lockName")
	wantError(t, do(t, h, "GET", "/api/instances?sort=id", ""), http.StatusBadRequest, "sort")
	wantError(t, do(t, h, "POST", "/api/instances", `{}`), http.StatusMethodNotAllowed, "")
	wantError(t, do(t, h, "GET", "/api/instances", "", "Host", "evil.example:8080"), http.StatusMisdirectedRequest, "")

	sq, err := sqlite.Open(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	if _, ok := store.Store(sq).(store.Membership); !ok {
		wantError(t, do(t, newHandler(t, sq), "GET", "/api/instances", ""), http.StatusNotImplemented, "")
	} else {
		t.Log("sqlite keeps a member list on this branch: its 501 is not tested")
	}
}

// TestInstancesTokenForReads: the member list is a read: the token is
// required with WithTokenForReads, not otherwise.
func TestInstancesTokenForReads(t *testing.T) {
	ms := memstore.New()
	open := newHandler(t, ms, controlapi.WithToken("tok"))
	decode[controlapi.InstanceList](t, do(t, open, "GET", "/api/instances", ""), http.StatusOK)
	closed := newHandler(t, ms, controlapi.WithToken("tok"), controlapi.WithTokenForReads())
	wantError(t, do(t, closed, "GET", "/api/instances", ""), http.StatusUnauthorized, "")
	decode[controlapi.InstanceList](t, do(t, closed, "GET", "/api/instances", "", "Authorization", "Bearer tok"), http.StatusOK)
}

// TestStandbysAndCandidates: the list counts the standbys of each lock
// (live members taking part other than its master) and summarises; one
// lock's read lists its candidates, master first.
func TestStandbysAndCandidates(t *testing.T) {
	ms := memstore.New()
	ctx := context.Background()
	a := announce(t, ms, store.Member{ID: "a", Info: infoJSON("host-a", 1, ""), Locks: []string{"A", "B", "C"}}, time.Minute)
	announce(t, ms, store.Member{ID: "b", Locks: []string{"A", "B"}}, time.Minute)
	if _, err := a.Acquire(ctx, store.Holder{ID: "a", Info: infoJSON("host-a", 1, "")}, []string{"A", "C"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	acquire(t, ms, store.Holder{ID: "x"}, "B", time.Minute) // a master that is not a member
	if _, err := ms.Disable(ctx, "D", "off", "test"); err != nil {
		t.Fatal(err)
	}
	h := newHandler(t, ms)
	l := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols", ""), http.StatusOK)
	standbys := map[string]int{}
	for _, lk := range l.Locks {
		if lk.Standbys == nil {
			t.Fatalf("%s without standbys", lk.LockName)
		}
		if lk.Candidates != nil {
			t.Errorf("%s: candidates in a list: %v", lk.LockName, lk.Candidates)
		}
		standbys[lk.LockName] = *lk.Standbys
	}
	if want := map[string]int{"A": 1, "B": 2, "C": 0, "D": 0}; fmt.Sprint(standbys) != fmt.Sprint(want) {
		t.Errorf("standbys %v, want %v", standbys, want)
	}
	s := l.Summary
	if s.Locks != 4 || s.WithMaster != 3 || s.NoMaster != 0 || s.Disabled != 1 || s.NoStandby == nil || *s.NoStandby != 1 {
		t.Errorf("summary %+v", s)
	}
	if want := []controlapi.Masterships{{Instance: "a", Host: "host-a", Count: 2}, {Instance: "x", Count: 1}}; !slices.Equal(s.Masters, want) {
		t.Errorf("masterships %+v, want %+v", s.Masters, want)
	}
	if l := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols?state=nostandby", ""), http.StatusOK); len(l.Locks) != 1 || l.Locks[0].LockName != "C" || l.Total != 1 {
		t.Errorf("state=nostandby: %+v", l.Locks)
	}

	for lock, want := range map[string][]string{"A": {"a", "b"}, "B": {"a", "b"}, "C": {"a"}} {
		one := decode[controlapi.Lock](t, do(t, h, "GET", "/api/mastercontrols/locks/"+lock, ""), http.StatusOK)
		if !slices.Equal(one.Candidates, want) || one.Standbys == nil || *one.Standbys != standbys[lock] {
			t.Errorf("%s: candidates %v, standbys %v; want %v, %d", lock, one.Candidates, one.Standbys, want, standbys[lock])
		}
	}
	// Master first, whatever the order of the ids.
	if err := ms.Release(ctx, "a", []store.LeaseRef{{Lock: "A", Token: 1}}); err != nil {
		t.Fatal(err)
	}
	hb := announce(t, ms, store.Member{ID: "b", Locks: []string{"A", "B"}}, time.Minute)
	if _, err := hb.Acquire(ctx, store.Holder{ID: "b"}, []string{"A"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if one := decode[controlapi.Lock](t, do(t, h, "GET", "/api/mastercontrols/locks/A", ""), http.StatusOK); !slices.Equal(one.Candidates, []string{"b", "a"}) {
		t.Errorf("A held by b: candidates %v, want [b a]", one.Candidates)
	}
}

// TestListWithoutMembers: on a store without a member list, locks have no
// standby count and the summary no noStandby; filtering by nostandby
// selects nothing.
func TestListWithoutMembers(t *testing.T) {
	sq, err := sqlite.Open(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	if _, ok := store.Store(sq).(store.Membership); ok {
		t.Skip("sqlite keeps a member list on this branch")
	}
	acquire(t, sq, store.Holder{ID: "a"}, "A", time.Minute)
	h := newHandler(t, sq)
	rec := do(t, h, "GET", "/api/mastercontrols", "")
	if strings.Contains(rec.Body.String(), "standby") || strings.Contains(rec.Body.String(), "candidates") {
		t.Errorf("standbys on a store without members: %s", rec.Body)
	}
	if l := decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols?state=nostandby", ""), http.StatusOK); len(l.Locks) != 0 {
		t.Errorf("state=nostandby: %+v", l.Locks)
	}
}

// TestListPaging: with a limit, following nextAfter visits every lock
// that matches the filters exactly once, in order; without one, the list
// has them all, as the seed's did.
func TestListPaging(t *testing.T) {
	ms := memstore.New()
	ctx := context.Background()
	var all []string
	for i := range 37 {
		name := fmt.Sprintf("job-%02d", i)
		if i%5 == 0 {
			name = fmt.Sprintf("Tenant/%02d", i)
		}
		all = append(all, name)
		switch i % 3 {
		case 0:
			acquire(t, ms, store.Holder{ID: "i1"}, name, time.Minute)
		case 1:
			acquire(t, ms, store.Holder{ID: "i2"}, name, time.Minute)
		case 2: // known, free
			s := acquire(t, ms, store.Holder{ID: "i3"}, name, time.Minute)
			if err := ms.Release(ctx, "i3", []store.LeaseRef{{Lock: name, Token: s.Token}}); err != nil {
				t.Fatal(err)
			}
		}
		if i%4 == 0 {
			if _, err := ms.Disable(ctx, name, "r", "t"); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := newHandler(t, ms)
	get := func(q url.Values) controlapi.LockList {
		t.Helper()
		return decode[controlapi.LockList](t, do(t, h, "GET", "/api/mastercontrols?"+q.Encode(), ""), http.StatusOK)
	}
	names := func(ls []controlapi.Lock) []string {
		out := make([]string, len(ls))
		for i, l := range ls {
			out[i] = l.LockName
		}
		return out
	}
	full := get(url.Values{})
	if len(full.Locks) != 37 || full.Total != 37 || full.NextAfter != "" || full.Summary.Locks != 37 {
		t.Fatalf("without a limit: %d locks, total %d, next %q", len(full.Locks), full.Total, full.NextAfter)
	}
	if !slices.IsSorted(names(full.Locks)) {
		t.Errorf("not in order: %v", names(full.Locks))
	}
	for _, filter := range []url.Values{
		{}, {"match": {"tenant"}}, {"match": {"0"}}, {"state": {"master"}}, {"state": {"nomaster"}},
		{"state": {"disabled"}}, {"instance": {"i2"}}, {"instance": {"i1"}, "state": {"disabled"}}, {"match": {"zzz"}},
	} {
		want := names(get(filter).Locks)
		for _, l := range get(filter).Locks {
			f := controlapi.LockFilter{Match: filter.Get("match"), State: controlapi.LockState(filter.Get("state")), Instance: filter.Get("instance")}
			if !f.Matches(l) {
				t.Errorf("%v: %s does not match", filter, l.LockName)
			}
		}
		for _, limit := range []int{1, 7, 37, 100} {
			var got []string
			q := url.Values{}
			for k, v := range filter {
				q[k] = v
			}
			q.Set("limit", fmt.Sprint(limit))
			for pages := 0; ; pages++ {
				if pages > 40 {
					t.Fatalf("%v limit %d: too many pages", filter, limit)
				}
				p := get(q)
				if len(p.Locks) > limit {
					t.Fatalf("%v limit %d: a page of %d", filter, limit, len(p.Locks))
				}
				if p.Total != len(want) || p.Summary.Locks != 37 {
					t.Errorf("%v limit %d: total %d, summary %d; want %d, 37", filter, limit, p.Total, p.Summary.Locks, len(want))
				}
				got = append(got, names(p.Locks)...)
				if p.NextAfter == "" {
					break
				}
				if len(p.Locks) != limit {
					t.Errorf("%v limit %d: a short page (%d) before the last", filter, limit, len(p.Locks))
				}
				q.Set("after", p.NextAfter)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%v limit %d: pages give %v, want %v", filter, limit, got, want)
			}
		}
	}
}

// TestHandoffRequests: the answers of POST /api/mastercontrols/handoff,
// and the history entry of an accepted request.
func TestHandoffRequests(t *testing.T) {
	ms := memstore.New()
	ctx := context.Background()
	a := announce(t, ms, store.Member{ID: "a", Locks: []string{"JOB", "SOLO"}}, time.Minute)
	announce(t, ms, store.Member{ID: "b", Locks: []string{"JOB"}}, time.Minute)
	if _, err := a.Acquire(ctx, store.Holder{ID: "a"}, []string{"JOB", "SOLO", "OFF"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Disable(ctx, "OFF", "maintenance", "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Disable(ctx, "FREE", "r", "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Enable(ctx, "FREE", "ops"); err != nil {
		t.Fatal(err)
	}
	h := newHandler(t, ms, controlapi.WithNamedToken("alice", "tok"))
	auth := []string{"Authorization", "Bearer tok"}
	post := func(body string, hdr ...string) *httptest.ResponseRecorder {
		return do(t, h, "POST", "/api/mastercontrols/handoff", body, append(slices.Clone(auth), hdr...)...)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		field      string
	}{
		{"unknown lock", `{"lockName":"NOPE"}`, 404, "lockName"},
		{"no master", `{"lockName":"FREE"}`, 409, "lockName"},
		{"disabled", `{"lockName":"OFF"}`, 409, "lockName"},
		{"to a stranger", `{"lockName":"JOB","to":"ghost"}`, 409, "to"},
		{"to the master", `{"lockName":"JOB","to":"a"}`, 409, "to"},
		{"no other candidate", `{"lockName":"SOLO"}`, 409, "lockName"},
		{"empty to", `{"lockName":"JOB","to":""}`, 400, "to"},
		{"unprintable to", `{"lockName":"JOB","to":"b\u202e"}`, 400, "to"},
		{"unknown field", `{"lockName":"JOB","target":"b"}`, 400, "target"},
		{"bad name", `{"lockName":""}`, 400, "lockName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := wantError(t, post(tc.body), tc.status, tc.field)
			t.Logf("%d %s", tc.status, e.Error)
		})
	}
	wantError(t, do(t, h, "POST", "/api/mastercontrols/handoff", `{"lockName":"JOB"}`), http.StatusUnauthorized, "")
	wantError(t, post(`{"lockName":"JOB"}`, "Sec-Fetch-Site", "cross-site"), http.StatusForbidden, "")
	wantError(t, do(t, h, "GET", "/api/mastercontrols/handoff", "", auth...), http.StatusMethodNotAllowed, "")
	if states, _ := ms.Locks(ctx, "JOB"); states[0].HandoffRequested {
		t.Fatal("a refused request reached the store")
	}

	res := decode[controlapi.HandoffResult](t, post(`{"lockName":"JOB","to":"b","reason":"patching a"}`), http.StatusOK)
	if res.From != "a" || res.To != "b" || !res.Lock.HandoffRequested || res.Lock.HandoffTo != "b" || res.Warning != "" {
		t.Errorf("result %+v", res)
	}
	t.Log(res.Message)
	evs, err := ms.Events(ctx, store.EventFilter{Lock: "JOB"})
	if err != nil || len(evs) != 1 {
		t.Fatalf("history: %+v, %v", evs, err)
	}
	e := evs[0]
	if e.Kind != store.EventHandoff || e.Instance != "alice" || e.Remote != remote || e.Token != res.Lock.Token || e.Reason != "from a to b: patching a" {
		t.Errorf("history entry %+v", e)
	}
	res = decode[controlapi.HandoffResult](t, post(`{"lockName":"JOB"}`), http.StatusOK)
	if res.To != "" || !res.Lock.HandoffRequested || res.Lock.HandoffTo != "" {
		t.Errorf("to anyone: %+v", res)
	}
	if evs, _ := ms.Events(ctx, store.EventFilter{Lock: "JOB", Limit: 1}); evs[0].Reason != "from a to any other instance" {
		t.Errorf("history entry %+v", evs[0])
	}

	sq, err := sqlite.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	if _, ok := store.Store(sq).(store.Handoffs); !ok {
		wantError(t, do(t, newHandler(t, sq), "POST", "/api/mastercontrols/handoff", `{"lockName":"JOB"}`), http.StatusNotImplemented, "")
	} else {
		t.Log("sqlite hands off on this branch: its 501 is not tested")
	}
}
