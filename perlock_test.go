package masterjob_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// The seed took its timings per startMaster call; StartMaster takes them
// as options, last in the order of sources (issue 8, item 10).
func TestPerLockTimingPrecedence(t *testing.T) {
	env := map[string]string{
		masterjob.EnvHeartbeatInterval:   "2000",
		masterjob.EnvCheckMasterInterval: "7000",
	}
	e, err := masterjob.New(memstore.New(),
		masterjob.WithLookupEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }),
		masterjob.WithCheckMasterInterval(9*time.Second), // beats the environment
		masterjob.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	if err != nil {
		t.Fatal(err)
	}
	job := masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error { <-ctx.Done(); return nil })
	if err := e.StartMaster("PLAIN", job); err != nil {
		t.Fatal(err)
	}
	if err := e.StartMaster("FAST", job, masterjob.WithHeartbeatInterval(500*time.Millisecond), masterjob.WithCheckMasterInterval(time.Second)); err != nil {
		t.Fatal(err)
	}
	plain, _ := e.LockConfig("PLAIN")
	fast, _ := e.LockConfig("FAST")
	if plain.HeartbeatInterval != 2*time.Second || plain.CheckMasterInterval != 9*time.Second || plain.Tolerance != 6*time.Second {
		t.Fatalf("PLAIN: %+v; want heartbeat 2s (environment), check 9s (executor option), tolerance 6s (derived)", plain)
	}
	if fast.HeartbeatInterval != 500*time.Millisecond || fast.CheckMasterInterval != time.Second || fast.Tolerance != 1500*time.Millisecond {
		t.Fatalf("FAST: %+v; want heartbeat 500ms and check 1s (StartMaster options), tolerance 1.5s (derived from them)", fast)
	}
	if _, ok := e.LockConfig("NONE"); ok {
		t.Fatal("LockConfig of an unregistered lock")
	}
}

func TestPerLockTimingErrors(t *testing.T) {
	e := newExec(t, memstore.New(), "a")
	job := masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error { return nil })
	err := e.StartMaster("X", job, masterjob.WithHeartbeatInterval(time.Hour))
	if !errors.Is(err, masterjob.ErrInvalidConfig) || !strings.Contains(err.Error(), `heartbeatInterval 1h0m0s (option WithHeartbeatInterval of StartMaster("X"))`) {
		t.Fatalf("err = %v; want an ErrInvalidConfig naming the setting, its value and the lock's option", err)
	}
	err = e.StartMaster("Y", job, masterjob.WithLogger(slog.Default()))
	if !errors.Is(err, masterjob.ErrInvalidConfig) || !strings.Contains(err.Error(), "only timing options") {
		t.Fatalf("err = %v; want a refusal of a non-timing option", err)
	}
	if _, ok := e.LockConfig("X"); ok {
		t.Fatal("a refused lock was registered")
	}
}

// The seed refused a missing start at once ("masterJob.start is not a
// function"); a nil start used to panic on every election, burning a
// token each time (issue 8, item 7).
func TestStartMasterRefusesJobsWithoutStart(t *testing.T) {
	e := newExec(t, memstore.New(), "a")
	stop := func(ctx context.Context, l masterjob.Lease) error { return nil }
	for name, job := range map[string]masterjob.Job{
		"nil Job":         nil,
		"nil JobFunc":     masterjob.JobFunc(nil),
		"StartStop(nil)":  masterjob.StartStop(nil, stop),
		"StartStop(nil2)": masterjob.StartStop(nil, nil),
	} {
		if err := e.StartMaster("L-"+strings.ReplaceAll(name, " ", ""), job); !errors.Is(err, masterjob.ErrNilJob) {
			t.Errorf("%s: err = %v, want ErrNilJob", name, err)
		}
	}
}

// callCounter counts Renew and Acquire calls and the leases they carry.
type callCounter struct {
	store.Store
	mu              sync.Mutex
	renews, acquire int
	renewed         map[time.Duration]int // ttl -> leases renewed
}

func (c *callCounter) Renew(ctx context.Context, id string, refs []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	c.mu.Lock()
	c.renews++
	if c.renewed == nil {
		c.renewed = map[time.Duration]int{}
	}
	c.renewed[ttl] += len(refs)
	c.mu.Unlock()
	return c.Store.Renew(ctx, id, refs, ttl)
}

func (c *callCounter) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	c.mu.Lock()
	c.acquire++
	c.mu.Unlock()
	return c.Store.Acquire(ctx, h, locks, ttl)
}

// Locks with equal timings share a batch: one renewal per heartbeat per
// timing class, whatever the number of locks, including a class that
// appears while Run runs.
func TestPerLockTimingClassesShareRoundTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		view := &callCounter{Store: memstore.New()}
		e := newExec(t, view, "a") // heartbeat 1s, lease 3s
		job := masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error { <-ctx.Done(); return nil })
		slow := []masterjob.Option{masterjob.WithHeartbeatInterval(2 * time.Second), masterjob.WithTolerance(6 * time.Second)}
		for _, l := range []string{"A1", "A2", "A3"} {
			_ = e.StartMaster(l, job)
		}
		for _, l := range []string{"B1", "B2"} {
			_ = e.StartMaster(l, job, slow...)
		}
		stop := startRun(e)
		synctest.Wait()
		_ = e.StartMaster("B3", job, slow...) // joins the running class
		synctest.Wait()
		if n := len(e.Masters()); n != 6 {
			t.Fatalf("masters: %v", e.Masters())
		}
		view.mu.Lock()
		view.renews, view.renewed = 0, nil
		view.mu.Unlock()
		time.Sleep(20*time.Second + time.Millisecond)
		synctest.Wait()
		view.mu.Lock()
		renews, fast, slowN := view.renews, view.renewed[3*time.Second], view.renewed[6*time.Second]
		view.mu.Unlock()
		// 20 heartbeats of the 1s class carrying 3 leases, 10 of the 2s
		// class carrying 3.
		if renews != 30 || fast != 60 || slowN != 30 {
			t.Fatalf("%d renewals carrying %d (3s leases) and %d (6s leases); want 30 carrying 60 and 30", renews, fast, slowN)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
