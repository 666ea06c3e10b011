package dashboard_test

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/dashboard"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/store/sqlite"
)

// Environment of the browser test.
const (
	// envChromium overrides the browser's path (default defaultChromium).
	envChromium     = "MASTERJOB_CHROMIUM"
	defaultChromium = "/usr/bin/chromium"
	// envScreenshot, set to 1, makes the test write docs/dashboard.png.
	envScreenshot = "MASTERJOB_UPDATE_SCREENSHOT"
)

const (
	apiToken = "dashboard-test-token"
	lockName = "JOB-SCHEDULER"
)

// jobs tracks the jobs the executors run: the test checks the job's own
// state, not only what the page says.
type jobs struct {
	mu      sync.Mutex
	running map[string]int // lock -> jobs running now, over every instance
}

func (j *jobs) job(lock string) masterjob.Job {
	return masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
		j.mu.Lock()
		j.running[lock]++
		j.mu.Unlock()
		<-ctx.Done()
		j.mu.Lock()
		j.running[lock]--
		j.mu.Unlock()
		return nil
	})
}

func (j *jobs) count(lock string) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.running[lock]
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chromium returns the browser's path, or skips the test (fails it in CI)
// when there is none.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv(envChromium)
	if path == "" {
		path = defaultChromium
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("no Chromium at %s (%v): install Debian's chromium package (apt-get install -y chromium) or set %s", path, err, envChromium)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// TestBrowser drives the dashboard in a real headless Chromium against a
// live cluster: two executors on a SQLite store, the control API with a
// token, and the composed server. It enters the token, disables a lock
// and sees its job stop, enables it and sees a master again, checks that
// user input is shown as text, and that a closed store shows as an error.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	execPath := chromium(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The cluster.
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "masterjob.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := audit.NewRecorder(st, quiet, audit.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond))
	defer rec.Close(context.Background())
	js := &jobs{running: map[string]int{}}

	newExecutor := func(host string, pid int, id string, locks ...string) *masterjob.Executor {
		ex, err := masterjob.New(st,
			masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
			masterjob.WithInstanceID(id),
			masterjob.WithInstanceInfo(masterjob.InstanceInfo{Host: host, PID: pid, Address: host + ".internal:8080", Version: "1.4.2"}),
			masterjob.WithInitDelay(0),
			masterjob.WithHeartbeatInterval(500*time.Millisecond),
			masterjob.WithTolerance(6*time.Second),
			masterjob.WithCheckMasterInterval(time.Second),
			masterjob.WithLogger(quiet),
			masterjob.WithObserver(rec),
		)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range locks {
			if err := ex.StartMaster(l, js.job(l)); err != nil {
				t.Fatal(err)
			}
		}
		return ex
	}
	ex1 := newExecutor("billing-1", 4121, "billing-1-4121-9f3a2c", lockName, "REPORT-MAILER", "INVOICE-EXPORT")
	ex2 := newExecutor("billing-2", 3877, "billing-2-3877-51be07", lockName, "REPORT-MAILER", "INVOICE-EXPORT", "CACHE-WARMER")
	executors := []*masterjob.Executor{ex1, ex2}
	masterOf := func(lock string) []string {
		var ids []string
		for _, ex := range executors {
			for _, l := range ex.Masters() {
				if l.Lock == lock {
					ids = append(ids, ex.InstanceID())
				}
			}
		}
		return ids
	}

	api, err := controlapi.New(st, controlapi.WithToken(apiToken), controlapi.WithTokenForReads(), controlapi.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	seen := &requestLog{}
	srv := httptest.NewServer(seen.wrap(httpserver.New(httpserver.Config{
		API:       api,
		Ready:     func(context.Context) error { return ex1.Ready() },
		Dashboard: []dashboard.Option{dashboard.WithTitle("billing · production")},
	})))
	defer srv.Close()
	post := func(action, lock, reason string) {
		t.Helper()
		body, _ := json.Marshal(controlapi.ControlRequest{LockName: lock, Reason: reason})
		req, _ := http.NewRequest("POST", srv.URL+"/api/mastercontrols/"+action, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+apiToken)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s %q: status %d", action, lock, res.StatusCode)
		}
	}

	// A lock an operator disabled before it ever ran.
	post("disable", "INVOICE-EXPORT", "waiting for new SFTP credentials from the bank")

	runCtx, stopRun := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	stopExecutors := func() {
		stopRun()
		runs.Wait()
	}
	defer stopExecutors()
	start := func(ex *masterjob.Executor) {
		runs.Go(func() {
			if err := ex.Run(runCtx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	start(ex1)
	waitFor(t, 5*time.Second, "billing-1 to become master of two locks", func() bool { return len(ex1.Masters()) == 2 })
	start(ex2)
	waitFor(t, 5*time.Second, "billing-2 to become master of CACHE-WARMER", func() bool { return len(ex2.Masters()) == 1 })

	// The browser.
	ctx, stopBrowser := newBrowser(t, execPath)
	defer stopBrowser()
	// Start the browser, then watch for exceptions, dialogs (an injected
	// alert would open one) and CSP violations from the first document on.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	var (
		problemsMu sync.Mutex
		problems   []string
	)
	problem := func(s string) {
		problemsMu.Lock()
		problems = append(problems, s)
		problemsMu.Unlock()
	}
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			problem(fmt.Sprintf("JavaScript exception: %s (line %d)", d.Text, d.LineNumber))
		}
	}()
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			problem("JavaScript dialog opened: " + ev.Message)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	_, err = chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener('securitypolicyviolation',
			e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));`,
	})
	if err != nil {
		t.Fatal(err)
	}

	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// until waits for a JavaScript condition on the page.
	until := func(what, expr string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
		if err != nil {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
			problemsMu.Lock()
			seen := strings.Join(problems, "\n")
			problemsMu.Unlock()
			t.Fatalf("waiting for %s: %v\npage:\n%s\nproblems:\n%s", what, err, text, seen)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluating %s: %v", expr, err)
		}
		return s
	}
	row := func(lock string) string { return fmt.Sprintf(`document.querySelector('tr[data-lock=%q]')`, lock) }

	// Without a token the API refuses the reads: the page says so.
	step("loading the page", chromedp.Navigate(srv.URL+"/"))
	until("the token-required message", `document.getElementById('conn').dataset.state === 'auth' &&
		document.getElementById('banner').textContent.includes('Token required')`)
	if title := eval(`document.title`); title != "billing · production · masterjob" {
		t.Errorf("title %q", title)
	}

	// A wrong token gets a clear message; the right one shows the locks.
	step("entering a wrong token",
		chromedp.SendKeys(chromedp.ID("token"), "wrong-token"),
		chromedp.Click(chromedp.ID("token-save")))
	until("the token-refused message", `document.getElementById('banner').textContent.includes('Token refused')`)
	step("entering the token",
		chromedp.SendKeys(chromedp.ID("token"), apiToken),
		chromedp.Click(chromedp.ID("token-save")))
	until("the lock with its master", row(lockName)+`?.dataset.state === 'master'`)
	if got := eval(`sessionStorage.getItem('masterjob.token')`); got != apiToken {
		t.Errorf("token in sessionStorage: %q", got)
	}
	want := masterOf(lockName)
	if len(want) != 1 {
		t.Fatalf("masters of %s in Go: %v", lockName, want)
	}
	if got := eval(row(lockName) + `.dataset.master`); got != want[0] {
		t.Errorf("page shows master %q, executors say %q", got, want[0])
	}
	masterText := eval(row(lockName) + `.querySelector('td.master').textContent`)
	if !strings.Contains(masterText, "pid 4121") && !strings.Contains(masterText, "pid 3877") {
		t.Errorf("master cell %q lacks host and pid", masterText)
	}
	until("a running lease countdown", row(lockName)+`.querySelector('.lease-text').textContent.endsWith(' s left')`)
	until("the disabled lock", row("INVOICE-EXPORT")+`?.dataset.state === 'disabled' &&
		`+row("INVOICE-EXPORT")+`.querySelector('td.control').textContent.includes('waiting for new SFTP credentials')`)
	until("the history", `document.querySelectorAll('#history-body tr').length >= 4`)
	until("the banner to go", `document.getElementById('banner').hidden`)

	// Disable: the dialog asks for a reason; the job stops.
	step("clicking Disable", chromedp.Click(chromedp.CSS(`tr[data-lock="JOB-SCHEDULER"] button.btn-disable`)))
	until("the disable dialog", `document.getElementById('confirm').open`)
	step("confirming without a reason", chromedp.Click(chromedp.ID("confirm-ok")))
	until("the reason-required message", `!document.getElementById('confirm-error').hidden`)
	step("giving a reason and confirming",
		chromedp.SendKeys(chromedp.ID("confirm-reason"), "nightly batch moved to the new cluster"),
		chromedp.Click(chromedp.ID("confirm-ok")))
	waitFor(t, 5*time.Second, "the job to stop", func() bool { return js.count(lockName) == 0 && len(masterOf(lockName)) == 0 })
	states, err := st.Locks(context.Background(), lockName)
	if err != nil || !states[0].Disabled || states[0].Reason != "nightly batch moved to the new cluster" {
		t.Fatalf("store after disable: %+v, %v", states, err)
	}
	until("the lock shown disabled", row(lockName)+`.dataset.state === 'disabled' &&
		`+row(lockName)+`.querySelector('td.control').textContent.includes('nightly batch moved to the new cluster')`)
	if eval(`document.getElementById('confirm').open ? 'open' : 'closed'`) != "closed" {
		t.Error("the dialog stayed open")
	}
	time.Sleep(time.Second) // nobody takes a disabled lock over
	if n := js.count(lockName); n != 0 {
		t.Fatalf("%d jobs of the disabled lock run", n)
	}

	// Enable: one instance becomes master again.
	step("clicking Enable", chromedp.Click(chromedp.CSS(`tr[data-lock="JOB-SCHEDULER"] button.btn-enable`)))
	until("the enable dialog", `document.getElementById('confirm').open`)
	step("confirming", chromedp.SendKeys(chromedp.ID("confirm-reason"), "migration done"), chromedp.Click(chromedp.ID("confirm-ok")))
	waitFor(t, 8*time.Second, "a master again", func() bool { return js.count(lockName) == 1 && len(masterOf(lockName)) == 1 })
	until("the lock shown with its master", row(lockName)+`.dataset.state === 'master' && `+row(lockName)+`.dataset.master !== ''`)
	if got, want := eval(row(lockName)+`.dataset.master`), masterOf(lockName)[0]; got != want {
		t.Errorf("page shows master %q, executors say %q", got, want)
	}
	until("the enable in the history", `[...document.querySelectorAll('#history-body tr')].some(r => r.dataset.kind === 'enabled')`)
	if n := js.count(lockName); n != 1 {
		t.Fatalf("%d jobs of the lock run after enable, want 1", n)
	}

	// The history of one lock.
	step("filtering the history", chromedp.Click(chromedp.CSS(`tr[data-lock="JOB-SCHEDULER"] button.lock-name`)))
	until("the filtered history", `!document.getElementById('history-filter').hidden &&
		[...document.querySelectorAll('#history-body tr')].length > 0 &&
		[...document.querySelectorAll('#history-body tr .lock-name')].every(b => b.textContent === 'JOB-SCHEDULER')`)
	kinds := eval(`[...document.querySelectorAll('#history-body tr')].map(r => r.dataset.kind).join(',')`)
	for _, k := range []string{"acquired", "disabled", "released", "enabled"} {
		if !strings.Contains(kinds, k) {
			t.Errorf("history of %s (%s) lacks %q", lockName, kinds, k)
		}
	}
	step("showing every lock", chromedp.Click(chromedp.ID("history-all")))
	until("the full history", `document.getElementById('history-filter').hidden &&
		[...document.querySelectorAll('#history-body tr .lock-name')].some(b => b.textContent === 'CACHE-WARMER')`)

	// Lock names and reasons are user input: shown as text, never markup.
	const evilLock, evilReason = `<img src=x onerror=alert(1)>`, `<b>bold</b> & "quoted"`
	post("disable", evilLock, evilReason)
	until("the lock with markup in its name", row(evilLock)+` !== null`)
	if got := eval(row(evilLock) + `.querySelector('.lock-name').textContent`); got != evilLock {
		t.Errorf("lock name shown as %q", got)
	}
	if !strings.Contains(eval(row(evilLock)+`.querySelector('td.control').textContent`), evilReason) {
		t.Error("the reason is not shown verbatim")
	}
	if n := eval(`String(document.querySelectorAll('img, b').length)`); n != "0" {
		t.Errorf("%s elements made from user input", n)
	}

	// Invisible characters in a reason are shown escaped: a right-to-left
	// override cannot make it read as another text.
	const bidiLock, bidiReason = "BIDI-REASON", "ok ‮gnillib-dorp‬ ⁦x⁩ zero​width"
	const bidiShown = "ok [U+202E]gnillib-dorp[U+202C] [U+2066]x[U+2069] zero[U+200B]width"
	post("disable", bidiLock, bidiReason)
	until("the lock with the bidi reason", row(bidiLock)+` !== null`)
	for _, where := range []string{
		row(bidiLock) + `.querySelector('td.control')`,
		`[...document.querySelectorAll('#history-body tr')].find(r => r.querySelector('.lock-name').textContent === 'BIDI-REASON').querySelector('td.reason')`,
	} {
		until("the escaped reason", where+`?.textContent.includes(`+jsString(bidiShown)+`)`)
		if got := eval(where + `.textContent`); strings.ContainsAny(got, "\u202E\u202C\u2066\u2069\u200B") {
			t.Errorf("%s shows the invisible characters raw: %q", where, got)
		}
	}

	// The store goes away: the page says so.
	stopExecutors()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	until("the store-unavailable state", `document.getElementById('conn').dataset.state === 'error' &&
		document.getElementById('banner').textContent.includes('Store unavailable')`)

	if v := eval(`JSON.stringify(window.__csp)`); v != "[]" {
		t.Errorf("CSP violations: %s", v)
	}
	// The token went in headers only, never in a URL.
	if uris := seen.containing(apiToken); len(uris) > 0 {
		t.Errorf("the token appeared in request URLs or bodies: %q", uris)
	}
	problemsMu.Lock()
	defer problemsMu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
}

// requestLog records the URL and the body of every request a handler
// gets.
type requestLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		l.mu.Lock()
		l.seen = append(l.seen, r.Method+" "+r.RequestURI+" "+string(body))
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// containing returns the requests whose URL or body contain s.
func (l *requestLog) containing(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.seen {
		if strings.Contains(r, s) {
			out = append(out, r)
		}
	}
	return out
}

func (l *requestLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestBrowserTokenFormWithoutScript: in a browser that runs no script,
// entering the token and submitting its form (Enter, then the Save button)
// puts the token in no URL and no request body.
func TestBrowserTokenFormWithoutScript(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	execPath := chromium(t)
	ms := memstore.New()
	api, err := controlapi.New(ms, controlapi.WithToken(apiToken), controlapi.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	seen := &requestLog{}
	srv := httptest.NewServer(seen.wrap(httpserver.New(httpserver.Config{API: api})))
	defer srv.Close()
	ctx, stop := newBrowser(t, execPath, chromedp.Flag("blink-settings", "scriptEnabled=false"))
	defer stop()

	for _, submit := range []struct {
		what   string
		action chromedp.Action[chromedp.Void]
	}{
		{"pressing Enter", chromedp.SendKeys(chromedp.ID("token"), kb.Enter)},
		{"clicking Save", chromedp.Click(chromedp.ID("token-save"))},
	} {
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
			t.Fatalf("loading the page: %v", err)
		}
		before := len(seen.all())
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), apiToken), submit.action); err != nil {
			t.Fatalf("entering the token and %s: %v", submit.what, err)
		}
		// The form went somewhere: wait for its request.
		waitFor(t, 10*time.Second, "the form's request", func() bool { return len(seen.all()) > before })
		time.Sleep(200 * time.Millisecond) // and for anything after it
		// If the form navigated, the browser may still be between two
		// documents ("Not attached to an active page"): ask until it
		// answers.
		var cur string
		var lastErr error
		waitFor(t, 10*time.Second, "the page's navigation history", func() bool {
			hist, err := chromedp.Call(ctx, page.GetNavigationHistory, cdp.Empty{})
			if err != nil {
				lastErr = err
				return false
			}
			cur = hist.Entries[hist.CurrentIndex].URL
			return true
		})
		if lastErr != nil {
			t.Logf("%s: the navigation history was unavailable for a moment: %v", submit.what, lastErr)
		}
		t.Logf("%s: the browser went to %s; requests %q", submit.what, cur, seen.all()[before:])
		if strings.Contains(cur, apiToken) {
			t.Errorf("%s: the token is in the address: %s", submit.what, cur)
		}
	}
	if got := seen.containing(apiToken); len(got) > 0 {
		t.Errorf("the token reached the server in a URL or a body: %q", got)
	}
}

// TestBrowserDNSRebinding: a name pointed at 127.0.0.1 (Chromium's
// host-resolver-rules stand for the attacker's DNS) is, to the browser,
// an origin of its own, whose scripts may send same-origin requests to a
// loopback listener. Without a token, the listener refuses them (421) and
// the dashboard page too; through localhost the page works and a disable
// from it goes through.
func TestBrowserDNSRebinding(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	execPath := chromium(t)
	ms := memstore.New()
	api, err := controlapi.New(ms, controlapi.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.New(httpserver.Config{API: api}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	ctx, stop := newBrowser(t, execPath, chromedp.Flag("host-resolver-rules", "MAP rebind.attacker.test 127.0.0.1"))
	defer stop()
	eval := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("evaluating %s: %v", expr, err)
		}
		return s
	}
	// What the attacker's script does, in its own origin.
	const disable = `fetch('/api/mastercontrols/disable', {method: 'POST', headers: {'Content-Type': 'application/json'},
		body: JSON.stringify({lockName: 'prod-billing', reason: 'pwned'})}).then(r => String(r.status))`

	evil := fmt.Sprintf("http://rebind.attacker.test:%d/", port)
	if err := chromedp.Do(ctx, chromedp.Navigate(evil)); err != nil {
		t.Fatalf("loading %s: %v", evil, err)
	}
	if text := eval(`document.body.innerText`); !strings.Contains(text, "421") {
		t.Errorf("the dashboard at %s: %q, want a 421 refusal", evil, text)
	}
	if got := eval(disable); got != "421" {
		t.Errorf("disable from %s: status %s, want 421", evil, got)
	}
	if got := eval(`fetch('/api/mastercontrols').then(r => String(r.status))`); got != "421" {
		t.Errorf("read from %s: status %s, want 421", evil, got)
	}
	states, err := ms.Locks(context.Background(), "prod-billing")
	if err != nil || states[0].Disabled {
		t.Fatalf("after the rebinding page's request: %+v, %v", states, err)
	}

	local := fmt.Sprintf("http://localhost:%d/", port)
	if err := chromedp.Do(ctx, chromedp.Navigate(local)); err != nil {
		t.Fatalf("loading %s: %v", local, err)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('conn')?.dataset.state === 'live'`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		t.Fatalf("the dashboard at %s did not go live: %v", local, err)
	}
	if got := eval(disable); got != "200" {
		t.Errorf("disable from %s: status %s, want 200", local, got)
	}
	if states, err := ms.Locks(context.Background(), "prod-billing"); err != nil || !states[0].Disabled {
		t.Errorf("after the same-origin disable: %+v, %v", states, err)
	}
}

// newBrowser starts a headless Chromium and returns the context of its
// tab and the func that stops the browser (called at the latest when the
// test ends). opts add flags.
func newBrowser(t *testing.T, execPath string, opts ...chromedp.ExecAllocatorOption) (context.Context, func()) {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}, opts...)...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	stop := func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	}
	t.Cleanup(stop)
	return ctx, stop
}

// screenshot saves the page as docs/dashboard.png.
func screenshot(t *testing.T, ctx context.Context, eval func(string) string) {
	t.Helper()
	// No toast, no hover highlight: a clean picture.
	eval(`document.getElementById('toast').hidden = true; ''`)
	_, err := chromedp.Call(ctx, input.DispatchMouseEvent, input.DispatchMouseEventParams{Type: input.DispatchMouseEventTypeMouseMoved, X: 1, Y: 1})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the countdown bars settle
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join("..", "docs", "dashboard.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}
