package storetest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/masterjob/masterjob/store"
)

const (
	contenders = 8
	rounds     = 30
)

// contend has every contender (each on its own handle, as separate
// processes would be) call Acquire with locks at the same time, and returns
// each contender's states by lock name.
func contend(t *testing.T, handles []store.Store, locks func(i int) []string) []map[string]store.LockState {
	t.Helper()
	ctx := testCtx(t)
	out := make([]map[string]store.LockState, len(handles))
	errs := make([]error, len(handles))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range handles {
		wg.Go(func() {
			ls := locks(i)
			<-start
			got, err := s.Acquire(ctx, holderN(i), ls, longTTL)
			if err != nil {
				errs[i] = fmt.Errorf("Acquire by %s: %w", holderN(i).ID, err)
				return
			}
			out[i] = make(map[string]store.LockState, len(got))
			for _, st := range got {
				out[i][st.Lock] = st
			}
			if len(out[i]) != len(ls) {
				errs[i] = fmt.Errorf("Acquire by %s of %d locks returned %d distinct states", holderN(i).ID, len(ls), len(out[i]))
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// winnerOf returns the only contender that acquired lock, failing the test
// unless there is exactly one, and checks the losers saw the winner.
func winnerOf(t *testing.T, results []map[string]store.LockState, lock string) (int, store.LockState) {
	t.Helper()
	winner := -1
	for i, r := range results {
		if r[lock].Acquired {
			if winner >= 0 {
				t.Fatalf("%s: two winners, %s (token %d) and %s (token %d)", lock,
					holderN(winner).ID, results[winner][lock].Token, holderN(i).ID, r[lock].Token)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("%s: nobody acquired a free lock", lock)
	}
	w := results[winner][lock]
	for i, r := range results {
		if i != winner && (r[lock].Holder != w.Holder || r[lock].Token != w.Token) {
			t.Errorf("%s: loser %s saw %s, the winner is %s", lock, holderN(i).ID, describe(r[lock]), describe(w))
		}
	}
	return winner, w
}

func openN(t *testing.T, h Harness, n int) []store.Store {
	handles := make([]store.Store, n)
	for i := range handles {
		handles[i] = open(t, h)
	}
	return handles
}

// testConcurrencyFreshLocks: every round all contenders race for a new lock;
// exactly one wins.
func testConcurrencyFreshLocks(t *testing.T, h Harness) {
	handles := openN(t, h, contenders)
	var last int64
	for round := range rounds {
		lock := fmt.Sprintf("FRESH-%02d", round)
		res := contend(t, handles, func(int) []string { return []string{lock} })
		_, w := winnerOf(t, res, lock)
		if w.Token <= last {
			t.Errorf("round %d: token %d, want > %d", round, w.Token, last)
		}
		last = w.Token
	}
}

// testConcurrencySameLock: all contenders race for one lock; the winner
// releases it; the next round races again. One winner per round, tokens
// strictly increasing.
func testConcurrencySameLock(t *testing.T, h Harness) {
	handles := openN(t, h, contenders)
	const lock = "CONTENDED"
	var last int64
	for round := range rounds {
		res := contend(t, handles, func(int) []string { return []string{lock} })
		i, w := winnerOf(t, res, lock)
		if w.Token <= last {
			t.Fatalf("round %d: token %d, want > %d", round, w.Token, last)
		}
		last = w.Token
		release(t, handles[i], holderN(i).ID, ref(w))
	}
}

// testConcurrencyBatches: contenders acquire the same set of locks in one
// call each, every one listing them in a different order (a backend that
// locks rows in list order would deadlock). Each lock has exactly one
// winner, and the store agrees.
func testConcurrencyBatches(t *testing.T, h Harness) {
	handles := openN(t, h, contenders)
	const n = 40
	for round := range 3 {
		locks := make([]string, n)
		for i := range locks {
			locks[i] = fmt.Sprintf("BATCH-%d-%02d", round, i)
		}
		res := contend(t, handles, func(int) []string {
			ls := append([]string(nil), locks...)
			rand.Shuffle(len(ls), func(i, j int) { ls[i], ls[j] = ls[j], ls[i] })
			return ls
		})
		winners := map[string]store.LockState{}
		for _, l := range locks {
			_, w := winnerOf(t, res, l)
			winners[l] = w
		}
		all, err := handles[0].Locks(testCtx(t), locks...)
		if err != nil {
			t.Fatalf("Locks: %v", err)
		}
		for _, st := range all {
			w := winners[st.Lock]
			if st.Holder != w.Holder || st.Token != w.Token {
				t.Errorf("%s: store says %s, the winner was %s", st.Lock, describe(st), describe(w))
			}
		}
	}
}

// testThousandLocks: one call handles a thousand locks.
func testThousandLocks(t *testing.T, h Harness) {
	s := open(t, h)
	const n = 1000
	locks := make([]string, n)
	for i := range locks {
		locks[i] = fmt.Sprintf("MANY-%04d", i)
	}
	got := acquire(t, s, holderA, longTTL, locks...)
	refs := make([]store.LeaseRef, 0, n)
	for _, l := range locks {
		st := got[l]
		if !st.Acquired {
			t.Fatalf("%s not acquired: %s", l, describe(st))
		}
		refs = append(refs, ref(st))
	}
	res := renew(t, s, holderA.ID, 2*longTTL, refs...)
	for _, l := range locks {
		if !res[l].Renewed {
			t.Fatalf("%s not renewed: %+v", l, res[l])
		}
	}
	states, err := s.Locks(testCtx(t), locks...)
	if err != nil {
		t.Fatalf("Locks(%d names): %v", n, err)
	}
	byName := statesByName(t, "Locks", states, locks)
	for _, l := range locks {
		if st := byName[l]; st.Holder != holderA.ID || st.TTL <= longTTL {
			t.Fatalf("%s after renewal: %s", l, describe(st))
		}
	}
	release(t, s, holderA.ID, refs...)
	all, err := s.Locks(testCtx(t))
	if err != nil {
		t.Fatalf("Locks(): %v", err)
	}
	if len(all) != n {
		t.Fatalf("Locks() lists %d locks, want %d", len(all), n)
	}
	for _, st := range all {
		if st.Holder != "" || st.Held() {
			t.Fatalf("%s after release: %s", st.Lock, describe(st))
		}
	}
	got = acquire(t, open(t, h), holderB, longTTL, locks...)
	for _, l := range locks {
		if st := got[l]; !st.Acquired || st.Token <= byName[l].Token {
			t.Fatalf("%s after release: %s, want acquired with token > %d", l, describe(st), byName[l].Token)
		}
	}
}
