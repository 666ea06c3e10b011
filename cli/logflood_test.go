package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/masterjob/masterjob/internal/faultproxy"
)

// floodDuration is how long the log flood tests flood:
// $MASTERJOB_LOGFLOOD_SECONDS (to measure over 5 s or 20 s), else 2 s.
func logFloodDuration(t *testing.T) time.Duration {
	if v := os.Getenv("MASTERJOB_LOGFLOOD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("MASTERJOB_LOGFLOOD_SECONDS=%q: want a number of seconds", v)
		}
		return time.Duration(n) * time.Second
	}
	return 2 * time.Second
}

// flood sends requests made by mk from 8 clients until d has passed, and
// returns how many were answered.
func flood(t *testing.T, d time.Duration, mk func() *http.Request) int64 {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				resp, err := client.Do(mk())
				if err != nil {
					continue
				}
				_ = resp.Body.Close()
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load()
}

// logSince returns the log written after offset: its lines and bytes.
func logSince(log string, offset int) (lines, size int) {
	s := log[offset:]
	return strings.Count(s, "\n"), len(s)
}

// maxFloodLines bounds the lines a flood of d may log: each kind of line
// (refused request, failed store call, HTTP error, not ready, ...) at most
// 10 and a summary per 10 s window, for the few kinds such a flood
// touches, plus the lines of the events themselves (an outage, a
// demotion, a recovery).
func maxFloodLines(d time.Duration) int {
	windows := int(d/(10*time.Second)) + 1
	return 60 + 8*11*windows
}

// A flood of refused requests (no token on disable: each a WARN in the
// control API) logs a bounded number of lines, however many requests.
func TestLogFloodRefusedRequests(t *testing.T) {
	d := logFloodDuration(t)
	s := startMain(t, map[string]string{EnvHTTPToken: "flood-token-0123456789"},
		"serve", "--http", "127.0.0.1:0", "--store", sqliteURL(t), "--log-format", "json")
	base := s.url(t)
	waitHTTP(t, base+"/readyz", 200, 10*time.Second)
	offset := len(s.stderr.String())
	body := []byte(`{"lockName":"L","reason":"x"}`)
	n := flood(t, d, func() *http.Request {
		req, _ := http.NewRequest("POST", base+"/api/mastercontrols/disable", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return req
	})
	s.stop(t)
	lines, size := logSince(s.stderr.String(), offset)
	t.Logf("%v of refused requests: %d requests, %d log lines, %d bytes", d, n, lines, size)
	if lines > maxFloodLines(d) {
		t.Errorf("%d requests refused in %v logged %d lines (%d bytes), want at most %d",
			n, d, lines, size, maxFloodLines(d))
	}
	if !strings.Contains(s.stderr.String(), `"msg":"repeated log lines suppressed"`) {
		t.Errorf("no summary of the suppressed lines")
	}
}

// A store outage under a flood of reads (each a failed store call) and of
// probes, while run --http's executor retries, logs a bounded number of
// lines.
func TestLogFloodStoreOutage(t *testing.T) {
	d := logFloodDuration(t)
	store := postgresSchemaURL(t)
	u, err := url.Parse(store)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	q := u.Query()
	q.Set("connect_timeout", "1")
	u.RawQuery = q.Encode()

	s := startMain(t, nil, args("run", "--lock", "L", "--store", u.String(), timing, "--log-format", "json",
		"--http", "127.0.0.1:0", "--", "sleep", "600")...)
	base := s.url(t)
	waitHTTP(t, base+"/readyz", 200, 20*time.Second)
	offset := len(s.stderr.String())
	proxy.Cut(faultproxy.CutReset)
	var i atomic.Int64
	n := flood(t, d, func() *http.Request {
		path := "/api/mastercontrols"
		switch i.Add(1) % 3 {
		case 1:
			path = "/readyz"
		case 2:
			path = "/api/mastercontrols/history"
		}
		req, _ := http.NewRequest("GET", base+path, nil)
		return req
	})
	proxy.Restore()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if code, _ := httpGet(t, base+"/readyz"); code == 200 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	lines, size := logSince(s.stderr.String(), offset)
	s.stop(t)
	t.Logf("%v of store outage under a flood of reads: %d requests, %d log lines, %d bytes", d, n, lines, size)
	if lines > maxFloodLines(d) {
		t.Errorf("%d requests in %v of outage logged %d lines (%d bytes), want at most %d",
			n, d, lines, size, maxFloodLines(d))
	}
}
