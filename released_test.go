package masterjob_test

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// releasedTimes records when each Released transition was reported.
type releasedTimes struct {
	masterjob.NopObserver
	mu  sync.Mutex
	got []masterjob.Transition
	at  []time.Time
}

func (o *releasedTimes) Transition(t masterjob.Transition) {
	if t.Kind != masterjob.Released {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, t)
	o.at = append(o.at, time.Now())
}

func (o *releasedTimes) snapshot() ([]masterjob.Transition, []time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]masterjob.Transition(nil), o.got...), append([]time.Time(nil), o.at...)
}

// TestReleasedReportedAfterTheRelease: the Released transition is reported
// once the store's release (or transfer to a successor) has returned, not
// when the job stopped. What observers do on it, the audit recorder's
// history append above all, then reaches the store after the hand-off
// rather than beside it, on every store: an append in flight beside the
// release made PostgreSQL's pool dial a second connection in the middle of
// each hand-off, and put one more entry in etcd's log there.
func TestReleasedReportedAfterTheRelease(t *testing.T) {
	const delay = 700 * time.Millisecond // each release takes this long
	for _, tc := range []struct {
		name      string
		successor bool // a follower runs: the lease is transferred to it
	}{
		{"Release", false},
		{"Transfer", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const lock = "L"
				ms := memstore.New()
				obs := &releasedTimes{}
				a := newExec(t, slowReleases{Store: ms, delay: delay}, "a", masterjob.WithObserver(obs))
				if err := a.StartMaster(lock, idle()); err != nil {
					t.Fatal(err)
				}
				stopA := startRun(a)
				synctest.Wait()
				if tc.successor {
					b := newExec(t, ms, "b")
					if err := b.StartMaster(lock, idle()); err != nil {
						t.Fatal(err)
					}
					stopB := startRun(b)
					t.Cleanup(func() { _ = stopB() })
					time.Sleep(2*checkIntv + heartbeat/2)
					synctest.Wait()
				}
				if m := masterOf(t, ms, lock); m != "a" {
					t.Fatalf("master %q; want a", m)
				}

				stopped := time.Now()
				if err := stopA(); err != nil {
					t.Fatal(err)
				}
				got, at := obs.snapshot()
				if len(got) != 1 {
					t.Fatalf("Released reported %d times: %+v; want once", len(got), got)
				}
				if after := at[0].Sub(stopped); after < delay {
					t.Fatalf("Released reported %v after the stop began, before the release returned (it takes %v)", after, delay)
				}
				wantSuccessor := ""
				if tc.successor {
					wantSuccessor = "b"
				}
				if got[0].Successor != wantSuccessor || got[0].Lock != lock || got[0].Instance != "a" || got[0].Token == 0 {
					t.Fatalf("Released %+v; want lock %s, instance a, successor %q", got[0], lock, wantSuccessor)
				}
			})
		})
	}
}
