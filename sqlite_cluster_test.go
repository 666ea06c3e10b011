package masterjob_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
)

// The cluster view on the SQLite store, in real time: three executors,
// each with its own handle on one file as three processes on one host
// would have, balance twelve locks, see each other as members, hand a
// mastership to a named instance through the store's push, and see a
// leaving instance disappear. The memstore tests (cluster_test.go) cover
// the logic under a fake clock; this one checks that the SQLite store
// carries it.

// overlapChecker is a job that fails the test if two instances run the
// same lock at once.
type overlapChecker struct {
	t       *testing.T
	mu      sync.Mutex
	running map[string]string // lock -> instance
}

func (c *overlapChecker) job(lock string) masterjob.Job {
	return masterjob.StartStop(
		func(ctx context.Context, l masterjob.Lease) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			if other, ok := c.running[lock]; ok {
				c.t.Errorf("%s: %s started (token %d) while %s runs it", lock, l.Instance, l.Token, other)
			}
			c.running[lock] = l.Instance
			return nil
		},
		func(ctx context.Context, l masterjob.Lease) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.running[lock] == l.Instance {
				delete(c.running, lock)
			}
			return nil
		})
}

// eventually polls cond every 20ms until it holds, failing after limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestClusterOnSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.db")
	open := func() *sqlite.Store {
		s, err := sqlite.Open(path, sqlite.WithNotifyPoll(10*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	reader := open()
	locks := lockNames(12)
	jobs := &overlapChecker{t: t, running: map[string]string{}}
	// The heartbeat and tolerance of newExec (1s, 3s), which a loaded
	// machine running -race keeps (a 200ms heartbeat with a 1s tolerance
	// lost leases there, and a hand-off's reservation, one heartbeat, lapsed
	// before its successor's check); checks every second.
	const (
		hb  = heartbeat
		tol = tolerance
		chk = time.Second
	)
	execs := map[string]*masterjob.Executor{}
	stops := map[string]func() error{}
	start := func(id string) {
		e := newExec(t, open(), id, masterjob.WithHeartbeatInterval(hb), masterjob.WithTolerance(tol),
			masterjob.WithCheckMasterInterval(chk))
		for _, l := range locks {
			if err := e.StartMaster(l, jobs.job(l)); err != nil {
				t.Fatal(err)
			}
		}
		execs[id], stops[id] = e, startRun(e)
	}
	t.Cleanup(func() {
		for _, stop := range stops {
			_ = stop()
		}
	})
	members := func() []string {
		ms, err := reader.Members(context.Background(), store.MemberFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range ms {
			ids = append(ids, m.ID)
		}
		return ids
	}

	start("a")
	eventually(t, 5*time.Second, "a alone masters all 12 locks", func() bool { return heldBy(t, reader, locks)["a"] == 12 })
	start("b")
	start("c")
	eventually(t, 5*time.Second, "a, b and c are members", func() bool { return slices.Equal(members(), []string{"a", "b", "c"}) })
	ms, err := reader.Members(context.Background(), store.MemberFilter{Lock: locks[0], WithLocks: true})
	if err != nil || len(ms) != 3 || !slices.Equal(ms[0].Locks, locks) {
		t.Fatalf("candidates of %s: %+v, %v; want a, b, c taking part in the 12 locks", locks[0], ms, err)
	}
	// Share ceil(12/3) = 4, slack 1: within 5 check intervals.
	var last map[string]int
	defer func() {
		if t.Failed() {
			t.Logf("masterships when the test ended: %v (last seen while balancing: %v)", heldBy(t, reader, locks), last)
		}
	}()
	took := eventually(t, 5*chk+2*time.Second, "each instance masters 2 to 5 of 12 locks", func() bool {
		got := heldBy(t, reader, locks)
		last = got
		for _, id := range []string{"a", "b", "c"} {
			if got[id] > 5 || got[id] < 2 {
				return false
			}
		}
		return got[""] == 0
	})
	t.Logf("balanced after %v: %v", took.Round(time.Millisecond), heldBy(t, reader, locks))

	// Hand one of b's masterships to c: c takes it within a push.
	var lock string
	for _, st := range mustLocks(t, reader, locks) {
		if st.Held() && st.Holder == "b" {
			lock = st.Lock
			break
		}
	}
	if lock == "" {
		t.Fatalf("b masters nothing: %v", heldBy(t, reader, locks))
	}
	if _, err := execs["a"].Handoff(context.Background(), lock, "c"); err != nil {
		t.Fatalf("Handoff(%s, to c): %v", lock, err)
	}
	took = eventually(t, 3*time.Second, "c masters the lock handed to it", func() bool { return masterOf(t, reader, lock) == "c" })
	t.Logf("hand-off of %s from b to c complete after %v", lock, took.Round(time.Millisecond))
	eventually(t, 2*time.Second, "a's leader watch sees c master "+lock, func() bool {
		l, ok := execs["a"].Leader(lock)
		return ok && l.Instance == "c"
	})

	// c leaves: its record goes at once, and its locks get masters.
	if err := stops["c"](); err != nil {
		t.Fatal(err)
	}
	delete(stops, "c")
	if got := members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("members after c's shutdown: %v, want [a b]", got)
	}
	eventually(t, 3*chk, "every lock mastered by a or b", func() bool {
		got := heldBy(t, reader, locks)
		return got["a"]+got["b"] == 12
	})
}

func mustLocks(t *testing.T, st store.Store, locks []string) []store.LockState {
	t.Helper()
	got, err := st.Locks(context.Background(), locks...)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
