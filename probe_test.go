package masterjob_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// locksAsked records how many locks each Acquire call of instance id asked
// for, on a memstore (its Notifier, Membership and Handoffs kept).
type locksAsked struct {
	*memstore.Store
	id   string
	mu   sync.Mutex
	asks []int
}

func (s *locksAsked) Acquire(ctx context.Context, h store.Holder, locks []string, ttl time.Duration) ([]store.LockState, error) {
	if h.ID == s.id {
		s.mu.Lock()
		s.asks = append(s.asks, len(locks))
		s.mu.Unlock()
	}
	return s.Store.Acquire(ctx, h, locks, ttl)
}

func (s *locksAsked) take() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.asks
	s.asks = nil
	return a
}

// TestProbeStandsForItsHoldersLocks: a follower wakes when a holder's
// leases fall due and asks for one of them (a probe); the answer carries
// the holder's other leases forward too, since a holder renews them all in
// one call. None of them is left due, to be probed again at the next wake
// (another holder's) or asked for once due too long. So between sweeps
// every check asks for one lock, the probe of the one holder due (the
// holders started apart), and a sweep, once per check interval, asks for
// every lock the others hold. The answers are applied in one pass per
// check (a pass per answer made checks of thousands of locks quadratic and
// held the loop that enforces the trust windows).
func TestProbeStandsForItsHoldersLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &locksAsked{Store: memstore.New(), id: "b"}
		const n = 12
		for i, id := range []string{"a", "c", "b"} {
			e := newExec(t, st, id)
			for l := range n {
				if err := e.StartMaster(fmt.Sprintf("L%02d", l), idle()); err != nil {
					t.Fatal(err)
				}
			}
			stop := startRun(e)
			defer func() { _ = stop() }()
			// Started apart, so that their leases fall due at other times.
			time.Sleep(checkIntv + time.Duration(i)*heartbeat/3)
		}
		time.Sleep(6 * checkIntv)
		synctest.Wait()
		masters := map[string]int{}
		for l := range n {
			masters[masterOf(t, st, fmt.Sprintf("L%02d", l))]++
		}
		if masters["a"] == 0 || masters["b"] == 0 || masters["c"] == 0 {
			t.Fatalf("masterships %v after 6 check intervals; want a share each", masters)
		}
		st.take()
		time.Sleep(2 * checkIntv)
		synctest.Wait()
		asks := st.take()
		t.Logf("masterships %v; locks each check of b asked for: %v", masters, asks)
		all := masters["a"] + masters["c"]
		sweeps := 0
		for _, k := range asks {
			switch k {
			case 1:
			case all:
				sweeps++
			default:
				t.Errorf("a check of b asked for %d locks, neither a probe (1) nor a sweep (%d): a holder's locks stayed due after its probe (%v)", k, all, asks)
			}
		}
		if sweeps == 0 {
			t.Errorf("no check of b in 2 check intervals read every lock the others hold (%v)", asks)
		}
	})
}
