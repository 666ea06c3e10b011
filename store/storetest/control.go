package storetest

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/masterjob/masterjob/store"
)

// testDisabledRefuses: a disabled lock is not acquired, and the refusal says
// why.
func testDisabledRefuses(t *testing.T, h Harness) {
	s := open(t, h)
	disable(t, s, "OFF", "maintenance window", "ops")
	got := acquire(t, s, holderA, longTTL, "OFF", "ON")
	if st := got["OFF"]; st.Acquired || !st.Disabled || st.Reason != "maintenance window" || st.Holder != "" {
		t.Errorf("disabled lock: %s, want not acquired, disabled with the reason", describe(st))
	}
	if st := got["ON"]; !st.Acquired || st.Disabled {
		t.Errorf("enabled lock in the same call: %s, want acquired", describe(st))
	}
	other := open(t, h)
	if st := mustNotAcquire(t, other, holderB, "OFF", longTTL); !st.Disabled {
		t.Errorf("disabled lock on another handle: %s, want disabled", describe(st))
	}
}

// testDisableCreatesRecord: disabling a lock nobody ever used stores it.
func testDisableCreatesRecord(t *testing.T, h Harness) {
	s := open(t, h)
	ch := disable(t, s, "NEVER-USED", "not yet", "ops")
	if !ch.Changed || !ch.State.Disabled || ch.State.Holder != "" || ch.State.Token != 0 || ch.State.Revoked {
		t.Errorf("Disable(new lock) = changed %v, %s; want changed, disabled, free, token 0", ch.Changed, describe(ch.State))
	}
	all, err := open(t, h).Locks(testCtx(t))
	if err != nil {
		t.Fatalf("Locks(): %v", err)
	}
	if len(all) != 1 || all[0].Lock != "NEVER-USED" || !all[0].Disabled || all[0].Held() {
		t.Errorf("Locks() = %v, want only the disabled NEVER-USED", names(all))
	}
}

// testDisableTwice: a second Disable reports no change.
func testDisableTwice(t *testing.T, h Harness) {
	s := open(t, h)
	if ch := disable(t, s, "TWICE", "first", "ops"); !ch.Changed {
		t.Error("first Disable: Changed = false")
	}
	ch := disable(t, s, "TWICE", "second", "ops")
	if ch.Changed || !ch.State.Disabled {
		t.Errorf("second Disable: changed %v, %s; want unchanged and disabled", ch.Changed, describe(ch.State))
	}
}

// testEnableChanges: Enable clears the mark once; then the lock is acquirable.
func testEnableChanges(t *testing.T, h Harness) {
	s := open(t, h)
	if ch := enable(t, s, "NEVER-DISABLED", "ops"); ch.Changed || ch.State.Disabled {
		t.Errorf("Enable of an enabled lock: changed %v, %s; want unchanged", ch.Changed, describe(ch.State))
	}
	disable(t, s, "TOGGLE", "a while", "ops")
	mustNotAcquire(t, s, holderA, "TOGGLE", longTTL)
	if ch := enable(t, s, "TOGGLE", "ops"); !ch.Changed || ch.State.Disabled {
		t.Errorf("Enable: changed %v, %s; want changed and enabled", ch.Changed, describe(ch.State))
	}
	if ch := enable(t, s, "TOGGLE", "ops"); ch.Changed || ch.State.Disabled {
		t.Errorf("second Enable: changed %v, %s; want unchanged and enabled", ch.Changed, describe(ch.State))
	}
	if got := lockState(t, open(t, h), "TOGGLE"); got.Disabled {
		t.Errorf("after Enable another handle sees %s", describe(got))
	}
	mustAcquire(t, s, holderA, "TOGGLE", longTTL)
}

// testDisableRevokes: Disable revokes the current lease; its holder can
// still renew (and learns of the revocation) but nobody else can acquire,
// even after Enable, until it is released.
func testDisableRevokes(t *testing.T, h Harness) {
	sa, sctl := open(t, h), open(t, h)
	const lock = "REVOKE"
	a := mustAcquire(t, sa, holderA, lock, longTTL)
	ch := disable(t, sctl, lock, "stop it", "ops")
	if !ch.Changed || !ch.State.Disabled || !ch.State.Revoked || ch.State.Holder != holderA.ID || ch.State.Token != a.Token {
		t.Errorf("Disable of a held lock: changed %v, %s; want A's lease revoked", ch.Changed, describe(ch.State))
	}
	if r := renewOne(t, sa, holderA.ID, ref(a), longTTL); !r.Renewed || !r.Revoked || !r.Disabled {
		t.Errorf("renewal of a revoked lease = %+v, want renewed, revoked, disabled", r)
	}
	if st := mustNotAcquire(t, sctl, holderB, lock, longTTL); !st.Disabled {
		t.Errorf("acquire of the disabled lock: %s", describe(st))
	}
	if st := acquireOne(t, sa, holderA, lock, longTTL); st.Acquired || st.Token != a.Token || !st.Revoked {
		t.Errorf("holder re-acquiring its revoked lease: %s, want it unchanged and revoked", describe(st))
	}

	if ch := enable(t, sctl, lock, "ops"); !ch.Changed || ch.State.Disabled || !ch.State.Revoked || ch.State.Holder != holderA.ID {
		t.Errorf("Enable: changed %v, %s; want enabled with A's lease still revoked", ch.Changed, describe(ch.State))
	}
	if r := renewOne(t, sa, holderA.ID, ref(a), longTTL); !r.Renewed || !r.Revoked || r.Disabled {
		t.Errorf("renewal after Enable = %+v, want renewed, still revoked, not disabled", r)
	}
	if st := mustNotAcquire(t, sctl, holderB, lock, longTTL); st.Holder != holderA.ID {
		t.Errorf("revoked lease after Enable: %s, want still held by A", describe(st))
	}

	release(t, sa, holderA.ID, ref(a))
	b := mustAcquire(t, sctl, holderB, lock, longTTL)
	if b.Revoked || b.Disabled || b.Token <= a.Token {
		t.Errorf("new lease after release: %s, want unrevoked with token > %d", describe(b), a.Token)
	}
	if r := renewOne(t, sctl, holderB.ID, ref(b), longTTL); !r.Renewed || r.Revoked {
		t.Errorf("new lease renewal = %+v, want renewed and not revoked", r)
	}
}

// testRevokedLeaseExpires: an unreleased revoked lease blocks others until
// it expires.
func testRevokedLeaseExpires(t *testing.T, h Harness) {
	sa, sb := open(t, h), open(t, h)
	const lock = "REVOKE-EXPIRE"
	a := mustAcquire(t, sa, holderA, lock, h.short())
	disable(t, sb, lock, "expire it", "ops")
	enable(t, sb, lock, "ops")
	var b store.LockState
	waitFor(t, "B acquires after the revoked lease expired", func() bool {
		b = acquireOne(t, sb, holderB, lock, longTTL)
		if !b.Acquired && b.Holder != holderA.ID {
			t.Fatalf("refused while not held by A: %s", describe(b))
		}
		return b.Acquired
	})
	if b.Revoked || b.Token <= a.Token {
		t.Errorf("lease after the revoked one expired: %s, want unrevoked, token > %d", describe(b), a.Token)
	}
}

// testAuditFields: Disable and Enable record who, why and when.
func testAuditFields(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "AUDITED"
	ch := disable(t, s, lock, "deploying v2", "alice")
	st := ch.State
	if st.Reason != "deploying v2" || st.ChangedBy != "alice" || st.ChangedAt.IsZero() {
		t.Errorf("after Disable: reason %q by %q at %v; want reason, alice, a time", st.Reason, st.ChangedBy, st.ChangedAt)
	}
	got := lockState(t, open(t, h), lock)
	if got.Reason != st.Reason || got.ChangedBy != st.ChangedBy || !h.near(got.ChangedAt, st.ChangedAt) {
		t.Errorf("Locks after Disable: reason %q by %q at %v; Disable returned %q %q %v",
			got.Reason, got.ChangedBy, got.ChangedAt, st.Reason, st.ChangedBy, st.ChangedAt)
	}
	en := enable(t, s, lock, "bob").State
	if en.ChangedBy != "bob" || en.ChangedAt.IsZero() || en.ChangedAt.Before(st.ChangedAt) {
		t.Errorf("after Enable: by %q at %v; want bob at or after %v", en.ChangedBy, en.ChangedAt, st.ChangedAt)
	}
	if got := lockState(t, s, lock); got.ChangedBy != "bob" || !h.near(got.ChangedAt, en.ChangedAt) {
		t.Errorf("Locks after Enable: by %q at %v; want bob at %v", got.ChangedBy, got.ChangedAt, en.ChangedAt)
	}
}

// testDisableAtomic races Disable against acquirers on other handles, over
// many rounds. Each acquirer calls Acquire once at the same time as the
// Disable, and once more after Disable returned. The invariants:
//   - an Acquire that began after Disable returned never acquires;
//   - at most one acquirer wins (the lease is long and nobody releases);
//   - a winner's acquisition was ordered before the Disable, so the Disable
//     saw its lease (State.Holder) and revoked it, and its renewal says so;
//   - if the Disable saw no lease, nobody won.
func testDisableAtomic(t *testing.T, h Harness) {
	const (
		rounds    = 30
		acquirers = 4
	)
	ctl := open(t, h)
	handles := openN(t, h, acquirers)
	ctx := testCtx(t)
	wins := 0
	for round := range rounds {
		lock := fmt.Sprintf("ATOMIC-%02d", round)
		if round%2 == 1 {
			// Half the rounds race on an existing record.
			st := mustAcquire(t, ctl, holderC, lock, longTTL)
			release(t, ctl, holderC.ID, ref(st))
		}
		type outcome struct {
			holder store.Holder
			st     store.LockState
			after  bool // began after Disable returned
		}
		var (
			mu       sync.Mutex
			outcomes []outcome
			wg       sync.WaitGroup
			errs     = make(chan error, acquirers)
			start    = make(chan struct{})
			disabled = make(chan struct{})
		)
		for i := range acquirers {
			wg.Go(func() {
				hd := holderN(i)
				try := func(after bool) bool {
					got, err := handles[i].Acquire(ctx, hd, []string{lock}, longTTL)
					if err != nil {
						errs <- fmt.Errorf("Acquire by %s: %w", hd.ID, err)
						return false
					}
					if len(got) != 1 || got[0].Lock != lock {
						errs <- fmt.Errorf("Acquire by %s returned %v", hd.ID, names(got))
						return false
					}
					mu.Lock()
					outcomes = append(outcomes, outcome{hd, got[0], after})
					mu.Unlock()
					return true
				}
				<-start
				if i%2 == 1 {
					runtime.Gosched() // vary the interleaving
				}
				if !try(false) {
					return
				}
				<-disabled
				try(true)
			})
		}
		var (
			ch  store.ControlChange
			err error
		)
		wg.Go(func() {
			<-start
			if round%3 == 0 {
				runtime.Gosched()
			}
			ch, err = ctl.Disable(ctx, lock, "race", "suite")
			close(disabled)
		})
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		if err != nil {
			t.Fatalf("round %d: Disable: %v", round, err)
		}

		var winner *outcome
		for i, o := range outcomes {
			if o.after && (o.st.Acquired || !o.st.Disabled) {
				t.Fatalf("round %d: Acquire by %s begun after Disable returned: %s; want refused as disabled",
					round, o.holder.ID, describe(o.st))
			}
			if o.st.Acquired {
				if winner != nil {
					t.Fatalf("round %d: two winners, %s (token %d) and %s (token %d)",
						round, winner.holder.ID, winner.st.Token, o.holder.ID, o.st.Token)
				}
				winner = &outcomes[i]
			}
		}
		if winner == nil {
			if ch.State.Holder != "" {
				t.Fatalf("round %d: Disable saw holder %q but no acquirer won", round, ch.State.Holder)
			}
			continue
		}
		wins++
		if ch.State.Holder != winner.holder.ID || ch.State.Token != winner.st.Token || !ch.State.Revoked {
			t.Fatalf("round %d: %s won (token %d) but Disable returned %s; the win must precede the Disable and be revoked by it",
				round, winner.holder.ID, winner.st.Token, describe(ch.State))
		}
		r := renewOne(t, ctl, winner.holder.ID, ref(winner.st), longTTL)
		if !r.Renewed || !r.Revoked || !r.Disabled {
			t.Fatalf("round %d: winner's renewal after Disable = %+v, want renewed, revoked, disabled", round, r)
		}
	}
	t.Logf("%d of %d rounds had an acquisition before the Disable", wins, rounds)
}
