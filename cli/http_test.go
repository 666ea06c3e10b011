package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/internal/syncbuf"
)

// testClient is the HTTP client of the tests: no keep-alive, so that no
// connection outlives a test (goleak).
var testClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   10 * time.Second,
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := testClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// getJSON decodes the 200 answer to GET url into out.
func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// postJSON posts body to url with the bearer token (none if empty) and
// returns the status and the answer.
func postJSON(t *testing.T, url, token string, body any) (int, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp.StatusCode, string(out)
}

// waitHTTP polls GET url until it answers want, and returns the body.
func waitHTTP(t *testing.T, url string, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := httpGet(t, url)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s; want %d within %v", url, code, body, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isMasterMetric is the line of /metrics that says whether this instance
// is master of lock.
func isMasterMetric(lock string, v int) string {
	return fmt.Sprintf("masterjob_is_master{lock=%q} %d\n", lock, v)
}

// waitMetric polls the metrics at base until they hold line.
func waitMetric(t *testing.T, base, line string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := httpGet(t, base+"/metrics")
		if code == http.StatusOK && strings.Contains(body, line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/metrics lacks %q after %v (status %d):\n%s", base, strings.TrimSpace(line), within, code, grepLines(body, "masterjob_"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// httpAddrPattern finds the listen address in a text or JSON log.
var httpAddrPattern = regexp.MustCompile(`http_addr"?[=:]"?([^\s"]+)`)

// findHTTPAddr returns the first listen address logged in log, or "".
func findHTTPAddr(log string) string {
	if m := httpAddrPattern.FindStringSubmatch(log); m != nil {
		return m[1]
	}
	return ""
}

// bgMain is a Main running in the background.
type bgMain struct {
	cancel         context.CancelFunc
	done           chan int
	stdout, stderr *syncbuf.Buffer
}

// startMain runs Main with env and args in the background; the test's
// cleanup stops it if the test did not.
func startMain(t *testing.T, env map[string]string, args ...string) *bgMain {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &bgMain{cancel: cancel, done: make(chan int, 1), stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}}
	go func() { m.done <- Main(ctx, args, m.stdout, m.stderr, envFunc(env)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-m.done:
		case <-time.After(15 * time.Second):
			t.Errorf("masterjob %s did not return", args[0])
		}
	})
	return m
}

// url waits for the listen address in the log and returns the base URL.
func (m *bgMain) url(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a := findHTTPAddr(m.stderr.String()); a != "" {
			return "http://" + a
		}
		select {
		case code := <-m.done:
			m.done <- code
			t.Fatalf("exited with %d before listening:\n%s", code, m.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no http_addr logged within 10s:\n%s", m.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop cancels Main and returns its exit code.
func (m *bgMain) stop(t *testing.T) int {
	t.Helper()
	m.cancel()
	select {
	case code := <-m.done:
		m.done <- code // for the cleanup
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("did not return after cancellation:\n%s", m.stderr.String())
		return -1
	}
}

func TestCheckListenAddr(t *testing.T) {
	for _, tt := range []struct {
		addr          string
		token, permit bool
		ok            bool
	}{
		{"127.0.0.1:0", false, false, true},
		{"127.1.2.3:8080", false, false, true},
		{"[::1]:8080", false, false, true},
		{"localhost:8080", false, false, true},
		{":8080", false, false, false},
		{":8080", true, false, true},
		{":8080", false, true, true},
		{"0.0.0.0:8080", false, false, false},
		{"[::]:8080", false, false, false},
		{"10.1.2.3:8080", false, false, false},
		{"10.1.2.3:8080", true, false, true},
		{"myhost:8080", false, false, false},
		{"127.0.0.1", true, true, false},
		{"127.0.0.1:-1", true, true, false},
		{"127.0.0.1:65536", true, true, false},
		{"", true, true, false},
	} {
		err := checkListenAddr(tt.addr, tt.token, tt.permit)
		if (err == nil) != tt.ok {
			t.Errorf("checkListenAddr(%q, token %v, insecure %v) = %v, want ok %v", tt.addr, tt.token, tt.permit, err, tt.ok)
		}
	}
}

// The server of status, disable, enable and history is --server, else
// $MASTERJOB_SERVER unless --store is given; the token --token, else
// $MASTERJOB_HTTP_TOKEN.
func TestTargetPrecedence(t *testing.T) {
	resolve := func(env map[string]string, a ...string) target {
		t.Helper()
		f := newStatusFlags()
		if err := f.fs.Parse(a); err != nil {
			t.Fatal(err)
		}
		tg, err := f.target.resolve(&cmdEnv{lookupEnv: envFunc(env)}, f.fs)
		if err != nil {
			t.Fatalf("%v %v: %v", env, a, err)
		}
		return tg
	}
	env := map[string]string{EnvServer: "http://env:1", EnvStore: "sqlite:env.db", EnvHTTPToken: "envtoken"}
	// --insecure: these hosts are not this machine and the URLs are http://.
	if tg := resolve(env, "--server", "flag:2/prefix/", "--insecure"); tg.client == nil || tg.client.String() != "http://flag:2/prefix" || tg.client.token != "envtoken" {
		t.Errorf("--server: %+v", tg)
	}
	if tg := resolve(env, "--server", "https://flag:2", "--token", "flagtoken"); tg.client == nil || tg.client.String() != "https://flag:2" || tg.client.token != "flagtoken" {
		t.Errorf("--server --token: %+v", tg)
	}
	if tg := resolve(env, "--store", "sqlite:flag.db"); tg.client != nil || tg.store.String() != "sqlite:flag.db" {
		t.Errorf("--store over $%s: %+v", EnvServer, tg)
	}
	if tg := resolve(env, "--insecure"); tg.client == nil || tg.client.String() != "http://env:1" {
		t.Errorf("$%s over $%s: %+v", EnvServer, EnvStore, tg)
	}
	delete(env, EnvServer)
	if tg := resolve(env); tg.client != nil || tg.store.String() != "sqlite:env.db" {
		t.Errorf("$%s: %+v", EnvStore, tg)
	}
	if tg := resolve(nil); tg.client != nil || tg.store.String() != "sqlite:masterjob.db" {
		t.Errorf("default: %+v", tg)
	}
}

// Until the store is open, the listener serves the probes (not ready) and
// metrics, and 503 elsewhere.
func TestStartingHandler(t *testing.T) {
	h := startingHandler(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	for path, want := range map[string]int{
		"/healthz": 200, "/readyz": 503, "/metrics": 200, "/": 503, "/api/mastercontrols": 503,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d %s, want %d", path, rec.Code, rec.Body, want)
		}
		if want == 503 && path != "/readyz" && !strings.Contains(rec.Body.String(), `"error":"starting`) {
			t.Errorf("GET %s: body %s", path, rec.Body)
		}
	}
}

// serve serves the control API, the dashboard, metrics and probes; status,
// disable, enable and history work through it with the token, and get 401
// without it.
func TestServe(t *testing.T) {
	const token = "serve-test-token"
	store := sqliteURL(t)
	if r := mainEnv(nil, "disable", "--store", store, "--lock", "PRE", "--reason", "before serve"); r.code != ExitOK {
		t.Fatalf("disable: %d %s", r.code, r.stderr)
	}
	s := startMain(t, nil, "serve", "--http", "127.0.0.1:0", "--store", store, "--http-token", token, "--log-format", "json")
	base := s.url(t)

	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: %d %q", code, body)
	}
	waitHTTP(t, base+"/readyz", 200, 5*time.Second)
	if code, body := httpGet(t, base+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, "process_") || strings.Contains(body, "masterjob_is_master") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := httpGet(t, base+"/"); code != 200 || !strings.Contains(body, "<!DOCTYPE html>") ||
		!strings.Contains(body, "dashboard.js") {
		t.Errorf("/: %d\n%s", code, body)
	}
	var list controlapi.LockList
	getJSON(t, base+"/api/mastercontrols", &list)
	if len(list.Locks) != 1 || list.Locks[0].LockName != "PRE" || !list.Locks[0].Disabled || list.Locks[0].Reason != "before serve" {
		t.Fatalf("/api/mastercontrols: %+v", list)
	}

	// The CLI through the server: $MASTERJOB_SERVER, no token.
	env := map[string]string{EnvServer: base}
	r := mainEnv(env, "status", "--json")
	var locks []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &locks); r.code != ExitOK || err != nil || len(locks) != 1 ||
		locks[0]["lockName"] != "PRE" || locks[0]["disabled"] != true || locks[0]["reason"] != "before serve" {
		t.Fatalf("status --json: exit %d, %v, stdout %q, stderr %q", r.code, err, r.stdout, r.stderr)
	}
	r = mainEnv(env, "disable", "--lock", "JOB", "--reason", "no token")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "401 Unauthorized: missing bearer token") ||
		!strings.Contains(r.stderr, "--token") || r.stdout != "" {
		t.Fatalf("disable without a token: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(env, "enable", "--lock", "PRE", "--token", "wrong-token")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "401 Unauthorized: invalid bearer token") {
		t.Fatalf("enable with a wrong token: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// With the token, from the environment.
	env[EnvHTTPToken] = token
	r = mainEnv(env, "disable", "--lock", "JOB", "--reason", "maintenance window")
	if r.code != ExitOK || !strings.Contains(r.stdout, `disabled lock "JOB": maintenance window`) {
		t.Fatalf("disable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(env, "disable", "--lock", "JOB", "--reason", "again")
	if r.code != ExitOK || !strings.Contains(r.stdout, `lock "JOB" already disabled: maintenance window (by http)`) {
		t.Fatalf("disable again: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(nil, "status", "--server", base, "JOB")
	if r.code != ExitOK {
		t.Fatalf("status: exit %d, stderr %q", r.code, r.stderr)
	}
	checkStatusRow(t, r.stdout, "JOB", map[string]string{"MASTER": "-", "DISABLED": "yes", "CHANGED-BY": "http",
		"CHANGED-AT": "20*", "REASON": "maintenance window"})
	r = mainEnv(env, "enable", "--lock", "JOB")
	if r.code != ExitOK || !strings.Contains(r.stdout, `enabled lock "JOB"`) {
		t.Fatalf("enable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(env, "history", "--lock", "JOB", "--json")
	var events []controlapi.Event
	if err := json.Unmarshal([]byte(r.stdout), &events); r.code != ExitOK || err != nil {
		t.Fatalf("history: exit %d, %v, stdout %q, stderr %q", r.code, err, r.stdout, r.stderr)
	}
	if len(events) != 2 || events[0].Kind != "enabled" || events[1].Kind != "disabled" ||
		events[1].Reason != "maintenance window" || events[1].Instance != "http" || !strings.HasPrefix(events[1].Remote, "127.0.0.1:") {
		t.Fatalf("history: %+v", events)
	}
	r = mainEnv(env, "history")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != ExitOK || len(lines) != 4 ||
		!strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[3], "PRE") {
		t.Fatalf("history table: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	if code := s.stop(t); code != ExitOK {
		t.Fatalf("serve exited %d after cancellation:\n%s", code, s.stderr.String())
	}
	logs := s.stderr.String()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("--log-format json wrote a non-JSON line %q", line)
		}
	}
	if !strings.Contains(logs, `"msg":"HTTP server stopped"`) {
		t.Errorf("no graceful stop logged:\n%s", logs)
	}
	if _, err := testClient.Get(base + "/healthz"); err == nil {
		t.Errorf("%s still serves after serve returned", base)
	}
}

// Errors of the server are shown with its JSON error: 400 exits 2, other
// statuses and network errors 1.
func TestServerErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch prefix {
		case "bad":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"reason is too long","field":"reason"}`)
		case "down":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"the store is unavailable; try again"}`)
		case "proxy":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html>bad gateway</html>")
		case "garbage":
			fmt.Fprint(w, "not json")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	for _, tt := range []struct {
		args  []string
		code  int
		wants []string
	}{
		{args("disable", "--lock", "L", "--reason", "r", "--server", srv.URL+"/bad"), ExitUsage,
			[]string{"400 Bad Request: reason is too long", `(field "reason")`}},
		{args("status", "--server", srv.URL+"/down"), ExitFailure, []string{"503 Service Unavailable: the store is unavailable; try again"}},
		{args("history", "--server", srv.URL+"/down"), ExitFailure, []string{"503"}},
		{args("enable", "--lock", "L", "--server", srv.URL+"/proxy"), ExitFailure, []string{"502 Bad Gateway: <html>bad gateway</html>"}},
		{args("status", "--server", srv.URL+"/garbage"), ExitFailure, []string{"not the expected JSON"}},
		{args("status", "--server", srv.URL+"/other"), ExitFailure, []string{"404 Not Found", "masterjob server"}},
		{args("status", "--server", closed), ExitFailure, []string{"connection refused"}},
	} {
		r := mainEnv(nil, tt.args...)
		if r.code != tt.code || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, want exit %d", tt.args, r.code, r.stdout, tt.code)
		}
		for _, w := range tt.wants {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tt.args, w, r.stderr)
			}
		}
	}
}

// run --http serves the control API over its store, metrics with the lock's
// is-master gauge, probes ready while it runs, and the dashboard; a disable
// through it stops the child; every transition lands in the history, the
// releases of the shutdown too.
func TestRunHTTP(t *testing.T) {
	const token = "run-test-token"
	store := sqliteURL(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	s := startMain(t, map[string]string{EnvHTTPToken: token}, args("run", "--lock", "L", "--store", store, timing,
		"--http", "127.0.0.1:0", "--", "sh", "-c", `echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 600`, pidFile)...)
	base := s.url(t)
	pid := waitPidFile(t, pidFile, 10*time.Second)
	waitHTTP(t, base+"/readyz", 200, 5*time.Second)
	waitMetric(t, base, isMasterMetric("L", 1), 5*time.Second)
	if code, body := httpGet(t, base+"/"); code != 200 || !strings.Contains(body, "<!DOCTYPE html>") {
		t.Errorf("/: %d\n%s", code, body)
	}
	var lock controlapi.Lock
	getJSON(t, base+"/api/mastercontrols/locks/L", &lock)
	if lock.Master == "" || lock.Token != 1 || lock.Holder == nil || lock.Holder.PID != os.Getpid() ||
		"http://"+lock.Holder.Address != base {
		t.Fatalf("GET /api/mastercontrols/locks/L: %+v (holder %+v)", lock, lock.Holder)
	}
	if code, body := postJSON(t, base+"/api/mastercontrols/disable", "", map[string]string{"lockName": "L", "reason": "x"}); code != 401 {
		t.Fatalf("disable without a token: %d %s", code, body)
	}

	r := mainEnv(map[string]string{EnvHTTPToken: token}, "disable", "--server", base, "--lock", "L", "--reason", "stop it")
	if r.code != ExitOK || !strings.Contains(r.stdout, "stops within one heartbeat") {
		t.Fatalf("disable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	waitDead(t, pid, 2*time.Second)
	waitMetric(t, base, isMasterMetric("L", 0), 2*time.Second)
	r = mainEnv(nil, "enable", "--server", base, "--token", token, "--lock", "L")
	if r.code != ExitOK {
		t.Fatalf("enable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for waitPidFile(t, pidFile, 5*time.Second) == pid {
		if time.Now().After(deadline) {
			t.Fatal("no new child after enable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitMetric(t, base, isMasterMetric("L", 1), 5*time.Second)

	if code := s.stop(t); code != ExitOK {
		t.Fatalf("run exited %d after cancellation:\n%s", code, s.stderr.String())
	}
	// The history, read from the store after the run: the release of the
	// shutdown was recorded before the store closed.
	r = mainEnv(nil, "history", "--store", store, "--lock", "L", "--json")
	var events []controlapi.Event
	if err := json.Unmarshal([]byte(r.stdout), &events); r.code != ExitOK || err != nil {
		t.Fatalf("history: exit %d, %v, stdout %q, stderr %q", r.code, err, r.stdout, r.stderr)
	}
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Kind)
	}
	// A control change and the master's reaction to it are appended by two
	// writers: the control API after its store call returns, the
	// executor's recorder after the release or acquisition. Either may come
	// first, for the disable and its release (seen in CI) as for the enable
	// and its acquisition.
	want := []string{"released", "acquired", "enabled", "released", "disabled", "acquired"}
	if len(kinds) == len(want) {
		for _, i := range []int{1, 3} { // newest first: the reaction at i, the change at i+1
			if kinds[i] == want[i+1] && kinds[i+1] == want[i] {
				kinds[i], kinds[i+1] = kinds[i+1], kinds[i]
				events[i], events[i+1] = events[i+1], events[i]
			}
		}
	}
	if !slices.Equal(kinds, want) {
		t.Fatalf("history kinds %v, want %v: %+v", kinds, want, events)
	}
	if !strings.Contains(events[0].Reason, "shutting down") || events[0].Token != 2 ||
		!strings.Contains(events[3].Reason, "disabled") || events[3].Token != 1 || events[4].Reason != "stop it" {
		t.Errorf("history: %+v", events)
	}
}

// A port that is taken fails the run at once, with exit status 1.
func TestRunHTTPPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := mainEnv(nil, args("run", "--lock", "L", "--store", sqliteURL(t), timing, "--http", ln.Addr().String(), "--", "true")...)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "cannot serve HTTP") || !strings.Contains(r.stderr, "address already in use") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
