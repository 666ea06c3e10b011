package storetest

import (
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// testAcquireFreeLock: a free lock is taken, with a positive token, a TTL
// measured by the store, and the holder's identity stored.
func testAcquireFreeLock(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "JOB-SCHEDULER"
	began := time.Now()
	st := mustAcquire(t, s, holderA, lock, longTTL)
	// A backend with coarse leases may count the lease from a moment
	// before the acquisition: within the call.
	short := h.slack()
	if h.LeaseGranularity > 0 {
		short += time.Since(began)
	}
	if st.Lock != lock {
		t.Errorf("Lock = %q, want %q", st.Lock, lock)
	}
	if st.Token <= 0 {
		t.Errorf("Token = %d, want > 0", st.Token)
	}
	checkTTL(t, "acquired lease", st.TTL, longTTL)
	if st.Holder != holderA.ID || st.HolderInfo != holderA.Info {
		t.Errorf("holder = %q/%q, want %q/%q", st.Holder, st.HolderInfo, holderA.ID, holderA.Info)
	}
	if !st.Held() {
		t.Error("Held() = false for a lease just acquired")
	}
	if st.Revoked || st.Disabled {
		t.Errorf("fresh lease reports revoked=%v disabled=%v", st.Revoked, st.Disabled)
	}
	if st.AcquiredAt.IsZero() || st.RenewedAt.IsZero() || st.ExpiresAt.IsZero() {
		t.Errorf("timestamps not set: acquired=%v renewed=%v expires=%v", st.AcquiredAt, st.RenewedAt, st.ExpiresAt)
	}
	if d := st.ExpiresAt.Sub(st.AcquiredAt); d < longTTL-short || d > longTTL+clockSlack {
		t.Errorf("ExpiresAt - AcquiredAt = %v, want the ttl %v", d, longTTL)
	}

	// Another handle sees the same lease.
	other := open(t, h)
	got := lockState(t, other, lock)
	if got.Holder != holderA.ID || got.HolderInfo != holderA.Info || got.Token != st.Token {
		t.Errorf("Locks on another handle = %s, want holder %q info %q token %d",
			describe(got), holderA.ID, holderA.Info, st.Token)
	}
	if !got.Held() || got.TTL > st.TTL+h.slack() {
		t.Errorf("Locks TTL = %v, want positive and at most %v", got.TTL, st.TTL)
	}
	if !h.near(got.AcquiredAt, st.AcquiredAt) || !h.near(got.ExpiresAt, st.ExpiresAt) {
		t.Errorf("Locks times acquired=%v expires=%v, Acquire returned %v %v",
			got.AcquiredAt, got.ExpiresAt, st.AcquiredAt, st.ExpiresAt)
	}
	if got.Acquired {
		t.Error("Locks reports Acquired, which only Acquire sets")
	}
}

// testAcquireHeldByOther: while a lease is unexpired nobody else gets it,
// and the refusal shows the current holder and its TTL.
func testAcquireHeldByOther(t *testing.T, h Harness) {
	s1, s2 := open(t, h), open(t, h)
	const lock = "JOB-HEARTBEAT"
	a := mustAcquire(t, s1, holderA, lock, longTTL)
	for _, s := range []store.Store{s1, s2} {
		st := mustNotAcquire(t, s, holderB, lock, longTTL)
		if st.Holder != holderA.ID || st.HolderInfo != holderA.Info || st.Token != a.Token {
			t.Errorf("refused state = %s, want holder %q token %d", describe(st), holderA.ID, a.Token)
		}
		if !st.Held() || st.TTL > longTTL+clockSlack {
			t.Errorf("refused state TTL = %v, want in (0, %v]", st.TTL, longTTL)
		}
	}
}

// testAcquireOwnLease: acquiring a lock one already holds returns the lease
// unchanged, with the same token and expiry.
func testAcquireOwnLease(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "JOB-SWEEPER"
	first := mustAcquire(t, s, holderA, lock, longTTL)
	again := acquireOne(t, s, holderA, lock, 2*longTTL)
	if again.Acquired {
		t.Error("re-acquiring an own lease reported Acquired; it must be returned unchanged")
	}
	if again.Holder != holderA.ID || again.Token != first.Token {
		t.Errorf("re-acquire = %s, want holder %q token %d", describe(again), holderA.ID, first.Token)
	}
	if !h.near(again.ExpiresAt, first.ExpiresAt) || again.TTL > longTTL+clockSlack {
		t.Errorf("re-acquire changed the lease: expires %v (was %v), TTL %v", again.ExpiresAt, first.ExpiresAt, again.TTL)
	}
	// The original lease still renews: the token was not replaced.
	if r := renewOne(t, s, holderA.ID, ref(first), longTTL); !r.Renewed {
		t.Errorf("original lease no longer renews after re-acquire: %+v", r)
	}
}

// testAcquireMixedBatch: one call decides each lock on its own.
func testAcquireMixedBatch(t *testing.T, h Harness) {
	s := open(t, h)
	own := mustAcquire(t, s, holderA, "MIX-OWN", longTTL)
	other := mustAcquire(t, s, holderB, "MIX-OTHER", longTTL)
	disable(t, s, "MIX-DISABLED", "maintenance", "ops")
	released := mustAcquire(t, s, holderB, "MIX-RELEASED", longTTL)
	release(t, s, holderB.ID, ref(released))

	got := acquire(t, s, holderA, longTTL, "MIX-OWN", "MIX-OTHER", "MIX-DISABLED", "MIX-FREE", "MIX-RELEASED")
	if st := got["MIX-OWN"]; st.Acquired || st.Token != own.Token || st.Holder != holderA.ID {
		t.Errorf("own lease: %s, want unchanged token %d", describe(st), own.Token)
	}
	if st := got["MIX-OTHER"]; st.Acquired || st.Token != other.Token || st.Holder != holderB.ID {
		t.Errorf("other's lease: %s, want held by %q token %d", describe(st), holderB.ID, other.Token)
	}
	if st := got["MIX-DISABLED"]; st.Acquired || !st.Disabled || st.Holder != "" {
		t.Errorf("disabled lock: %s, want not acquired, disabled, free", describe(st))
	}
	for _, l := range []string{"MIX-FREE", "MIX-RELEASED"} {
		st := got[l]
		if !st.Acquired || st.Holder != holderA.ID || st.Token <= 0 {
			t.Errorf("%s: %s, want acquired by %q", l, describe(st), holderA.ID)
		}
		checkTTL(t, l, st.TTL, longTTL)
	}
	if got["MIX-RELEASED"].Token <= released.Token {
		t.Errorf("token after release = %d, want > %d", got["MIX-RELEASED"].Token, released.Token)
	}
}

// testEmptyBatch: nil and empty slices are no-ops.
func testEmptyBatch(t *testing.T, h Harness) {
	s := open(t, h)
	ctx := testCtx(t)
	if got, err := s.Acquire(ctx, holderA, nil, longTTL); err != nil || len(got) != 0 {
		t.Errorf("Acquire(nil) = %v, %v; want empty, nil", got, err)
	}
	if got, err := s.Renew(ctx, holderA.ID, []store.LeaseRef{}, longTTL); err != nil || len(got) != 0 {
		t.Errorf("Renew(empty) = %v, %v; want empty, nil", got, err)
	}
	if err := s.Release(ctx, holderA.ID, nil); err != nil {
		t.Errorf("Release(nil) = %v, want nil", err)
	}
	if got, err := s.Locks(ctx); err != nil || len(got) != 0 {
		t.Errorf("Locks() on an empty store = %v, %v; want empty, nil", names(got), err)
	}
}

// testRenewExtends: a renewal refreshes the TTL from the store's now.
func testRenewExtends(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "RENEW-ME"
	const short = 2 * time.Second
	st := mustAcquire(t, s, holderA, lock, short)
	r := renewOne(t, s, holderA.ID, ref(st), longTTL)
	if !r.Renewed || r.Revoked || r.Disabled {
		t.Fatalf("Renew = %+v, want renewed, not revoked or disabled", r)
	}
	checkTTL(t, "renewed lease", r.TTL, longTTL)
	got := lockState(t, s, lock)
	if got.Token != st.Token || got.Holder != holderA.ID {
		t.Errorf("after renew: %s, want token %d holder %q", describe(got), st.Token, holderA.ID)
	}
	if got.TTL <= short || got.TTL > longTTL+clockSlack {
		t.Errorf("after renew Locks TTL = %v, want in (%v, %v]", got.TTL, short, longTTL)
	}
	if !got.ExpiresAt.After(st.ExpiresAt) {
		t.Errorf("ExpiresAt %v not after the acquired expiry %v", got.ExpiresAt, st.ExpiresAt)
	}
	if got.RenewedAt.Before(st.AcquiredAt) {
		t.Errorf("RenewedAt %v before AcquiredAt %v", got.RenewedAt, st.AcquiredAt)
	}
	if !h.near(got.AcquiredAt, st.AcquiredAt) {
		t.Errorf("renewal moved AcquiredAt from %v to %v", st.AcquiredAt, got.AcquiredAt)
	}
}

// testRenewWrongToken: renewal is fenced by the token.
func testRenewWrongToken(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "FENCED"
	st := mustAcquire(t, s, holderA, lock, longTTL)
	for _, tok := range []int64{st.Token + 1, st.Token - 1, 0} {
		r := renewOne(t, s, holderA.ID, store.LeaseRef{Lock: lock, Token: tok}, 2*longTTL)
		if r.Renewed {
			t.Errorf("Renew with token %d (lease has %d) = renewed", tok, st.Token)
		}
	}
	if got := lockState(t, s, lock); got.TTL > longTTL+clockSlack || got.Token != st.Token {
		t.Errorf("a refused renewal changed the lease: %s", describe(got))
	}
}

// testRenewWrongHolder: renewal is fenced by the holder.
func testRenewWrongHolder(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "FENCED"
	st := mustAcquire(t, s, holderA, lock, longTTL)
	for _, id := range []string{holderB.ID, "", "HOLDER-A"} {
		if r := renewOne(t, s, id, ref(st), 2*longTTL); r.Renewed {
			t.Errorf("Renew by %q of %q's lease = renewed", id, holderA.ID)
		}
	}
	if got := lockState(t, s, lock); got.TTL > longTTL+clockSlack || got.Holder != holderA.ID {
		t.Errorf("a refused renewal changed the lease: %s", describe(got))
	}
}

// testRenewExpired: once the store says the lease expired, the holder can
// no longer renew it, even if nobody took it.
func testRenewExpired(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "EXPIRING"
	st := mustAcquire(t, s, holderA, lock, h.short())
	waitFor(t, "the store reports the lease expired", func() bool {
		return !lockState(t, s, lock).Held()
	})
	if r := renewOne(t, s, holderA.ID, ref(st), longTTL); r.Renewed {
		t.Errorf("Renew of an expired lease = %+v, want not renewed", r)
	}
	if got := lockState(t, s, lock); got.Held() {
		t.Errorf("refused renewal revived the lease: %s", describe(got))
	}
}

// testRenewBatchLost: one renewal of several leases reports exactly which
// were lost, and touches only those still held.
func testRenewBatchLost(t *testing.T, h Harness) {
	s := open(t, h)
	sb := open(t, h)
	got := acquire(t, s, holderA, longTTL, "KEPT", "RELEASED", "WRONG-TOKEN", "DISABLED")
	for l, st := range got {
		if !st.Acquired {
			t.Fatalf("setup: %s not acquired: %s", l, describe(st))
		}
	}
	expiring := mustAcquire(t, s, holderA, "TAKEN-OVER", h.short())
	release(t, s, holderA.ID, ref(got["RELEASED"]))
	disable(t, sb, "DISABLED", "lost lease test", "suite")
	var taker store.LockState
	waitFor(t, "another holder takes over the expired lease", func() bool {
		taker = acquireOne(t, sb, holderB, "TAKEN-OVER", longTTL)
		return taker.Acquired
	})

	refs := []store.LeaseRef{
		ref(got["KEPT"]),
		ref(expiring),
		ref(got["RELEASED"]),
		{Lock: "WRONG-TOKEN", Token: got["WRONG-TOKEN"].Token + 1000},
		ref(got["DISABLED"]),
		{Lock: "NEVER-KNOWN", Token: got["KEPT"].Token},
	}
	res := renew(t, s, holderA.ID, 2*longTTL, refs...)
	if r := res["KEPT"]; !r.Renewed || r.Revoked || r.Disabled {
		t.Errorf("KEPT: %+v, want renewed", r)
	} else {
		checkTTL(t, "KEPT", r.TTL, 2*longTTL)
	}
	for _, l := range []string{"TAKEN-OVER", "RELEASED", "WRONG-TOKEN", "NEVER-KNOWN"} {
		if r := res[l]; r.Renewed {
			t.Errorf("%s: %+v, want not renewed", l, r)
		}
	}
	if r := res["DISABLED"]; !r.Renewed || !r.Revoked || !r.Disabled {
		t.Errorf("DISABLED: %+v, want renewed, revoked and disabled", r)
	}

	// The lost leases were not touched.
	if st := lockState(t, s, "TAKEN-OVER"); st.Holder != holderB.ID || st.Token != taker.Token || st.TTL > longTTL+clockSlack {
		t.Errorf("TAKEN-OVER after A's renewal: %s, want B's lease (token %d) unextended", describe(st), taker.Token)
	}
	if st := lockState(t, s, "WRONG-TOKEN"); st.TTL > longTTL+clockSlack {
		t.Errorf("WRONG-TOKEN extended by a renewal with the wrong token: %s", describe(st))
	}
	if st := lockState(t, s, "RELEASED"); st.Holder != "" || st.Held() {
		t.Errorf("RELEASED revived by renewal: %s", describe(st))
	}
}

// testReleaseFenced: a release that does not match holder and token is
// ignored; a matching one frees the lock and keeps its last token on record.
func testReleaseFenced(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "RELEASE-ME"
	st := mustAcquire(t, s, holderA, lock, longTTL)
	release(t, s, holderA.ID, store.LeaseRef{Lock: lock, Token: st.Token + 1})
	release(t, s, holderA.ID, store.LeaseRef{Lock: lock, Token: st.Token - 1})
	release(t, s, holderB.ID, ref(st))
	release(t, s, "", ref(st))
	if got := lockState(t, s, lock); got.Holder != holderA.ID || got.Token != st.Token || !got.Held() {
		t.Fatalf("a mismatched release changed the lease: %s", describe(got))
	}
	mustNotAcquire(t, s, holderB, lock, longTTL)

	release(t, s, holderA.ID, ref(st))
	got := lockState(t, s, lock)
	if got.Holder != "" || got.Held() || got.Revoked {
		t.Errorf("after release: %s, want free", describe(got))
	}
	if got.Token != st.Token {
		t.Errorf("after release Token = %d, want the released lease's %d", got.Token, st.Token)
	}
	if r := renewOne(t, s, holderA.ID, ref(st), longTTL); r.Renewed {
		t.Errorf("released lease renewed: %+v", r)
	}
}

// testReleaseOtherAcquires: after a release another holder acquires at once,
// with a greater token.
func testReleaseOtherAcquires(t *testing.T, h Harness) {
	s1, s2 := open(t, h), open(t, h)
	const lock = "HANDOFF"
	a := mustAcquire(t, s1, holderA, lock, longTTL)
	release(t, s1, holderA.ID, ref(a))
	b := mustAcquire(t, s2, holderB, lock, longTTL)
	if b.Token <= a.Token {
		t.Errorf("token after release = %d, want > %d", b.Token, a.Token)
	}
	if r := renewOne(t, s1, holderA.ID, ref(a), longTTL); r.Renewed {
		t.Errorf("old lease renewed after handoff: %+v", r)
	}
	release(t, s1, holderA.ID, ref(a)) // a stale release must not free B's lease
	if got := lockState(t, s1, lock); got.Holder != holderB.ID || got.Token != b.Token {
		t.Errorf("stale release freed the new lease: %s", describe(got))
	}
}

// testTokenAcrossRelease: tokens grow strictly across many handoffs.
func testTokenAcrossRelease(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "TOKENS"
	var last int64
	for i := range 20 {
		hd := []store.Holder{holderA, holderB, holderC}[i%3]
		st := mustAcquire(t, s, hd, lock, longTTL)
		if st.Token <= last {
			t.Fatalf("round %d: token %d, want > %d", i, st.Token, last)
		}
		last = st.Token
		release(t, s, hd.ID, ref(st))
	}
}

// testTokenAcrossExpiry: the same holder re-acquiring its own expired lease
// gets a new, greater token.
func testTokenAcrossExpiry(t *testing.T, h Harness) {
	s := open(t, h)
	const lock = "TOKENS-EXPIRY"
	first := mustAcquire(t, s, holderA, lock, h.short())
	var again store.LockState
	waitFor(t, "the expired lease is re-acquired", func() bool {
		again = acquireOne(t, s, holderA, lock, longTTL)
		return again.Acquired
	})
	if again.Token <= first.Token {
		t.Errorf("token after expiry = %d, want > %d", again.Token, first.Token)
	}
	if r := renewOne(t, s, holderA.ID, ref(first), longTTL); r.Renewed {
		t.Errorf("the expired lease's token still renews: %+v", r)
	}
}

// testTokenAcrossReopen: state and the token counter survive closing every
// handle and opening a new one.
func testTokenAcrossReopen(t *testing.T, h Harness) {
	s1 := open(t, h)
	a := mustAcquire(t, s1, holderA, "REOPEN", longTTL)
	release(t, s1, holderA.ID, ref(a))
	held := mustAcquire(t, s1, holderA, "REOPEN-HELD", longTTL)
	disable(t, s1, "REOPEN-DISABLED", "kept across reopen", "suite")
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := open(t, h)
	if got := lockState(t, s2, "REOPEN-HELD"); got.Holder != holderA.ID || got.Token != held.Token || !got.Held() {
		t.Errorf("held lease after reopen: %s, want holder %q token %d", describe(got), holderA.ID, held.Token)
	}
	if got := lockState(t, s2, "REOPEN-DISABLED"); !got.Disabled || got.Reason != "kept across reopen" {
		t.Errorf("disabled lock after reopen: %s", describe(got))
	}
	b := mustAcquire(t, s2, holderB, "REOPEN", longTTL)
	if b.Token <= a.Token || b.Token <= held.Token {
		t.Errorf("token after reopen = %d, want > %d and > %d", b.Token, a.Token, held.Token)
	}
}

// testTokenAcrossDelete: an operator deleting records does not reset tokens.
func testTokenAcrossDelete(t *testing.T, h Harness) {
	if h.DeleteRecords == nil {
		t.Skip("Harness.DeleteRecords is nil")
	}
	s := open(t, h)
	freed := mustAcquire(t, s, holderA, "DELETE-FREED", longTTL)
	release(t, s, holderA.ID, ref(freed))
	held := mustAcquire(t, s, holderA, "DELETE-HELD", longTTL)
	disable(t, s, "DELETE-DISABLED", "to be deleted", "suite")
	keep := mustAcquire(t, s, holderA, "DELETE-KEPT", longTTL)

	h.DeleteRecords(t, "DELETE-FREED", "DELETE-HELD", "DELETE-DISABLED")

	all, err := s.Locks(testCtx(t))
	if err != nil {
		t.Fatalf("Locks(): %v", err)
	}
	if got := names(all); len(got) != 1 || got[0] != "DELETE-KEPT" {
		t.Errorf("Locks() after deleting records = %q, want only DELETE-KEPT", got)
	}
	if got := lockState(t, s, "DELETE-HELD"); got.Holder != "" || got.Held() || got.Disabled {
		t.Errorf("deleted record still reported: %s", describe(got))
	}

	max := max(freed.Token, held.Token, keep.Token)
	got := acquire(t, s, holderB, longTTL, "DELETE-FREED", "DELETE-HELD", "DELETE-DISABLED")
	for l, st := range got {
		if !st.Acquired {
			t.Errorf("%s not acquirable after its record was deleted: %s", l, describe(st))
		} else if st.Token <= max {
			t.Errorf("%s: token %d after deleting records, want > %d", l, st.Token, max)
		}
	}
	if r := renewOne(t, s, holderA.ID, ref(held), longTTL); r.Renewed {
		t.Errorf("lease of a deleted record still renews: %+v", r)
	}
}

// testExpiryByStore: a short lease blocks others until the store says it
// expired, then another holder takes it. Local elapsed time bounds the
// store's: before ttl has passed locally since the first call began, the
// lease cannot have expired; the takeover cannot return before ttl.
func testExpiryByStore(t *testing.T, h Harness) {
	s1, s2 := open(t, h), open(t, h)
	const lock = "EXPIRY"
	start := time.Now()
	a := mustAcquire(t, s1, holderA, lock, h.short())
	checkTTL(t, "short lease", a.TTL, h.short())

	st := acquireOne(t, s2, holderB, lock, longTTL)
	if elapsed := time.Since(start); elapsed < h.short()-clockSlack {
		if st.Acquired {
			t.Fatalf("lease taken %v after a %v lease was granted: %s", elapsed, h.short(), describe(st))
		}
		if st.Holder != holderA.ID || !st.Held() {
			t.Errorf("refusal reports %s, want A's unexpired lease", describe(st))
		}
	} else {
		t.Logf("machine too slow to check the refusal: %v elapsed", elapsed)
	}

	var b store.LockState
	waitFor(t, "B acquires the expired lease", func() bool {
		b = acquireOne(t, s2, holderB, lock, longTTL)
		return b.Acquired
	})
	if elapsed := time.Since(start); elapsed < h.short()-clockSlack {
		t.Errorf("lease of %v taken over after only %v", h.short(), elapsed)
	}
	if b.Token <= a.Token {
		t.Errorf("token after expiry = %d, want > %d", b.Token, a.Token)
	}
	if r := renewOne(t, s1, holderA.ID, ref(a), longTTL); r.Renewed {
		t.Errorf("expired and taken-over lease renewed: %+v", r)
	}
}
