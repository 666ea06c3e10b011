package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/storeurl"
)

// memServer serves the control API over a memstore (a store with a member
// list and hand-offs) on a real listener.
func memServer(t *testing.T, ms *memstore.Store, opts ...controlapi.Option) *httptest.Server {
	t.Helper()
	api, err := controlapi.New(ms, append([]controlapi.Option{controlapi.WithLogger(slog.New(slog.DiscardHandler)),
		controlapi.WithPollInterval(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.New(httpserver.Config{API: api}))
	t.Cleanup(srv.Close)
	return srv
}

// member writes a member record as an instance on its own handle would.
func member(t *testing.T, ms *memstore.Store, id, host string, locks []string, ttl time.Duration) *memstore.Store {
	t.Helper()
	h := ms.Reopen()
	info := fmt.Sprintf(`{"host":%q,"pid":42,"address":"%s:8080","version":"v9","started":"2025-01-02T03:04:05Z"}`, host, host)
	h.Announce(store.Member{ID: id, Info: info, Locks: locks, LockSetID: "s-" + id, Masters: 1}, ttl)
	if _, err := h.Renew(context.Background(), id, nil, ttl); err != nil {
		t.Fatal(err)
	}
	return h
}

// storeHas reports whether the store at rawURL has the capability of T.
func storeHas[T any](t *testing.T, rawURL string) bool {
	t.Helper()
	st, err := storeurl.Open(context.Background(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, ok := st.(T)
	return ok
}

// TestInstancesCommand: instances lists the live members with what they
// announced, as a table and as JSON, through a server; members expire.
// On a store without a member list it says so and exits 1.
func TestInstancesCommand(t *testing.T) {
	ms := memstore.New()
	srv := memServer(t, ms)
	member(t, ms, "web-1-42-aa", "web-1", []string{"A", "B"}, time.Minute)
	member(t, ms, "web-2-42-bb", "web-2", []string{"A"}, 300*time.Millisecond)

	r := mainEnv(nil, "instances", "--server", srv.URL)
	if r.code != ExitOK {
		t.Fatalf("instances: exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LAST-SEEN") {
		t.Fatalf("instances table:\n%s", r.stdout)
	}
	for _, w := range []string{"web-1-42-aa", "web-1", "42", "v9", "web-1:8080", "2025-01-02T03:04:05Z"} {
		if !strings.Contains(lines[1], w) {
			t.Errorf("row %q lacks %q", lines[1], w)
		}
	}
	r = mainEnv(nil, "instances", "--server", srv.URL, "--json", "--lock", "B")
	var list []controlapi.Instance
	if err := json.Unmarshal([]byte(r.stdout), &list); r.code != ExitOK || err != nil || len(list) != 1 ||
		list[0].ID != "web-1-42-aa" || list[0].LockCount != 2 || list[0].Masters != 1 || list[0].TTLMs <= 0 {
		t.Fatalf("instances --json --lock B: exit %d, %v, %s", r.code, err, r.stdout)
	}
	waitFor(t, 5*time.Second, "web-2's record to expire", func() bool {
		r := mainEnv(nil, "instances", "--server", srv.URL, "--json")
		var list []controlapi.Instance
		return json.Unmarshal([]byte(r.stdout), &list) == nil && len(list) == 1
	})

	// The store directly.
	u := sqliteURL(t)
	if r := mainEnv(nil, "disable", "--store", u, "--lock", "X", "--reason", "r"); r.code != ExitOK {
		t.Fatalf("disable: %d %s", r.code, r.stderr)
	}
	r = mainEnv(nil, "instances", "--store", u)
	if storeHas[store.Membership](t, u) {
		if r.code != ExitOK || strings.TrimSpace(r.stdout) != "no instances" {
			t.Errorf("instances on an empty store: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	} else if r.code != ExitFailure || !strings.Contains(r.stderr, "keeps no member list") {
		t.Errorf("instances on a store without members: exit %d, stderr %q", r.code, r.stderr)
	}
	r = mainEnv(nil, "instances", "--server", memServerOn(t, u).URL)
	if !storeHas[store.Membership](t, u) && (r.code != ExitFailure || !strings.Contains(r.stderr, "501")) {
		t.Errorf("instances through a server on a store without members: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := mainEnv(nil, "instances", "--lock", ""); r.code != ExitUsage {
		t.Errorf("instances --lock '': exit %d", r.code)
	}
}

// memServerOn serves the control API over the store at rawURL.
func memServerOn(t *testing.T, rawURL string) *httptest.Server {
	t.Helper()
	st, err := storeurl.Open(context.Background(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	api, err := controlapi.New(st, controlapi.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.New(httpserver.Config{API: api}))
	t.Cleanup(srv.Close)
	return srv
}

// TestStatusStandbys: status shows the standbys of each lock, filters by
// state, instance and name, and counts masterships per instance.
func TestStatusStandbys(t *testing.T) {
	ms := memstore.New()
	srv := memServer(t, ms)
	a := member(t, ms, "a", "host-a", []string{"ALPHA", "BETA", "GAMMA"}, time.Minute)
	member(t, ms, "b", "host-b", []string{"ALPHA"}, time.Minute)
	if _, err := a.Acquire(context.Background(), store.Holder{ID: "a", Info: `{"host":"host-a","pid":1}`}, []string{"ALPHA", "BETA"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Disable(context.Background(), "GAMMA", "off", "t"); err != nil {
		t.Fatal(err)
	}
	r := mainEnv(nil, "status", "--server", srv.URL)
	if r.code != ExitOK {
		t.Fatalf("status: exit %d, stderr %q", r.code, r.stderr)
	}
	table, masterships, _ := strings.Cut(r.stdout, "\n\n")
	checkStatusRow(t, table, "ALPHA", map[string]string{"MASTER": "a", "STANDBYS": "1"})
	checkStatusRow(t, table, "BETA", map[string]string{"MASTER": "a", "STANDBYS": "0"})
	checkStatusRow(t, table, "GAMMA", map[string]string{"MASTER": "-", "STANDBYS": "1", "DISABLED": "yes"})
	if f := strings.Fields(masterships); len(f) != 6 || f[0] != "INSTANCE" || f[3] != "a" || f[4] != "host-a" || f[5] != "2" {
		t.Errorf("masterships:\n%s", masterships)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--state", "nostandby"}, []string{"BETA"}},
		{[]string{"--state", "disabled"}, []string{"GAMMA"}},
		{[]string{"--instance", "a", "--match", "alp"}, []string{"ALPHA"}},
		{[]string{"--match", "zzz"}, nil},
	} {
		r := mainEnv(nil, args("status", "--server", srv.URL, "--json", tc.args)...)
		locks := decodeLocks(t, "status --json", r.stdout)
		var got []string
		for _, l := range locks {
			got = append(got, l.LockName)
		}
		if r.code != ExitOK || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("status %v: exit %d, %v; want %v", tc.args, r.code, got, tc.want)
		}
	}
	if r := mainEnv(nil, "status", "--state", "held"); r.code != ExitUsage || !strings.Contains(r.stderr, "--state") {
		t.Errorf("status --state held: exit %d, stderr %q", r.code, r.stderr)
	}

	// On the store: the same, with "-" standbys on a store without a
	// member list.
	u := sqliteURL(t)
	holdLock(t, u, "HELD")
	r = mainEnv(nil, "status", "--store", u)
	table, masterships, _ = strings.Cut(r.stdout, "\n\n")
	want := "-"
	if storeHas[store.Membership](t, u) {
		want = "0"
	}
	checkStatusRow(t, table, "HELD", map[string]string{"MASTER": "web-1-4242-abcd", "STANDBYS": want})
	if !strings.Contains(masterships, "web-1-4242-abcd") {
		t.Errorf("masterships on the store:\n%s", r.stdout)
	}
}

// TestHandoffCommand: handoff moves a mastership through a server, to a
// named instance or to any other; refusals exit 1 with the server's
// reason, bad input 2.
func TestHandoffCommand(t *testing.T) {
	ms := memstore.New()
	srv := memServer(t, ms, controlapi.WithToken("tok"))
	env := map[string]string{EnvServer: srv.URL, EnvHTTPToken: "tok"}
	var (
		mu      sync.Mutex
		running = map[string]int{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	execs := map[string]*masterjob.Executor{}
	for _, id := range []string{"i0", "i1", "i2"} {
		e, err := masterjob.New(ms.Reopen(), masterjob.WithLookupEnv(envFunc(nil)), masterjob.WithInstanceID(id),
			masterjob.WithInitDelay(0), masterjob.WithHeartbeatInterval(50*time.Millisecond),
			masterjob.WithTolerance(500*time.Millisecond), masterjob.WithCheckMasterInterval(200*time.Millisecond),
			masterjob.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		err = e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			mu.Lock()
			running[id]++
			mu.Unlock()
			<-ctx.Done()
			mu.Lock()
			running[id]--
			mu.Unlock()
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		execs[id] = e
		wg.Go(func() { _ = e.Run(ctx) })
	}
	master := func() string {
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		for id, n := range running {
			if n > 0 {
				ids = append(ids, id)
			}
		}
		if len(ids) != 1 {
			return ""
		}
		return ids[0]
	}
	waitFor(t, 5*time.Second, "a master and three members", func() bool {
		m, _ := ms.Members(context.Background(), store.MemberFilter{Lock: "JOB"})
		return master() != "" && len(m) == 3
	})
	from := master()
	to := "i0"
	if from == "i0" {
		to = "i1"
	}
	r := mainEnv(env, "handoff", "--lock", "JOB", "--to", to, "--reason", "patching "+from)
	if r.code != ExitOK || !strings.Contains(r.stdout, fmt.Sprintf("asked %s to hand lock \"JOB\" over to %s", from, to)) {
		t.Fatalf("handoff --to %s: exit %d, stdout %q, stderr %q", to, r.code, r.stdout, r.stderr)
	}
	waitFor(t, 5*time.Second, to+" to run the job", func() bool { return master() == to })

	time.Sleep(300 * time.Millisecond) // past the holdoff of the last master
	r = mainEnv(env, "handoff", "--lock", "JOB")
	if r.code != ExitOK || !strings.Contains(r.stdout, "over to any other instance") {
		t.Fatalf("handoff: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	waitFor(t, 5*time.Second, "another instance to run the job", func() bool { m := master(); return m != "" && m != to })

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{args("handoff", "--lock", "NOPE"), ExitFailure, "404 Not Found: unknown lock"},
		{args("handoff", "--lock", "JOB", "--to", "ghost"), ExitFailure, `409 Conflict: "ghost" is not a live member`},
		{args("handoff", "--lock", "JOB", "--to", ""), ExitUsage, "--to"},
		{args("handoff"), ExitUsage, "missing --lock"},
		{args("handoff", "--lock", "JOB", "--token", "wrong"), ExitFailure, "401"},
	} {
		r := mainEnv(env, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	// The history has the requests, with who asked.
	evs, err := ms.Events(context.Background(), store.EventFilter{Lock: "JOB", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var handoffs []string
	for _, e := range evs {
		if e.Kind == store.EventHandoff {
			handoffs = append(handoffs, e.Instance+": "+e.Reason)
		}
	}
	if len(handoffs) != 2 || !strings.HasSuffix(handoffs[1], "from "+from+" to "+to+": patching "+from) {
		t.Errorf("hand-offs in the history: %q", handoffs)
	}

	// The store directly: SQLite, which may not hand off.
	u := sqliteURL(t)
	holdLock(t, u, "HELD")
	if !storeHas[store.Handoffs](t, u) {
		r := mainEnv(nil, "handoff", "--store", u, "--lock", "HELD")
		if r.code != ExitFailure || !strings.Contains(r.stderr, "cannot hand off") {
			t.Errorf("handoff on a store without hand-offs: exit %d, stderr %q", r.code, r.stderr)
		}
	}
}

// TestWatchCommand: watch prints history entries and member joins as they
// happen, escaped; through a server it resumes after a broken connection
// without repeating or losing entries; on a SQLite store it follows the
// store itself.
func TestWatchCommand(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		ms := memstore.New()
		srv := memServer(t, ms, controlapi.WithToken("tok"))
		env := map[string]string{EnvServer: srv.URL, EnvHTTPToken: "tok"}
		w := startMain(t, env, "watch")
		waitFor(t, 5*time.Second, "watch to connect", func() bool { return strings.Contains(w.stderr.String(), "watching the server") })

		if r := mainEnv(env, "disable", "--lock", "JOB ONE", "--reason", "line\nbreak"); r.code != ExitOK {
			t.Fatalf("disable: %d %s", r.code, r.stderr)
		}
		waitFor(t, 5*time.Second, "the entry", func() bool { return strings.Contains(w.stdout.String(), "disabled") })
		line := strings.TrimSpace(w.stdout.String())
		if !strings.Contains(line, `"JOB ONE"  disabled  http`) || !strings.Contains(line, `"line\nbreak"`) || strings.Count(w.stdout.String(), "\n") != 1 {
			t.Errorf("watch printed %q", w.stdout.String())
		}
		member(t, ms, "web-9", "host-9", []string{"JOB ONE"}, time.Minute)
		waitFor(t, 5*time.Second, "the join", func() bool { return strings.Contains(w.stdout.String(), "joined  web-9  host host-9  1 locks") })

		// The connection breaks; entries appended meanwhile come after
		// the reconnection, once each.
		srv.CloseClientConnections()
		for _, l := range []string{"L1", "L2"} {
			if r := mainEnv(env, "disable", "--lock", l, "--reason", "while away"); r.code != ExitOK {
				t.Fatalf("disable: %d %s", r.code, r.stderr)
			}
		}
		waitFor(t, 10*time.Second, "the entries after the reconnection", func() bool {
			return strings.Contains(w.stdout.String(), "L2  disabled")
		})
		if !strings.Contains(w.stderr.String(), "reconnected") {
			t.Errorf("stderr: %q", w.stderr.String())
		}
		out := w.stdout.String()
		if strings.Count(out, "L1  disabled") != 1 || strings.Count(out, `"JOB ONE"  disabled`) != 1 || strings.Index(out, "L1") > strings.Index(out, "L2") {
			t.Errorf("after the reconnection:\n%s", out)
		}
		if code := w.stop(t); code != ExitOK {
			t.Errorf("watch exited %d", code)
		}

		// --json, one lock.
		j := startMain(t, env, "watch", "--json", "--lock", "L3")
		waitFor(t, 5*time.Second, "watch to connect", func() bool { return strings.Contains(j.stderr.String(), "watching") })
		mainEnv(env, "disable", "--lock", "L4", "--reason", "other")
		mainEnv(env, "disable", "--lock", "L3", "--reason", "mine")
		waitFor(t, 5*time.Second, "the entry", func() bool { return strings.Contains(j.stdout.String(), "L3") })
		var got struct {
			Type  string           `json:"type"`
			Event controlapi.Event `json:"event"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(j.stdout.String())), &got); err != nil || got.Type != "history" ||
			got.Event.LockName != "L3" || got.Event.Reason != "mine" || got.Event.ID == 0 {
			t.Errorf("watch --json printed %q (%v)", j.stdout.String(), err)
		}
		j.stop(t)
	})

	t.Run("store", func(t *testing.T) {
		u := sqliteURL(t)
		if r := mainEnv(nil, "disable", "--store", u, "--lock", "BEFORE", "--reason", "r"); r.code != ExitOK {
			t.Fatalf("disable: %d %s", r.code, r.stderr)
		}
		w := startMain(t, nil, "watch", "--store", u)
		waitFor(t, 5*time.Second, "watch to start", func() bool { return strings.Contains(w.stderr.String(), "watching the store") })
		t0 := time.Now()
		if r := mainEnv(nil, "enable", "--store", u, "--lock", "BEFORE"); r.code != ExitOK {
			t.Fatalf("enable: %d %s", r.code, r.stderr)
		}
		waitFor(t, 5*time.Second, "the entry", func() bool { return strings.Contains(w.stdout.String(), "BEFORE  enabled  cli@") })
		t.Logf("printed %v after the enable", time.Since(t0))
		if strings.Contains(w.stdout.String(), "disabled") {
			t.Errorf("watch printed an entry from before it started: %q", w.stdout.String())
		}
		if code := w.stop(t); code != ExitOK {
			t.Errorf("watch exited %d: %s", code, w.stderr.String())
		}
	})
}

// TestWatchRefused: a server that refuses the stream for good ends watch
// with its reason.
func TestWatchRefused(t *testing.T) {
	ms := memstore.New()
	srv := memServer(t, ms, controlapi.WithToken("tok"), controlapi.WithTokenForReads())
	r := mainCtx(context.Background(), nil, "watch", "--server", srv.URL)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "401") {
		t.Errorf("watch without the token: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestRunBalanceFlags: --balance and --weight are checked before anything
// runs.
func TestRunBalanceFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{args("run", "--lock", "L", "--weight", "0", "--", "true"), "-weight"},
		{args("run", "--lock", "L", "--weight", "heavy", "--", "true"), "-weight"},
		{args("run", "--lock", "L", "--balance=maybe", "--", "true"), "-balance"},
	} {
		r := mainEnv(nil, tc.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
	}
	f := newRunFlags()
	if err := f.fs.Parse([]string{"--balance=false", "--weight", "2.5"}); err != nil {
		t.Fatal(err)
	}
	if f.balance || !f.weight.set || f.weight.w != 2.5 || len(f.options()) != 1 {
		t.Errorf("parsed: balance %v, weight %+v, %d options", f.balance, f.weight, len(f.options()))
	}
	f = newRunFlags()
	if err := f.fs.Parse(nil); err != nil || !f.balance || len(f.options()) != 0 {
		t.Errorf("defaults: balance %v, %d options, %v", f.balance, len(f.options()), err)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterCommandsPostgres: instances, status, handoff and watch on a
// PostgreSQL store directly (it keeps members, hands off and pushes its
// history's changes).
func TestClusterCommandsPostgres(t *testing.T) {
	u := postgresSchemaURL(t)
	ctx := context.Background()
	open := func() store.Store {
		t.Helper()
		st, err := storeurl.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	for i, id := range []string{"pg-a", "pg-b"} {
		st := open()
		info := fmt.Sprintf(`{"host":"host-%s","pid":%d}`, id, 10+i)
		st.(store.Membership).Announce(store.Member{ID: id, Info: info, Locks: []string{"JOB"}, LockSetID: "s"}, time.Minute)
		got, err := st.Acquire(ctx, store.Holder{ID: id, Info: info}, []string{"JOB"}, time.Minute)
		if err != nil || len(got) != 1 {
			t.Fatalf("Acquire: %+v, %v", got, err)
		}
	}
	r := mainEnv(nil, "instances", "--store", u, "--json")
	var list []controlapi.Instance
	if err := json.Unmarshal([]byte(r.stdout), &list); r.code != ExitOK || err != nil || len(list) != 2 || list[1].Host != "host-pg-b" {
		t.Fatalf("instances: exit %d, %v, %s %s", r.code, err, r.stdout, r.stderr)
	}
	r = mainEnv(nil, "status", "--store", u)
	checkStatusRow(t, strings.Split(r.stdout, "\n\n")[0], "JOB", map[string]string{"MASTER": "pg-a", "STANDBYS": "1"})

	w := startMain(t, nil, "watch", "--store", u, "--lock", "JOB")
	waitFor(t, 10*time.Second, "watch to start", func() bool { return strings.Contains(w.stderr.String(), "watching the store") })
	t0 := time.Now()
	r = mainEnv(nil, "handoff", "--store", u, "--lock", "JOB", "--to", "pg-b", "--reason", "moving")
	if r.code != ExitOK || !strings.Contains(r.stdout, `asked pg-a to hand lock "JOB" over to pg-b`) {
		t.Fatalf("handoff: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	waitFor(t, 5*time.Second, "watch to print the hand-off", func() bool { return strings.Contains(w.stdout.String(), "JOB  handoff  cli@") })
	t.Logf("watch printed the hand-off %v after the command began", time.Since(t0))
	if !strings.Contains(w.stdout.String(), "from pg-a to pg-b: moving") {
		t.Errorf("watch printed %q", w.stdout.String())
	}
	states, err := open().Locks(ctx, "JOB")
	if err != nil || !states[0].HandoffRequested || states[0].HandoffTo != "pg-b" {
		t.Errorf("the store after the hand-off: %+v, %v", states, err)
	}
	r = mainEnv(nil, "handoff", "--store", u, "--lock", "JOB", "--to", "pg-a")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "is the master of") {
		t.Errorf("handoff to the master: exit %d, stderr %q", r.code, r.stderr)
	}
	w.stop(t)
}
