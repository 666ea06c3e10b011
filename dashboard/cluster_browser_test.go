package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/dashboard"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// tab drives one browser tab.
type tab struct {
	t   *testing.T
	ctx context.Context
}

func (p tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

func (p tab) until(what, expr string, within time.Duration) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil {
		text, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		p.t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, text)
	}
}

func (p tab) eval(expr string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return s
}

func (p tab) evalFloat(expr string) float64 {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[float64](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// TestBrowserCluster: three executors on a memstore (a store with a member
// list, hand-offs and pushes) behind the composed server, the page polling
// only once an hour: whatever changes on the page without a reload comes
// from the event stream. The page shows the standbys of each lock and
// flags the lock nobody could take over, lists the instances with their
// masterships, hands a lock over to the instance chosen in its dialog,
// follows a disable made elsewhere, survives a broken stream, and falls
// back to polling on a server without the stream.
func TestBrowserCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	execPath := chromium(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ms := memstore.New()
	rec := audit.NewRecorder(ms, quiet, audit.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond))
	defer rec.Close(context.Background())
	js := &jobs{running: map[string]int{}}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stopExecutors := func() { cancel(); wg.Wait() }
	defer stopExecutors()
	execs := map[string]*masterjob.Executor{}
	start := func(id string, locks ...string) {
		ex, err := masterjob.New(ms.Reopen(),
			masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
			masterjob.WithInstanceID(id),
			masterjob.WithInstanceInfo(masterjob.InstanceInfo{Host: "host-" + id, PID: 100, Address: id + ".internal:8080", Version: "1.5.0"}),
			masterjob.WithInitDelay(0),
			masterjob.WithHeartbeatInterval(200*time.Millisecond),
			masterjob.WithTolerance(3*time.Second),
			masterjob.WithCheckMasterInterval(500*time.Millisecond),
			masterjob.WithLogger(quiet),
			masterjob.WithObserver(rec),
			masterjob.WithBalance(masterjob.BalanceConfig{Off: true}),
		)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range locks {
			if err := ex.StartMaster(l, js.job(l)); err != nil {
				t.Fatal(err)
			}
		}
		execs[id] = ex
		wg.Go(func() {
			if err := ex.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	masterOf := func(lock string) string {
		for id, ex := range execs {
			for _, l := range ex.Masters() {
				if l.Lock == lock {
					return id
				}
			}
		}
		return ""
	}
	start("alpha", lockName, "SOLO")
	waitFor(t, 5*time.Second, "alpha to master both locks", func() bool { return len(execs["alpha"].Masters()) == 2 })
	start("beta", lockName)
	start("gamma", lockName)
	waitFor(t, 5*time.Second, "three members", func() bool {
		m, _ := ms.Members(context.Background(), store.MemberFilter{})
		return len(m) == 3
	})

	api, err := controlapi.New(ms, controlapi.WithToken(apiToken), controlapi.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.New(httpserver.Config{API: api, Dashboard: []dashboard.Option{dashboard.WithRefreshInterval(time.Hour)}}))
	defer srv.Close()

	bctx, stopBrowser := newBrowser(t, execPath)
	defer stopBrowser()
	p := tab{t, bctx}
	row := func(lock string) string { return fmt.Sprintf(`document.querySelector('tr[data-lock=%q]')`, lock) }
	p.do("loading the page", chromedp.Navigate(srv.URL+"/"))
	p.until("the stream", `document.body.dataset.live === 'stream' && document.getElementById('conn-text').textContent === 'Live'`, 10*time.Second)
	p.do("entering the token", chromedp.SendKeys(chromedp.ID("token"), apiToken), chromedp.Click(chromedp.ID("token-save")))
	p.until("the stream with the token", `document.body.dataset.live === 'stream'`, 10*time.Second)

	// Standbys, and the lock nobody could take over.
	p.until("the standbys", row(lockName)+`?.dataset.standbys === '2' && `+row("SOLO")+`?.dataset.standbys === '0'`, 10*time.Second)
	if got := p.eval(row("SOLO") + `.querySelector('td.standbys .no-standby')?.textContent || ''`); got != "None" {
		t.Errorf("SOLO's standbys cell: %q, want the None flag", got)
	}
	if got := p.eval(row(lockName) + `.querySelector('td.standbys').textContent`); got != "2" {
		t.Errorf("%s's standbys cell: %q", lockName, got)
	}
	p.until("the no-standby card", `!document.getElementById('card-nostandby').hidden && document.getElementById('sum-nostandby').textContent === '1'`, 5*time.Second)
	// The instances, with their masterships.
	p.until("the instances", `document.querySelectorAll('#instances-body tr').length === 3 &&
		document.querySelector('#instances-body tr[data-instance="alpha"] .masterships').textContent === '2'`, 5*time.Second)

	// Hand-off to a chosen instance from the dialog.
	if m := masterOf(lockName); m != "alpha" {
		t.Fatalf("precondition: master of %s is %q", lockName, m)
	}
	p.do("clicking Hand off", chromedp.Click(chromedp.CSS(`tr[data-lock="`+lockName+`"] button.btn-handoff`)))
	p.until("the candidates", `document.getElementById('confirm').open && document.getElementById('confirm-to').dataset.loaded === '2'`, 5*time.Second)
	if opts := p.eval(`[...document.querySelectorAll('#confirm-to option')].map(o => o.value).join(',')`); opts != ",beta,gamma" {
		t.Errorf("hand-off targets %q, want any, beta, gamma", opts)
	}
	p.do("choosing gamma and confirming",
		chromedp.SetValue(chromedp.ID("confirm-to"), "gamma"),
		chromedp.SendKeys(chromedp.ID("confirm-reason"), "patching alpha"),
		chromedp.Click(chromedp.ID("confirm-ok")))
	waitFor(t, 5*time.Second, "gamma to run the job", func() bool { return masterOf(lockName) == "gamma" && js.count(lockName) == 1 })
	p.until("the new master on the page", row(lockName)+`.dataset.master === 'gamma'`, 5*time.Second)
	p.until("the hand-off in the history", `[...document.querySelectorAll('#history-body tr')].some(r => r.dataset.kind === 'handoff' &&
		r.querySelector('td.reason').textContent === 'from alpha to gamma: patching alpha')`, 5*time.Second)

	if os.Getenv(envScreenshot) == "1" {
		p.until("the history", `document.querySelectorAll('#history-body tr').length >= 4`, 5*time.Second)
		screenshot(t, bctx, p.eval)
	}

	// A change made elsewhere shows without a reload and without polling.
	events := p.evalFloat(`Number(document.body.dataset.liveEvents || 0)`)
	t0 := time.Now()
	if _, err := ms.Disable(context.Background(), "SOLO", "quiet hours", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "SOLO", Kind: store.EventDisabled, Instance: "ops", Reason: "quiet hours"}}); err != nil {
		t.Fatal(err)
	}
	p.until("an event", fmt.Sprintf(`Number(document.body.dataset.liveEvents || 0) > %v`, events), 5*time.Second)
	p.until("SOLO disabled on the page", row("SOLO")+`.dataset.disabled === 'true'`, 5*time.Second)
	t.Logf("a disable made elsewhere showed %v later", time.Since(t0).Round(time.Millisecond))
	if after := p.evalFloat(`Number(document.body.dataset.liveEvents || 0)`); after <= events {
		t.Errorf("no stream event counted (%v, then %v)", events, after)
	}

	// The stream breaks: the page polls, reconnects and catches up.
	srv.CloseClientConnections()
	p.until("polling", `document.body.dataset.live === 'polling'`, 5*time.Second)
	if _, err := ms.Enable(context.Background(), "SOLO", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "SOLO", Kind: store.EventEnabled, Instance: "ops"}}); err != nil {
		t.Fatal(err)
	}
	p.until("the stream again", `document.body.dataset.live === 'stream'`, 10*time.Second)
	p.until("SOLO enabled on the page", row("SOLO")+`.dataset.disabled === 'false'`, 10*time.Second)

	// A server without the stream: the page polls.
	plain, err := controlapi.New(plainStore{ms}, controlapi.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	psrv := httptest.NewServer(httpserver.New(httpserver.Config{API: plain, Dashboard: []dashboard.Option{dashboard.WithRefreshInterval(300 * time.Millisecond)}}))
	defer psrv.Close()
	p.do("loading the page of the server without a stream", chromedp.Navigate(psrv.URL+"/"))
	p.until("polling", `document.getElementById('conn').dataset.state === 'live' && document.body.dataset.live === 'polling' &&
		document.getElementById('conn-text').textContent === 'Live (polling)'`, 10*time.Second)
	if _, err := ms.Disable(context.Background(), "SOLO", "again", "ops"); err != nil {
		t.Fatal(err)
	}
	p.until("SOLO disabled by polling", row("SOLO")+`?.dataset.disabled === 'true'`, 5*time.Second)
	if got := p.eval(row("SOLO") + `.querySelector('td.standbys').textContent`); got != "—" {
		t.Errorf("standbys without a member list: %q", got)
	}
	if n := p.eval(`String(document.querySelectorAll('button.btn-handoff:not([hidden])').length)`); n != "0" {
		t.Errorf("%s Hand off buttons without a member list", n)
	}
	p.do("closing the page", chromedp.Navigate("about:blank"))
	stopExecutors()
}

// plainStore is a store with neither history nor member list nor pushes.
type plainStore struct{ store.Store }

// TestBrowserTenThousandLocks: the page's first render with 10,000 locks
// on 10 instances, and its search, filters and pages.
func TestBrowserTenThousandLocks(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	execPath := chromium(t)
	const n, instances = 10000, 10
	ms := memstore.New()
	ctx := context.Background()
	var all []string
	for i := range n {
		all = append(all, fmt.Sprintf("tenant-%05d", i))
	}
	for k := range instances {
		id := fmt.Sprintf("web-%02d", k)
		h := ms.Reopen()
		h.Announce(store.Member{ID: id, Info: fmt.Sprintf(`{"host":"host-%02d","pid":%d}`, k, 1000+k), Locks: all, LockSetID: "all", Masters: n / instances}, time.Hour)
		var mine []string
		for i := k; i < n; i += instances {
			mine = append(mine, all[i])
		}
		if _, err := h.Acquire(ctx, store.Holder{ID: id, Info: fmt.Sprintf(`{"host":"host-%02d","pid":%d}`, k, 1000+k)}, mine, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 100 {
		if _, err := ms.Disable(ctx, all[i], "off", "ops"); err != nil {
			t.Fatal(err)
		}
	}
	api, err := controlapi.New(ms, controlapi.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.New(httpserver.Config{API: api}))
	defer srv.Close()
	bctx, stop := newBrowser(t, execPath)
	defer stop()
	p := tab{t, bctx}

	// The first render: the best of three loads (the machine is shared).
	best := time.Hour
	for range 3 {
		p.do("loading the page", chromedp.Navigate(srv.URL+"/"))
		p.until("the first render", `performance.getEntriesByName('masterjob:first-render').length > 0`, 20*time.Second)
		ms := p.evalFloat(`performance.getEntriesByName('masterjob:first-render')[0].startTime`)
		best = min(best, time.Duration(ms*float64(time.Millisecond)))
	}
	// The target (under 1 s) is a figure of docs/benchmarks.md, measured
	// with this test alone on an idle host; beside the rest of the suite
	// under the race detector it took 1.2 s. The bound here catches what
	// would break the paging (rendering every row takes far longer).
	t.Logf("first render of 10,000 locks (a page of 100), from navigation start: best of 3 %v", best)
	if best > 3*time.Second {
		t.Errorf("first render took %v, want well under 3s (the target, on an idle host: under 1s)", best)
	}
	if got := p.eval(`document.getElementById('sum-locks').textContent`); got != strconv.Itoa(n) {
		t.Errorf("locks card %q", got)
	}
	if got := p.eval(`String(document.querySelectorAll('#locks-body tr').length)`); got != "100" {
		t.Errorf("%s rows on the first page", got)
	}
	if got := p.eval(`document.getElementById('page-text').textContent`); got != "1–100 of 10000" {
		t.Errorf("pager %q", got)
	}
	p.do("next page", chromedp.Click(chromedp.ID("page-next")))
	p.until("the second page", `document.getElementById('page-text').textContent === '101–200 of 10000' &&
		document.querySelector('#locks-body tr').dataset.lock === 'tenant-00100'`, 5*time.Second)
	p.do("searching", chromedp.SendKeys(chromedp.ID("f-match"), "TENANT-0999"))
	p.until("the matches", `document.querySelectorAll('#locks-body tr').length === 10 &&
		[...document.querySelectorAll('#locks-body tr')].every(r => r.dataset.lock.startsWith('tenant-0999')) &&
		document.getElementById('f-count').textContent === '10 locks match'`, 5*time.Second)
	// As a person would: clear the search, pick a state.
	set := func(id, value, event string) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = %q; e.dispatchEvent(new Event(%q)); return true; })()`, id, value, event)
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](js)); err != nil {
			t.Fatal(err)
		}
	}
	set("f-match", "", "input")
	set("f-state", "disabled", "change")
	p.until("the disabled ones", `document.getElementById('f-count').textContent === '100 locks match' &&
		[...document.querySelectorAll('#locks-body tr')].every(r => r.dataset.disabled === 'true')`, 5*time.Second)
	set("f-state", "", "change")
	set("f-instance", "web-03", "change")
	p.until("web-03's locks", `document.getElementById('f-count').textContent === '1000 locks match' &&
		[...document.querySelectorAll('#locks-body tr')].every(r => r.dataset.master === 'web-03')`, 5*time.Second)
	if got := p.eval(`document.querySelector('#instances-body tr[data-instance="web-03"] .masterships').textContent`); got != "1000" {
		t.Errorf("web-03's masterships %q", got)
	}
}
