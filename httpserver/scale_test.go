package httpserver_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store/memstore"
)

// envScaleLocks sets the number of locks of TestMetricsScrapeAtScale
// (default 10,000).
const envScaleLocks = "MASTERJOB_SCALE_LOCKS"

// transition matches a sample of masterjob_transitions_total: its kind and
// reason.
var transition = regexp.MustCompile(`^masterjob_transitions_total\{kind="([^"]*)",lock="[^"]*",reason="([^"]*)"\}`)

// TestMetricsScrapeAtScale: one instance master of 10,000 locks (a
// memstore; the metrics of prom.NewObserver with WithLocks of every lock,
// the store's view of every lock (prom.NewStoreCollector), the Go and
// process collectors, as `masterjob run --http` registers them), scraped
// over a real listener: it counts the series per family and times the
// scrapes. The series of the locks are 2 per lock (is_master,
// lease_ttl_seconds), 1 per lock acquired (transitions_total) and 4 per
// lock of the store's view (lock_has_master, lock_disabled, lock_token,
// lock_ttl_seconds); the rest does not grow with the locks.
// docs/benchmarks.md has the figures.
func TestMetricsScrapeAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test skipped in -short mode")
	}
	n := 10000
	if v := os.Getenv(envScaleLocks); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", envScaleLocks, v)
		}
	}
	locks := make([]string, n)
	for i := range locks {
		locks[i] = fmt.Sprintf("tenant-%05d", i)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	obs, err := prom.NewObserver(reg, prom.WithLocks(locks...))
	if err != nil {
		t.Fatal(err)
	}
	ms := memstore.New()
	view, err := prom.NewStoreCollector(ms.Reopen())
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(view)
	ex, err := masterjob.New(ms,
		masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInitDelay(0), masterjob.WithLogger(slog.New(slog.DiscardHandler)), masterjob.WithObserver(obs),
		// A long lease: this test measures the scrape, and a CI machine
		// running other packages' tests under the race detector beside it
		// once starved the renewals of 10,000 locks past a 5s lease (9,602
		// masterships lost, each a transitions_total series more).
		masterjob.WithHeartbeatInterval(2*time.Second), masterjob.WithTolerance(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	idle := masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error { <-ctx.Done(); return nil })
	for _, l := range locks {
		if err := ex.StartMaster(l, idle); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = ex.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for len(ex.Masters()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("master of %d of %d locks after 60s", len(ex.Masters()), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // a renewal: lease_ttl_seconds set

	srv := httptest.NewServer(httpserver.New(httpserver.Config{Gatherer: reg}))
	defer srv.Close()
	scrape := func() (families map[string]int, samples, bytes int, took time.Duration) {
		t.Helper()
		t0 := time.Now()
		resp, err := http.Get(srv.URL + httpserver.MetricsPath)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took = time.Since(t0)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %d, %v", resp.StatusCode, err)
		}
		families = map[string]int{}
		sc := bufio.NewScanner(strings.NewReader(string(body)))
		for sc.Scan() {
			line := sc.Text()
			if line == "" || line[0] == '#' {
				continue
			}
			name := line[:strings.IndexAny(line, "{ ")]
			families[name]++
			samples++
			if m := transition.FindStringSubmatch(line); m != nil && m[1] != "acquired" {
				families["lost "+m[1]+" "+m[2]]++ // kind, reason
			}
		}
		return families, samples, len(body), took
	}
	scrape() // warm up
	var times []time.Duration
	var families map[string]int
	var samples, size int
	for range 5 {
		var took time.Duration
		families, samples, size, took = scrape()
		times = append(times, took)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	for f, c := range families {
		if strings.HasPrefix(f, "lost ") {
			t.Errorf("masterships lost during the test (%s): %d", f, c)
		}
	}
	perLock := []string{"masterjob_is_master", "masterjob_lease_ttl_seconds", "masterjob_transitions_total",
		"masterjob_lock_has_master", "masterjob_lock_disabled", "masterjob_lock_token", "masterjob_lock_ttl_seconds"}
	lockSeries := 0
	var counts []string
	for _, f := range perLock {
		lockSeries += families[f]
		counts = append(counts, fmt.Sprintf("%s %d", strings.TrimPrefix(f, "masterjob_"), families[f]))
		if families[f] != n {
			t.Errorf("%s: %d series, want %d", f, families[f], n)
		}
	}
	t.Logf("%d locks: %d samples (%d of them per lock: %s; %d others), %d bytes; scrape time min %v, median %v, max %v",
		n, samples, lockSeries, strings.Join(counts, ", "), samples-lockSeries, size, times[0], times[len(times)/2], times[len(times)-1])
	if others := samples - lockSeries; others > 300 {
		t.Errorf("%d series that are not per lock", others)
	}
	if times[len(times)/2] > 5*time.Second {
		t.Errorf("a scrape takes %v (median)", times[len(times)/2])
	}
}
