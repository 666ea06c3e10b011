package controlapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// cluster is a few executors of one lock on a memstore, in real time.
type cluster struct {
	t      *testing.T
	open   func() store.Store // a handle of its own for each instance
	jobs   *jobLog
	execs  map[string]*masterjob.Executor
	stops  map[string]context.CancelFunc
	wg     sync.WaitGroup
	lock   string
	timing [3]time.Duration // heartbeat, tolerance, check
}

const clusterLock = "JOB-SCHEDULER"

func newCluster(t *testing.T, ms *memstore.Store, heartbeat, tolerance, check time.Duration, rec masterjob.Observer, ids ...string) *cluster {
	return newClusterOn(t, func() store.Store { return ms.Reopen() }, heartbeat, tolerance, check, rec, ids...)
}

// newClusterOn starts executors of one lock, each on a store handle of
// its own from open.
func newClusterOn(t *testing.T, open func() store.Store, heartbeat, tolerance, check time.Duration, rec masterjob.Observer, ids ...string) *cluster {
	c := &cluster{t: t, open: open, jobs: newJobLog(t), execs: map[string]*masterjob.Executor{}, stops: map[string]context.CancelFunc{},
		lock: clusterLock, timing: [3]time.Duration{heartbeat, tolerance, check}}
	for _, id := range ids {
		c.start(id, rec)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) start(id string, rec masterjob.Observer) {
	c.t.Helper()
	opts := []masterjob.Option{
		masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInstanceID(id),
		masterjob.WithInstanceInfo(masterjob.InstanceInfo{Host: "host-" + id, PID: 1, Address: id + ":8080", Version: "test"}),
		masterjob.WithInitDelay(0),
		masterjob.WithHeartbeatInterval(c.timing[0]),
		masterjob.WithTolerance(c.timing[1]),
		masterjob.WithCheckMasterInterval(c.timing[2]),
		masterjob.WithLogger(quiet()),
	}
	if rec != nil {
		opts = append(opts, masterjob.WithObserver(rec))
	}
	// Each instance on a handle of its own, as separate processes would.
	e, err := masterjob.New(c.open(), opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := e.StartMaster(c.lock, c.jobs.job()); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.execs[id], c.stops[id] = e, cancel
	c.wg.Go(func() {
		if err := e.Run(ctx); err != nil {
			c.t.Errorf("Run %s: %v", id, err)
		}
	})
}

func (c *cluster) stopAll() {
	for _, cancel := range c.stops {
		cancel()
	}
	c.wg.Wait()
}

// masters returns the instances that hold the lock now, by their own
// account.
func (c *cluster) masters() []string {
	var out []string
	for id, e := range c.execs {
		if len(e.Masters()) > 0 {
			out = append(out, id)
		}
	}
	return out
}

func (c *cluster) master() string {
	if m := c.masters(); len(m) == 1 {
		return m[0]
	}
	return ""
}

// post sends a control request over the network and returns the status
// and the body.
func post(t *testing.T, srv *httptest.Server, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHandoffEndToEnd: three instances of a job over a real listener. A
// hand-off without "to" moves the job to another instance, one with "to"
// to that one; the job stops before it starts elsewhere (jobLog fails the
// test on an overlap) and starts exactly once. A hand-off to an instance
// that died (its member record has not expired yet) keeps the lock free
// only for the reservation, then a live instance takes it.
func TestHandoffEndToEnd(t *testing.T) {
	const (
		heartbeat = 100 * time.Millisecond
		tolerance = time.Second
		check     = 500 * time.Millisecond
	)
	ms := memstore.New()
	rec := audit.NewRecorder(ms, quiet())
	defer rec.Close(context.Background())
	c := newCluster(t, ms, heartbeat, tolerance, check, rec, "i0", "i1", "i2")
	srv := httptest.NewServer(newHandler(t, ms, controlapi.WithToken("tok")))
	defer srv.Close()
	waitUntil(t, "one master", func() bool { return c.master() != "" })
	waitUntil(t, "three members", func() bool {
		m, _ := ms.Members(context.Background(), store.MemberFilter{Lock: clusterLock})
		return len(m) == 3
	})

	handoff := func(to string) (from, now string, took time.Duration) {
		t.Helper()
		// The instance that handed the lock off last holds off from
		// taking it for a check interval: let that pass.
		time.Sleep(check + 50*time.Millisecond)
		from = c.master()
		_, starts := c.jobs.state()
		body := fmt.Sprintf(`{"lockName":%q}`, clusterLock)
		if to != "" {
			body = fmt.Sprintf(`{"lockName":%q,"to":%q}`, clusterLock, to)
		}
		t0 := time.Now()
		status, resp := post(t, srv, "/api/mastercontrols/handoff", body)
		if status != http.StatusOK {
			t.Fatalf("hand-off to %q: %d %s", to, status, resp)
		}
		var res controlapi.HandoffResult
		if err := json.Unmarshal([]byte(resp), &res); err != nil || res.From != from {
			t.Fatalf("hand-off result %s (%v); master was %s", resp, err, from)
		}
		waitUntil(t, "the job to start again", func() bool {
			running, s := c.jobs.state()
			return running == 1 && s == starts+1
		})
		took = time.Since(t0)
		waitUntil(t, "one master", func() bool { return c.master() != "" })
		return from, c.master(), took
	}

	from, now, took := handoff("")
	t.Logf("hand-off to anyone: %s -> %s in %v", from, now, took)
	if now == from {
		t.Errorf("hand-off to anyone: %s took the lock back", from)
	}
	var to string
	for _, id := range []string{"i0", "i1", "i2"} {
		if id != now {
			to = id
		}
	}
	from, now, took = handoff(to)
	t.Logf("hand-off to %s: %s -> %s in %v", to, from, now, took)
	if now != to {
		t.Errorf("hand-off to %s: %s is master", to, now)
	}

	// An instance that died: its record lives on until its TTL.
	announce(t, ms, store.Member{ID: "ghost", Locks: []string{clusterLock}}, time.Minute)
	from, now, took = handoff("ghost")
	t.Logf("hand-off to a dead instance: %s -> %s in %v", from, now, took)
	if now == "ghost" || now == "" {
		t.Errorf("after a hand-off to a dead instance: master %q", now)
	}
	// The lock is reserved for the dead instance for min(tolerance, 5s),
	// then a live instance (woken when the reservation lapses, or at its
	// next check) takes it.
	if reserve := min(tolerance, 5*time.Second); took < reserve || took > reserve+check {
		t.Errorf("a live instance took the lock %v after the hand-off to a dead one; want right after the reservation (%v) lapsed", took, reserve)
	}

	// The history tells the story.
	c.stopAll()
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, err := ms.Events(context.Background(), store.EventFilter{Lock: clusterLock, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var handoffs []string
	for _, e := range evs {
		if e.Kind == store.EventHandoff {
			handoffs = append([]string{e.Reason}, handoffs...)
		}
	}
	if len(handoffs) != 3 || !strings.HasSuffix(handoffs[0], "to any other instance") || !strings.HasSuffix(handoffs[1], " to "+to) ||
		!strings.HasSuffix(handoffs[2], " to ghost") {
		t.Errorf("hand-offs in the history: %q", handoffs)
	}
}

// TestHandoffRacingDisable: a hand-off and a disable of the same lock sent
// at the same moment, many times. Whatever the order, the lock ends up
// disabled with its job stopped and no master, and stays so; after enable
// exactly one instance runs the job.
func TestHandoffRacingDisable(t *testing.T) {
	const (
		heartbeat = 50 * time.Millisecond
		tolerance = 600 * time.Millisecond
		check     = 200 * time.Millisecond
	)
	ms := memstore.New()
	c := newCluster(t, ms, heartbeat, tolerance, check, nil, "i0", "i1", "i2")
	srv := httptest.NewServer(newHandler(t, ms, controlapi.WithToken("tok"), controlapi.WithMaxInFlight(4)))
	defer srv.Close()
	waitUntil(t, "one master", func() bool { return c.master() != "" })
	waitUntil(t, "three members", func() bool {
		m, _ := ms.Members(context.Background(), store.MemberFilter{Lock: clusterLock})
		return len(m) == 3
	})
	handoffWon := 0
	for i := range 10 {
		waitUntil(t, "the job to run", func() bool { r, _ := c.jobs.state(); return r == 1 && c.master() != "" })
		var wg sync.WaitGroup
		var hs, ds int
		var hb, db string
		wg.Go(func() {
			hs, hb = post(t, srv, "/api/mastercontrols/handoff", fmt.Sprintf(`{"lockName":%q}`, clusterLock))
		})
		wg.Go(func() {
			ds, db = post(t, srv, "/api/mastercontrols/disable", fmt.Sprintf(`{"lockName":%q,"reason":"race %d"}`, clusterLock, i))
		})
		wg.Wait()
		if ds != http.StatusOK {
			t.Fatalf("round %d: disable: %d %s", i, ds, db)
		}
		switch hs {
		case http.StatusOK:
			handoffWon++
		case http.StatusConflict:
		default:
			t.Fatalf("round %d: hand-off: %d %s", i, hs, hb)
		}
		var dres controlapi.ControlResult
		if err := json.Unmarshal([]byte(db), &dres); err != nil {
			t.Fatal(err)
		}
		// The job stops (a successor that acquired before the disable
		// stops too), and nobody acquires the lock after the disable: its
		// token stays the one the disable answered with.
		waitUntil(t, "the job to stop", func() bool {
			r, _ := c.jobs.state()
			states, err := ms.Locks(context.Background(), clusterLock)
			return r == 0 && len(c.masters()) == 0 && err == nil && !states[0].Held()
		})
		_, starts := c.jobs.state()
		time.Sleep(2 * check)
		if r, s := c.jobs.state(); r != 0 || s != starts {
			t.Fatalf("round %d: the job started while the lock was disabled (hand-off %d)", i, hs)
		}
		states, err := ms.Locks(context.Background(), clusterLock)
		if err != nil || !states[0].Disabled || states[0].Held() || states[0].Token != dres.Lock.Token {
			t.Fatalf("round %d: after the disable (token %d): %+v, %v", i, dres.Lock.Token, states, err)
		}
		if s, b := post(t, srv, "/api/mastercontrols/enable", fmt.Sprintf(`{"lockName":%q}`, clusterLock)); s != http.StatusOK {
			t.Fatalf("round %d: enable: %d %s", i, s, b)
		}
	}
	waitUntil(t, "the job to run", func() bool { r, _ := c.jobs.state(); return r == 1 })
	t.Logf("the hand-off was accepted in %d of 10 rounds (refused with 409 in the others: the disable came first)", handoffWon)
}
