package controlapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/store/sqlite"
)

// jobLog is a StartStop job shared by several executors: it records starts
// and stops and fails the test if two instances run at once.
type jobLog struct {
	t       *testing.T
	mu      sync.Mutex
	running map[string]int64 // instance -> token
	starts  int
	stops   []time.Time
}

func newJobLog(t *testing.T) *jobLog { return &jobLog{t: t, running: map[string]int64{}} }

func (j *jobLog) job() masterjob.Job {
	return masterjob.StartStop(
		func(_ context.Context, l masterjob.Lease) error {
			j.mu.Lock()
			defer j.mu.Unlock()
			if len(j.running) > 0 {
				j.t.Errorf("%s started (token %d) while %v run", l.Instance, l.Token, j.running)
			}
			j.running[l.Instance] = l.Token
			j.starts++
			return nil
		},
		func(_ context.Context, l masterjob.Lease) error {
			j.mu.Lock()
			defer j.mu.Unlock()
			delete(j.running, l.Instance)
			j.stops = append(j.stops, time.Now())
			return nil
		})
}

func (j *jobLog) state() (running, starts int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.running), j.starts
}

func (j *jobLog) lastStop() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.stops) == 0 {
		return time.Time{}
	}
	return j.stops[len(j.stops)-1]
}

// startExecutors runs n executors of job on st and returns a function that
// stops them.
func startExecutors(t *testing.T, st store.Store, n int, job masterjob.Job, heartbeat, tolerance, check time.Duration, opts ...masterjob.Option) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		e, err := masterjob.New(st, append([]masterjob.Option{
			masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
			masterjob.WithInstanceID(fmt.Sprintf("instance-%d", i)),
			masterjob.WithInitDelay(0),
			masterjob.WithHeartbeatInterval(heartbeat),
			masterjob.WithTolerance(tolerance),
			masterjob.WithCheckMasterInterval(check),
			masterjob.WithLogger(quiet()),
		}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartMaster("JOB-SCHEDULER", job); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := e.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// withoutPush hides the store's Notifier, so that executors learn of a
// disable from their next renewal: the slowest path the promise allows.
type withoutPush struct{ store.Store }

// TestEndToEndDisableEnable, on a fake clock: two executors run a job; a
// disable over HTTP stops it within one heartbeat and nobody takes over;
// an enable over HTTP starts it again on exactly one instance. The
// transitions and the control changes end up in the history.
func TestEndToEndDisableEnable(t *testing.T) {
	const (
		heartbeat = time.Second
		tolerance = 3 * time.Second
		check     = 2 * time.Second
	)
	synctest.Test(t, func(t *testing.T) {
		ms := memstore.New()
		rec := audit.NewRecorder(ms, quiet())
		h := newHandler(t, ms, controlapi.WithToken("tok"))
		jobs := newJobLog(t)
		stop := startExecutors(t, withoutPush{ms}, 2, jobs.job(), heartbeat, tolerance, check, masterjob.WithObserver(rec))

		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if running, starts := jobs.state(); running != 1 || starts != 1 {
			t.Fatalf("at start: %d running, %d starts; want exactly one", running, starts)
		}

		res := disable(t, h, "JOB-SCHEDULER", "maintenance", "Authorization", "Bearer tok")
		disabledAt := time.Now()
		if !res.Changed || !res.Lock.Revoked || res.Lock.Master == "" {
			t.Fatalf("disable: %+v", res)
		}
		time.Sleep(heartbeat)
		synctest.Wait()
		if running, _ := jobs.state(); running != 0 {
			t.Fatalf("%v after disable: the job still runs", heartbeat)
		}
		if took := jobs.lastStop().Sub(disabledAt); took > heartbeat {
			t.Errorf("the job stopped %v after disable, more than one heartbeat", took)
		}
		time.Sleep(5 * tolerance) // nobody takes over while disabled
		synctest.Wait()
		if running, starts := jobs.state(); running != 0 || starts != 1 {
			t.Fatalf("while disabled: %d running, %d starts", running, starts)
		}
		if l := decode[controlapi.Lock](t, do(t, h, "GET", "/api/mastercontrols/locks/JOB-SCHEDULER", ""), http.StatusOK); l.Master != "" || !l.Disabled {
			t.Errorf("while disabled: %+v", l)
		}

		if res := enable(t, h, "JOB-SCHEDULER", "Authorization", "Bearer tok"); !res.Changed {
			t.Fatalf("enable: %+v", res)
		}
		time.Sleep(check + 100*time.Millisecond)
		synctest.Wait()
		if running, starts := jobs.state(); running != 1 || starts != 2 {
			t.Fatalf("after enable: %d running, %d starts; want exactly one more start", running, starts)
		}
		time.Sleep(5 * tolerance)
		synctest.Wait()
		if running, starts := jobs.state(); running != 1 || starts != 2 {
			t.Fatalf("later: %d running, %d starts", running, starts)
		}
		stop()
		if err := rec.Close(context.Background()); err != nil {
			t.Fatal(err)
		}

		page := decode[controlapi.EventPage](t, do(t, h, "GET", "/api/mastercontrols/history/JOB-SCHEDULER", ""), http.StatusOK)
		var kinds []string
		for i := len(page.Events) - 1; i >= 0; i-- {
			kinds = append(kinds, page.Events[i].Kind)
		}
		want := "acquired disabled released enabled acquired released"
		if got := strings.Join(kinds, " "); got != want {
			t.Errorf("history %q, want %q", got, want)
		}
	})
}

// TestEndToEndOverNetwork: the same over a real HTTP server and a SQLite
// file, in real time, with generous bounds.
func TestEndToEndOverNetwork(t *testing.T) {
	const (
		heartbeat = 200 * time.Millisecond
		tolerance = time.Second
		check     = 300 * time.Millisecond
		slack     = 500 * time.Millisecond
	)
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "e2e.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(newHandler(t, st, controlapi.WithToken("tok")))
	defer srv.Close()
	jobs := newJobLog(t)
	stop := startExecutors(t, st, 2, jobs.job(), heartbeat, tolerance, check)
	defer stop()

	waitUntil(t, "one job runs", func() bool { r, _ := jobs.state(); return r == 1 })
	post := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}

	post("/api/mastercontrols/disable", `{"lockName":"JOB-SCHEDULER","reason":"e2e"}`)
	disabledAt := time.Now()
	waitUntil(t, "the job stops", func() bool { r, _ := jobs.state(); return r == 0 })
	if took := time.Since(disabledAt); took > heartbeat+slack {
		t.Errorf("the job stopped %v after disable; heartbeat %v", took, heartbeat)
	}
	time.Sleep(2 * tolerance)
	if running, starts := jobs.state(); running != 0 || starts != 1 {
		t.Fatalf("while disabled: %d running, %d starts", running, starts)
	}

	post("/api/mastercontrols/enable", `{"lockName":"JOB-SCHEDULER"}`)
	waitUntil(t, "a job runs again", func() bool { r, _ := jobs.state(); return r == 1 })
	time.Sleep(2 * tolerance)
	if running, starts := jobs.state(); running != 1 || starts != 2 {
		t.Fatalf("after enable: %d running, %d starts; want exactly one more start", running, starts)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
