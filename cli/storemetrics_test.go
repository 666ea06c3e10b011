package cli

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The /metrics of serve (and of run) carry the store's view of every
// lock: whether it has a master, is disabled, its token and TTL.
func TestStoreMetrics(t *testing.T) {
	store := sqliteURL(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	r := startMain(t, nil, args("run", "--lock", "L", "--store", store, timing, "--http", "127.0.0.1:0", "--",
		"sh", "-c", `echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 600`, pidFile)...)
	runBase := r.url(t)
	waitPidFile(t, pidFile, 10*time.Second)
	if code := mainEnv(nil, "disable", "--store", store, "--lock", "OFF", "--reason", "r"); code.code != ExitOK {
		t.Fatalf("disable: %+v", code)
	}
	s := startMain(t, nil, "serve", "--http", "127.0.0.1:0", "--store", store)
	base := s.url(t)
	waitHTTP(t, base+"/readyz", 200, 10*time.Second)

	for _, b := range []string{base, runBase} {
		for _, line := range []string{
			`masterjob_lock_has_master{lock="L"} 1`,
			`masterjob_lock_disabled{lock="L"} 0`,
			`masterjob_lock_token{lock="L"} 1`,
			`masterjob_lock_has_master{lock="OFF"} 0`,
			`masterjob_lock_disabled{lock="OFF"} 1`,
			`masterjob_lock_token{lock="OFF"} 0`,
			`masterjob_lock_ttl_seconds{lock="OFF"} 0`,
			`masterjob_store_view_up 1`,
		} {
			waitMetric(t, b, line+"\n", 5*time.Second)
		}
		_, body := httpGet(t, b+"/metrics")
		ttl := grepLines(body, `masterjob_lock_ttl_seconds{lock="L"}`)
		if ttl == "" || strings.HasSuffix(ttl, " 0") {
			t.Errorf("%s: the master's TTL: %q", b, ttl)
		}
	}
	// A change shows within the cache interval.
	if r := mainEnv(nil, "disable", "--server", base, "--lock", "L", "--reason", "stop"); r.code != ExitOK {
		t.Fatalf("disable: exit %d, %s", r.code, r.stderr)
	}
	waitMetric(t, base, `masterjob_lock_disabled{lock="L"} 1`+"\n", 5*time.Second)
	waitMetric(t, base, `masterjob_lock_has_master{lock="L"} 0`+"\n", 5*time.Second)
	if code, _ := httpGet(t, base+"/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	s.stop(t)
	r.stop(t)
}
