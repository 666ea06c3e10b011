//go:build linux

package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// envFloodDuration sets how long TestProcessAPIFlood* flood the control
// API, as a Go duration: the figure is 20s. The default keeps the
// normal suite short.
const envFloodDuration = "MASTERJOB_TEST_FLOOD_DURATION"

// Shape of the flood: as many parallel clients as the attack that made a
// master demote itself, each sending its next request as soon as the last
// one was answered.
const (
	floodClients         = 200
	floodDefaultDuration = 4 * time.Second
	floodPath            = "/api/mastercontrols/history?limit=1000"
	// floodHistory is how many history entries the store holds, so that
	// each request reads (and encodes) a full page of 1000.
	floodHistory = 1500
	// floodHeartbeat is the master's heartbeat; its lease is procTolerance.
	floodHeartbeat = 250 * time.Millisecond
)

func floodDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(envFloodDuration)
	if v == "" {
		return floodDefaultDuration
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("$%s %q: want a positive Go duration such as 20s", envFloodDuration, v)
	}
	return d
}

func TestProcessAPIFloodSQLite(t *testing.T) { testAPIFlood(t, sqliteURL(t)) }

func TestProcessAPIFloodPostgres(t *testing.T) { testAPIFlood(t, postgresSchemaURL(t)) }

// testAPIFlood floods the control API of a master (`masterjob run --http`,
// a real process, lease 1s, heartbeat 250ms) with parallel unauthenticated
// reads of a full history page, and checks that the master neither missed
// a renewal nor demoted itself (its metrics), that its child is the one it
// started (no restart), and that excess requests were refused quickly with
// 503 and Retry-After while the others were served.
func testAPIFlood(t *testing.T, storeURL string) {
	dur := floodDuration(t)
	seedHistory(t, storeURL, floodHistory)

	c := newProcCluster(t, storeURL)
	c.httpToken = "flood-test-token-0123456789" // disable and enable need it; reads stay open
	// A 1s lease renewed every 250ms: the trust window (750ms) spans three
	// renewals, and each may take up to a heartbeat.
	c.flags = []string{"--init-delay", "0", "--heartbeat-interval", floodHeartbeat.String(), "--tolerance", procTolerance.String(),
		"--check-master-interval", procCheckInterval.String()}
	c.start()
	child, runner := c.waitMaster(15 * time.Second)
	base := runner.url(t)
	waitHTTP(t, base+"/readyz", http.StatusOK, 10*time.Second)
	waitMetric(t, base, isMasterMetric(c.lock, 1), 5*time.Second)
	before := scrape(t, base)

	tr := &http.Transport{MaxIdleConns: floodClients, MaxIdleConnsPerHost: floodClients, MaxConnsPerHost: floodClients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var (
		mu       sync.Mutex
		codes    = map[int]int{}
		errs     int
		lat503   []time.Duration // how long each 503 took
		noRetry  atomic.Int64    // 503s without Retry-After
		firstErr error
		wg       sync.WaitGroup
	)
	for range floodClients {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+floodPath, nil)
				start := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						errs++
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
					noRetry.Add(1)
				}
				mu.Lock()
				codes[resp.StatusCode]++
				if resp.StatusCode == http.StatusServiceUnavailable {
					lat503 = append(lat503, took)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	after := scrape(t, base)

	failures := after.sum("masterjob_renewal_failures_total", "") - before.sum("masterjob_renewal_failures_total", "")
	demoted := after.sum("masterjob_transitions_total", `kind="demoted"`) - before.sum("masterjob_transitions_total", `kind="demoted"`)
	lost := after.sum("masterjob_transitions_total", `kind="lost"`) - before.sum("masterjob_transitions_total", `kind="lost"`)
	slices.Sort(lat503)
	var p50, p99 time.Duration
	if n := len(lat503); n > 0 {
		p50, p99 = lat503[n/2], lat503[n*99/100]
	}
	t.Logf("flood of %d clients for %v on %s: answers %v, client errors %d (first: %v), 503 answered in %v (median), %v (p99); "+
		"renewal failures %v, demotions %v, losses %v",
		floodClients, dur, strings.SplitN(storeURL, ":", 2)[0], codes, errs, firstErr,
		p50.Round(time.Millisecond), p99.Round(time.Millisecond), failures, demoted, lost)
	if failures != 0 || demoted != 0 || lost != 0 {
		t.Errorf("under the flood the master had %v renewal failures, %v demotions and %v losses; want none", failures, demoted, lost)
	}
	if pids := c.aliveChildren(); !slices.Equal(pids, []int{child}) || len(c.children()) != 1 {
		t.Errorf("children alive after the flood %v (%d started); want only the first, %d", pids, len(c.children()), child)
	}
	if codes[http.StatusOK] == 0 {
		t.Errorf("no request was served during the flood: %v", codes)
	}
	if codes[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no request was refused as excess during the flood: %v", codes)
	}
	for code := range codes {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("answers %v: want only 200 and 503", codes)
			break
		}
	}
	if n := noRetry.Load(); n > 0 {
		t.Errorf("%d answers 503 without Retry-After", n)
	}
	if errs > 0 {
		t.Errorf("%d requests failed (first: %v)", errs, firstErr)
	}
}

// seedHistory appends n entries to the history of the store at rawURL.
func seedHistory(t *testing.T, rawURL string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := storeurl.Open(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h, ok := st.(store.History)
	if !ok {
		t.Fatalf("%T keeps no history", st)
	}
	events := make([]store.Event, n)
	for i := range events {
		events[i] = store.Event{Lock: fmt.Sprintf("SEED-%d", i%10), Kind: store.EventDisabled, Instance: "seed",
			Reason: strings.Repeat("a reason of some length ", 4), Remote: "192.0.2.1:1234"}
	}
	if err := h.AppendEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
}

// metricsText is a scrape of /metrics.
type metricsText string

func scrape(t *testing.T, base string) metricsText {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d", base, code)
	}
	return metricsText(body)
}

// sum adds the values of the samples of metric name whose labels contain
// label ("" for all).
func (m metricsText) sum(name, label string) float64 {
	var total float64
	sc := bufio.NewScanner(strings.NewReader(string(m)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || !strings.Contains(line, label) {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != '{' && rest[0] != ' ' {
			continue // another metric with this prefix
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				total += v
			}
		}
	}
	return total
}
