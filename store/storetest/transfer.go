package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Conformance tests of store.Transfers: a release that gives the lock to
// its successor in the same commit.

func transfers(t *testing.T, s store.Store) store.Transfers {
	t.Helper()
	tr, ok := s.(store.Transfers)
	if !ok {
		t.Skipf("storetest: %T does not implement store.Transfers; transfer tests skipped", s)
	}
	return tr
}

func transfer(t *testing.T, s store.Store, holderID string, ttl time.Duration, refs ...store.LeaseRef) {
	t.Helper()
	// An executor's handle has read the member list when it names a
	// successor; a store may use that read (etcd gives without reading
	// first when nothing changed since).
	if ms, ok := s.(store.Membership); ok {
		if _, err := ms.Members(testCtx(t), store.MemberFilter{}); err != nil {
			t.Fatalf("Members: %v", err)
		}
	}
	if err := transfers(t, s).Transfer(testCtx(t), holderID, refs, ttl); err != nil {
		t.Fatalf("Transfer(%s, %+v): %v", holderID, refs, err)
	}
}

// announced writes the member records of holders (on a store with
// Membership) through a handle of their own, so that locks may be given
// to them.
func announced(t *testing.T, h Harness, holders ...store.Holder) {
	t.Helper()
	s := open(t, h)
	ms, ok := s.(store.Membership)
	if !ok {
		return
	}
	for _, hd := range holders {
		ms.Announce(store.Member{ID: hd.ID, Info: hd.Info}, longTTL)
		mustAcquire(t, s, hd, "TR-MEMBER-"+hd.ID, longTTL) // writes the record
	}
}

func to(st store.LockState, successor string) store.LeaseRef {
	r := ref(st)
	r.Successor = successor
	return r
}

// testTransferGivesLock: the successor holds the lock after the transfer,
// with a greater token, a fresh lease of the asked TTL, its member info,
// and neither the old hand-off request nor a reservation; the old lease is
// gone, and nobody else may take the lock.
func testTransferGivesLock(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	b := open(t, h) // the successor's own handle
	announced(t, h, holderB)
	old := mustAcquire(t, s, holderA, "TR-GIVE", longTTL)
	if _, ok := s.(store.Handoffs); ok {
		requestHandoff(t, s, "TR-GIVE", holderB.ID)
	}
	ttl := 10 * time.Second
	transfer(t, s, holderA.ID, ttl, to(old, holderB.ID))
	got := lockState(t, s, "TR-GIVE")
	if got.Holder != holderB.ID || !got.Held() || got.Token <= old.Token {
		t.Fatalf("after the transfer: %s, want held by %s with a token greater than %d", describe(got), holderB.ID, old.Token)
	}
	checkTTL(t, "the transferred lease", got.TTL, ttl+h.slack())
	// A backend with coarse leases grants up to a granularity less, and
	// another handle's report may fall short by as much again.
	if got.TTL < ttl-time.Second-2*h.LeaseGranularity {
		t.Errorf("the transferred lease has %v left, want about %v", got.TTL, ttl)
	}
	if _, ok := s.(store.Membership); ok && got.HolderInfo != holderB.Info {
		t.Errorf("HolderInfo = %q, want the successor's member info %q", got.HolderInfo, holderB.Info)
	}
	if got.Revoked || got.HandoffRequested || got.ReservedFor != "" {
		t.Errorf("the new lease carries revoked %v, hand-off request %v, reservation %q", got.Revoked, got.HandoffRequested, got.ReservedFor)
	}
	if res := renewOne(t, s, holderA.ID, ref(old), longTTL); res.Renewed {
		t.Error("the old lease still renews after the transfer")
	}
	mustNotAcquire(t, s, holderA, "TR-GIVE", longTTL)
	mustNotAcquire(t, s, holderC, "TR-GIVE", longTTL)
	if res := renewOne(t, b, holderB.ID, ref(got), longTTL); !res.Renewed {
		t.Fatal("the successor cannot renew its transferred lease")
	}
	release(t, b, holderB.ID, ref(got))
	next := mustAcquire(t, s, holderC, "TR-GIVE", longTTL)
	if next.Token <= got.Token {
		t.Errorf("after the successor's release: token %d, want more than %d", next.Token, got.Token)
	}
}

// testTransferFenced: a transfer of a lease that is not the caller's, of a
// stale token, or of an expired lease changes nothing.
func testTransferFenced(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	announced(t, h, holderB)
	st := mustAcquire(t, s, holderA, "TR-FENCE", longTTL)
	transfer(t, s, holderC.ID, longTTL, to(st, holderB.ID))
	stale := to(st, holderB.ID)
	stale.Token--
	transfer(t, s, holderA.ID, longTTL, stale)
	if got := lockState(t, s, "TR-FENCE"); got.Holder != holderA.ID || got.Token != st.Token {
		t.Fatalf("after transfers by another holder and of a stale token: %s, want %s's lease %d untouched", describe(got), holderA.ID, st.Token)
	}

	short := mustAcquire(t, s, holderA, "TR-EXPIRED", h.short())
	waitFor(t, "the short lease to expire", func() bool { return !lockState(t, s, "TR-EXPIRED").Held() })
	transfer(t, s, holderA.ID, longTTL, to(short, holderB.ID))
	if got := lockState(t, s, "TR-EXPIRED"); got.Held() {
		t.Fatalf("an expired lease was transferred: %s", describe(got))
	}
	mustAcquire(t, s, holderC, "TR-EXPIRED", longTTL)
}

// testTransferRevokedReleases: a revoked lease, or one of a disabled lock,
// is released, never given: the successor must not become master of a
// disabled lock.
func testTransferRevokedReleases(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	announced(t, h, holderB)
	st := mustAcquire(t, s, holderA, "TR-REVOKED", longTTL)
	disable(t, s, "TR-REVOKED", "maintenance", "ops")
	transfer(t, s, holderA.ID, longTTL, to(st, holderB.ID))
	got := lockState(t, s, "TR-REVOKED")
	if got.Held() || got.Holder == holderB.ID {
		t.Fatalf("a revoked lease was transferred: %s", describe(got))
	}
	mustNotAcquire(t, s, holderB, "TR-REVOKED", longTTL)
	enable(t, s, "TR-REVOKED", "ops")
	mustAcquire(t, s, holderC, "TR-REVOKED", longTTL)
}

// testTransferBatch: one call gives some locks and releases others (refs
// without a successor), each as asked.
func testTransferBatch(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	announced(t, h, holderB)
	given := mustAcquire(t, s, holderA, "TR-BATCH-GIVEN", longTTL)
	freed := mustAcquire(t, s, holderA, "TR-BATCH-FREED", longTTL)
	transfer(t, s, holderA.ID, longTTL, to(given, holderB.ID), ref(freed))
	if got := lockState(t, s, "TR-BATCH-GIVEN"); got.Holder != holderB.ID || !got.Held() {
		t.Errorf("the lock with a successor: %s, want held by %s", describe(got), holderB.ID)
	}
	if got := lockState(t, s, "TR-BATCH-FREED"); got.Held() {
		t.Errorf("the lock without a successor: %s, want free", describe(got))
	}
	mustAcquire(t, s, holderC, "TR-BATCH-FREED", longTTL)
}

// testTransferSilentSuccessor: a lock given to a successor that never
// renews it is free again within about two TTLs, however long the giver
// goes on renewing its other leases. A store may give the lock on the
// giver's own lease (etcd does); then the giver's renewals must not keep
// the given lock alive.
func testTransferSilentSuccessor(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	announced(t, h, holderB)
	ttl := max(h.short(), time.Second)
	given := mustAcquire(t, s, holderA, "TR-SILENT-GIVEN", ttl)
	kept := mustAcquire(t, s, holderA, "TR-SILENT-KEPT", ttl)
	transfer(t, s, holderA.ID, ttl, to(given, holderB.ID))
	sent := time.Now()
	if got := lockState(t, s, "TR-SILENT-GIVEN"); got.Holder != holderB.ID || !got.Held() {
		t.Fatalf("after the transfer: %s, want held by %s", describe(got), holderB.ID)
	}
	// One TTL after the giver's first renewal, which may keep the lease
	// the lock was given on alive once more (to move its own locks off it).
	limit := 2*ttl + h.LeaseGranularity + h.slack()
	for lockState(t, s, "TR-SILENT-GIVEN").Held() {
		if res := renewOne(t, s, holderA.ID, ref(kept), ttl); !res.Renewed {
			t.Fatalf("the giver's other lease did not renew: %+v", res)
		}
		if d := time.Since(sent); d > limit {
			t.Fatalf("the lock given to a successor that never renewed it is still held %v after the transfer (limit %v), while the giver renewed its other lease", d, limit)
		}
		time.Sleep(ttl / 5)
	}
	if res := renewOne(t, s, holderA.ID, ref(kept), ttl); !res.Renewed {
		t.Fatalf("the giver's other lease did not renew: %+v", res)
	}
	mustAcquire(t, s, holderC, "TR-SILENT-GIVEN", longTTL)
}

// testTransferTokensGrow: leases handed back and forth keep getting
// greater tokens, also beside acquisitions of other locks.
func testTransferTokensGrow(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	announced(t, h, holderA, holderB)
	st := mustAcquire(t, s, holderA, "TR-TOKENS", longTTL)
	holders := []store.Holder{holderA, holderB}
	for i := range 6 {
		from, next := holders[i%2], holders[(i+1)%2]
		mustAcquire(t, s, holderC, fmt.Sprintf("TR-TOKENS-OTHER-%d", i), longTTL)
		transfer(t, s, from.ID, longTTL, to(st, next.ID))
		got := lockState(t, s, "TR-TOKENS")
		if got.Holder != next.ID || got.Token <= st.Token {
			t.Fatalf("transfer %d (%s to %s): %s, want held by %s with a token greater than %d", i, from.ID, next.ID, describe(got), next.ID, st.Token)
		}
		st = got
	}
}

// testTransferPushed: the successor learns of its lease from a push, and
// the hints, when sent, name it and the new token.
func testTransferPushed(t *testing.T, h Harness) {
	sub := open(t, h)
	n := notifier(t, sub)
	s := open(t, h)
	transfers(t, s)
	announced(t, h, holderB)
	st := mustAcquire(t, s, holderA, "TR-PUSH", longTTL)
	ch := subscribe(t, n)
	transfer(t, s, holderA.ID, longTTL, to(st, holderB.ID))
	got := lockState(t, s, "TR-PUSH")
	if got.Holder != holderB.ID {
		t.Fatalf("after the transfer: %s, want held by %s", describe(got), holderB.ID)
	}
	c := nextChange(t, ch, `a lease change of "TR-PUSH"`, "Transfer", func(c store.Change) bool {
		return c.Kind == store.ChangeLease && c.Lock == "TR-PUSH"
	})
	want := store.Change{Kind: store.ChangeLease, Lock: "TR-PUSH", Holder: holderB.ID, Token: got.Token}
	if bare := (store.Change{Kind: c.Kind, Lock: c.Lock}); c != want && (h.Hints || c != bare) {
		t.Fatalf("after Transfer: pushed %+v, want %+v", c, want)
	}
}

// testTransferNotToDepartedMember: on a store that keeps members, a
// successor without a member record (never announced, or left) is not
// given the lock: the lease is released, reserved for it as asked. Once
// an instance's Leave has committed, no lease can be given to it, which is
// what lets it find every lease given to it with one read.
func testTransferNotToDepartedMember(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	membership(t, s)
	st := mustAcquire(t, s, holderA, "TR-DEPARTED", longTTL)
	r := to(st, holderB.ID)
	r.Reserve = longTTL
	transfer(t, s, holderA.ID, longTTL, r)
	got := lockState(t, s, "TR-DEPARTED")
	if got.Held() {
		t.Fatalf("given to a successor that never announced itself: %s", describe(got))
	}
	if _, ok := s.(store.Handoffs); ok && got.ReservedFor != holderB.ID {
		t.Errorf("released without the reservation for %s: %s", holderB.ID, describe(got))
	}

	// The giver's handle read the member list while the successor was in
	// it, as an executor's balancer had when it named the successor; the
	// successor left before the transfer. A store that gives on that read
	// must find out at the commit.
	b := open(t, h)
	bm := b.(store.Membership)
	bm.Announce(store.Member{ID: holderC.ID, Info: holderC.Info}, longTTL)
	mustAcquire(t, b, holderC, "TR-DEPARTED-OTHER", longTTL)
	st = mustAcquire(t, s, holderA, "TR-DEPARTED-2", longTTL)
	if ms, err := s.(store.Membership).Members(testCtx(t), store.MemberFilter{}); err != nil || !slices.ContainsFunc(ms, func(m store.Member) bool { return m.ID == holderC.ID }) {
		t.Fatalf("Members before the Leave: %+v, %v; want %s in it", ms, err, holderC.ID)
	}
	if err := bm.Leave(testCtx(t), holderC.ID); err != nil {
		t.Fatalf("Leave(%s): %v", holderC.ID, err)
	}
	if err := transfers(t, s).Transfer(testCtx(t), holderA.ID, []store.LeaseRef{to(st, holderC.ID)}, longTTL); err != nil {
		t.Fatalf("Transfer: %v", err)
	}
	if got := lockState(t, s, "TR-DEPARTED-2"); got.Held() {
		t.Fatalf("given to a successor after its Leave: %s", describe(got))
	}
}

// testTransferredLeaseControlled: the given lease is the lock's lease for
// the controls as for its holder: a hand-off request names it, a Disable
// revokes it (the successor's renewal says so), and the successor's
// release frees the lock. A store whose token did not change with the
// transfer would leave the successor's lease unrevoked under a disable.
func testTransferredLeaseControlled(t *testing.T, h Harness) {
	s := open(t, h)
	transfers(t, s)
	b := open(t, h)
	announced(t, h, holderB)
	st := mustAcquire(t, s, holderA, "TR-CONTROL", longTTL)
	transfer(t, s, holderA.ID, longTTL, to(st, holderB.ID))
	got := lockState(t, s, "TR-CONTROL")
	if got.Holder != holderB.ID || got.Token <= st.Token {
		t.Fatalf("after the transfer: %s, want held by %s with a token greater than %d", describe(got), holderB.ID, st.Token)
	}
	if _, ok := s.(store.Handoffs); ok {
		if hs := requestHandoff(t, s, "TR-CONTROL", holderC.ID); !hs.HandoffRequested || hs.Token != got.Token {
			t.Errorf("a hand-off request after the transfer: %s, want one on token %d", describe(hs), got.Token)
		}
		if res := renewOne(t, b, holderB.ID, ref(got), longTTL); !res.Renewed || !res.HandoffRequested || res.HandoffTo != holderC.ID {
			t.Errorf("the successor's renewal after a hand-off request: %+v, want renewed with the request to %s", res, holderC.ID)
		}
	}
	ch := disable(t, s, "TR-CONTROL", "maintenance", "ops")
	if !ch.State.Revoked || ch.State.Token != got.Token {
		t.Errorf("Disable after the transfer: %s, want token %d revoked", describe(ch.State), got.Token)
	}
	if res := renewOne(t, b, holderB.ID, ref(got), longTTL); !res.Revoked {
		t.Errorf("the successor's renewal after Disable: %+v, want revoked", res)
	}
	release(t, b, holderB.ID, ref(got))
	if got := lockState(t, s, "TR-CONTROL"); got.Held() {
		t.Errorf("after the successor's release: %s, want free", describe(got))
	}
	enable(t, s, "TR-CONTROL", "ops")
	if next := mustAcquire(t, s, holderC, "TR-CONTROL", longTTL); next.Token <= got.Token {
		t.Errorf("after the enable: token %d, want more than %d", next.Token, got.Token)
	}
}
