package postgres

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
)

// TestExecutorsOnPostgres: three executors, each on its own handle (as
// three processes would be), on the cluster view of this store: they
// appear as members, a hand-off to a named instance moves the job there
// (pushed, so well within a check interval), and leaving removes them.
func TestExecutorsOnPostgres(t *testing.T) {
	schema := newSchema(t)
	const lock = "JOB"
	var (
		mu      sync.Mutex
		running = map[string]int{} // instance → jobs running
		started []string
		startAt = map[string]time.Time{} // instance → its job's last start
	)
	job := func(id string) masterjob.Job {
		return masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			mu.Lock()
			running[id]++
			started = append(started, id)
			startAt[id] = time.Now()
			n := 0
			for _, c := range running {
				n += c
			}
			mu.Unlock()
			if n > 1 {
				t.Errorf("%s started while another job ran: %v", id, running)
			}
			<-ctx.Done()
			mu.Lock()
			running[id]--
			mu.Unlock()
			return nil
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	ids := []string{"a", "b", "c"}
	execs := map[string]*masterjob.Executor{}
	var observer *Store
	for _, id := range ids {
		st := openStore(t, WithSchema(schema))
		observer = st
		e, err := masterjob.New(st,
			masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
			masterjob.WithInstanceID(id),
			masterjob.WithInitDelay(0),
			masterjob.WithHeartbeatInterval(200*time.Millisecond),
			masterjob.WithTolerance(900*time.Millisecond),
			masterjob.WithCheckMasterInterval(5*time.Second),
			masterjob.WithBalance(masterjob.BalanceConfig{Off: true}),
			masterjob.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartMaster(lock, job(id)); err != nil {
			t.Fatal(err)
		}
		execs[id] = e
		wg.Go(func() {
			if err := e.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("Run(%s): %v", id, err)
			}
		})
	}
	master := func() string {
		got, err := observer.Locks(t.Context(), lock)
		if err != nil || !got[0].Held() {
			return ""
		}
		return got[0].Holder
	}
	waitUntil(t, "a master and three members", func() bool {
		ms, err := observer.Members(t.Context(), store.MemberFilter{Lock: lock})
		return err == nil && len(ms) == 3 && master() != ""
	})
	from := master()
	to := ids[(slices.Index(ids, from)+1)%len(ids)]
	asked := time.Now()
	if _, err := execs[ids[(slices.Index(ids, from)+2)%len(ids)]].Handoff(t.Context(), lock, to); err != nil {
		t.Fatalf("Handoff from %s to %s: %v", from, to, err)
	}
	waitUntil(t, "the job runs on "+to, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return running[to] == 1
	})
	mu.Lock()
	took := startAt[to].Sub(asked)
	mu.Unlock()
	t.Logf("hand-off from %s to %s: job started on %s %v after the request", from, to, to, took)
	if took > 2*time.Second {
		t.Errorf("hand-off took %v: the request and the release are pushed, it should not wait for a check (5s)", took)
	}
	cancel()
	wg.Wait()
	if ms, err := observer.Members(t.Context(), store.MemberFilter{}); err != nil || len(ms) != 0 {
		t.Errorf("members after every executor stopped: %+v, %v; want none (Leave)", ms, err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("jobs started in order: %v", started)
}
