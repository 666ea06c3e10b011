package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Conformance tests of the cluster view: takeovers reported by Acquire,
// hand-offs (store.Handoffs) and members (store.Membership).

// testAcquireReportsTakeover: Acquire tells a takeover (the previous lease
// expired) from an acquisition of a released or never held lock.
func testAcquireReportsTakeover(t *testing.T, h Harness) {
	s := open(t, h)
	first := mustAcquire(t, s, holderA, "TAKEOVER", h.short())
	var second store.LockState
	waitFor(t, "the short lease to expire", func() bool {
		second = acquireOne(t, s, holderB, "TAKEOVER", longTTL)
		return second.Acquired
	})
	if second.PrevHolder != holderA.ID || second.PrevToken != first.Token || !second.PrevExpired {
		t.Errorf("after an expiry: prev = %q token %d expired %v, want %q token %d expired true",
			second.PrevHolder, second.PrevToken, second.PrevExpired, holderA.ID, first.Token)
	}
	release(t, s, holderB.ID, ref(second))
	third := mustAcquire(t, s, holderC, "TAKEOVER", longTTL)
	if third.PrevHolder != "" || third.PrevExpired {
		t.Errorf("after a release: prev = %q expired %v, want none", third.PrevHolder, third.PrevExpired)
	}
	fresh := mustAcquire(t, s, holderA, "TAKEOVER-FRESH", longTTL)
	if fresh.PrevHolder != "" || fresh.PrevExpired || fresh.PrevToken != 0 {
		t.Errorf("a never held lock: prev = %q token %d expired %v", fresh.PrevHolder, fresh.PrevToken, fresh.PrevExpired)
	}
}

func handoffs(t *testing.T, s store.Store) store.Handoffs {
	t.Helper()
	ho, ok := s.(store.Handoffs)
	if !ok {
		t.Skipf("storetest: %T does not implement store.Handoffs; hand-off tests skipped", s)
	}
	return ho
}

func requestHandoff(t *testing.T, s store.Store, lock, to string) store.LockState {
	t.Helper()
	st, err := handoffs(t, s).Handoff(testCtx(t), lock, to, "ops")
	if err != nil {
		t.Fatalf("Handoff(%q, to %q): %v", lock, to, err)
	}
	return st
}

// testHandoffRequestSeenByHolder: a request reaches the holder's renewal
// and every reader; the lease itself is untouched.
func testHandoffRequestSeenByHolder(t *testing.T, h Harness) {
	s := open(t, h)
	handoffs(t, s)
	st := mustAcquire(t, s, holderA, "HO-REQ", longTTL)
	got := requestHandoff(t, s, "HO-REQ", holderB.ID)
	if !got.HandoffRequested || got.HandoffTo != holderB.ID || got.Holder != holderA.ID || got.Token != st.Token {
		t.Errorf("Handoff returned %s requested=%v to=%q", describe(got), got.HandoffRequested, got.HandoffTo)
	}
	res := renewOne(t, s, holderA.ID, ref(st), longTTL)
	if !res.Renewed || !res.HandoffRequested || res.HandoffTo != holderB.ID {
		t.Errorf("Renew = %+v, want renewed with the hand-off request to %q", res, holderB.ID)
	}
	other := lockState(t, open(t, h), "HO-REQ")
	if !other.HandoffRequested || other.HandoffTo != holderB.ID {
		t.Errorf("Locks on another handle: requested=%v to=%q", other.HandoffRequested, other.HandoffTo)
	}
	// To anyone.
	st2 := mustAcquire(t, s, holderA, "HO-ANY", longTTL)
	requestHandoff(t, s, "HO-ANY", "")
	if res := renewOne(t, s, holderA.ID, ref(st2), longTTL); !res.HandoffRequested || res.HandoffTo != "" {
		t.Errorf("Renew after a request to anyone = %+v", res)
	}
}

// testHandoffRefused: a free, expired or disabled lock cannot be handed
// off.
func testHandoffRefused(t *testing.T, h Harness) {
	s := open(t, h)
	ho := handoffs(t, s)
	ctx := testCtx(t)
	if _, err := ho.Handoff(ctx, "HO-FREE", "", "ops"); !isErr(err, store.ErrNotHeld) {
		t.Errorf("hand-off of an unknown lock: %v, want ErrNotHeld", err)
	}
	st := mustAcquire(t, s, holderA, "HO-RELEASED", longTTL)
	release(t, s, holderA.ID, ref(st))
	if _, err := ho.Handoff(ctx, "HO-RELEASED", "", "ops"); !isErr(err, store.ErrNotHeld) {
		t.Errorf("hand-off of a released lock: %v, want ErrNotHeld", err)
	}
	mustAcquire(t, s, holderA, "HO-DISABLED", longTTL)
	disable(t, s, "HO-DISABLED", "maintenance", "ops")
	if _, err := ho.Handoff(ctx, "HO-DISABLED", "", "ops"); !isErr(err, store.ErrLockDisabled) {
		t.Errorf("hand-off of a disabled lock: %v, want ErrLockDisabled", err)
	}
	if _, err := ho.Handoff(ctx, "", "", "ops"); !isErr(err, store.ErrInvalidLockName) {
		t.Errorf("hand-off of an invalid name: %v, want ErrInvalidLockName", err)
	}
}

// testHandoffClearedByDisable: a disable cancels a pending request (the
// holder stops for the disable instead).
func testHandoffClearedByDisable(t *testing.T, h Harness) {
	s := open(t, h)
	handoffs(t, s)
	st := mustAcquire(t, s, holderA, "HO-RACE", longTTL)
	requestHandoff(t, s, "HO-RACE", holderB.ID)
	disable(t, s, "HO-RACE", "race", "ops")
	res := renewOne(t, s, holderA.ID, ref(st), longTTL)
	if res.HandoffRequested || !res.Revoked {
		t.Errorf("Renew after hand-off then disable = %+v, want revoked and no hand-off", res)
	}
}

// testHandoffReservesForSuccessor: a release naming a successor keeps the
// lock for it, and only it, until the reservation lapses.
func testHandoffReservesForSuccessor(t *testing.T, h Harness) {
	s := open(t, h)
	handoffs(t, s)
	st := mustAcquire(t, s, holderA, "HO-RESERVE", longTTL)
	requestHandoff(t, s, "HO-RESERVE", holderB.ID)
	r := ref(st)
	r.Successor, r.Reserve = holderB.ID, longTTL
	release(t, s, holderA.ID, r)
	got := mustNotAcquire(t, s, holderC, "HO-RESERVE", longTTL)
	if got.ReservedFor != holderB.ID || got.ReservedTTL <= 0 || got.ReservedTTL > longTTL+clockSlack {
		t.Errorf("refused acquisition shows reserved for %q ttl %v, want %q within %v", got.ReservedFor, got.ReservedTTL, holderB.ID, longTTL)
	}
	if got.HandoffRequested {
		t.Error("the request survived the release")
	}
	next := mustAcquire(t, s, holderB, "HO-RESERVE", longTTL)
	if next.Token <= st.Token || next.PrevExpired {
		t.Errorf("successor's lease %s, want a greater token than %d and no takeover", describe(next), st.Token)
	}
	if next.ReservedFor != "" {
		t.Errorf("reservation %q survived the successor's acquisition", next.ReservedFor)
	}
	if res := renewOne(t, s, holderB.ID, ref(next), longTTL); res.HandoffRequested {
		t.Error("the new lease inherited the old hand-off request")
	}
}

// testHandoffReservationLapses: a successor that never comes (a dead
// instance) holds the lock only for the reservation.
func testHandoffReservationLapses(t *testing.T, h Harness) {
	s := open(t, h)
	handoffs(t, s)
	st := mustAcquire(t, s, holderA, "HO-LAPSE", longTTL)
	r := ref(st)
	r.Successor, r.Reserve = "holder-gone", h.short()
	release(t, s, holderA.ID, r)
	mustNotAcquire(t, s, holderC, "HO-LAPSE", longTTL)
	waitFor(t, "the reservation to lapse", func() bool {
		return acquireOne(t, s, holderC, "HO-LAPSE", longTTL).Acquired
	})
}

// testHandoffNotifies: a request is pushed, so that the holder renews at
// once.
func testHandoffNotifies(t *testing.T, h Harness) {
	sub := open(t, h)
	n := notifier(t, sub)
	s := open(t, h)
	handoffs(t, s)
	mustAcquire(t, s, holderA, "HO-PUSH", longTTL)
	ch := subscribe(t, n)
	requestHandoff(t, s, "HO-PUSH", "")
	expectNotification(t, ch, "HO-PUSH", "Handoff")
}

// testNotifierDeliversAcquisitions: an acquisition is pushed, so that
// followers learn of a new master within one round trip.
func testNotifierDeliversAcquisitions(t *testing.T, h Harness) {
	sub := open(t, h)
	n := notifier(t, sub)
	s := open(t, h)
	ch := subscribe(t, n)
	mustAcquire(t, s, holderA, "N-ACQUIRE", longTTL)
	expectNotification(t, ch, "N-ACQUIRE", "Acquire")
}

func membership(t *testing.T, s store.Store) store.Membership {
	t.Helper()
	m, ok := s.(store.Membership)
	if !ok {
		t.Skipf("storetest: %T does not implement store.Membership; member tests skipped", s)
	}
	return m
}

func members(t *testing.T, s store.Store, f store.MemberFilter) []store.Member {
	t.Helper()
	got, err := membership(t, s).Members(testCtx(t), f)
	if err != nil {
		t.Fatalf("Members(%+v): %v", f, err)
	}
	return got
}

func memberIDs(ms []store.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// testMembersWrittenByCalls: Announce makes no call; the next Acquire or
// Renew for the member writes the record, readable from another handle.
func testMembersWrittenByCalls(t *testing.T, h Harness) {
	s := open(t, h)
	ms := membership(t, s)
	reader := open(t, h)
	a := store.Member{ID: holderA.ID, Info: holderA.Info, Locks: []string{"M-2", "M-1"}, LockSetID: "set-1", Masters: 1, Weight: 2}
	ms.Announce(a, longTTL)
	if got := members(t, reader, store.MemberFilter{}); len(got) != 0 {
		t.Fatalf("Announce alone wrote %v: it must make no call", memberIDs(got))
	}
	st := mustAcquire(t, s, holderA, "M-1", longTTL)
	got := members(t, reader, store.MemberFilter{})
	if len(got) != 1 {
		t.Fatalf("after Acquire: members %v, want %q", memberIDs(got), holderA.ID)
	}
	m := got[0]
	if m.ID != a.ID || m.Info != a.Info || m.LockCount != 2 || m.LockSetID != "set-1" || m.Masters != 1 || m.Weight != 2 {
		t.Errorf("member %+v, want id %q info %q 2 locks set-1 1 master weight 2", m, a.ID, a.Info)
	}
	if m.Locks != nil {
		t.Errorf("Locks %v returned without WithLocks", m.Locks)
	}
	if m.TTL <= 0 || m.TTL > longTTL+clockSlack || m.SeenAt.IsZero() {
		t.Errorf("TTL %v SeenAt %v", m.TTL, m.SeenAt)
	}
	withLocks := members(t, reader, store.MemberFilter{WithLocks: true})
	if len(withLocks) != 1 || !slices.Equal(withLocks[0].Locks, []string{"M-1", "M-2"}) {
		t.Errorf("WithLocks: %+v, want locks [M-1 M-2] sorted", withLocks)
	}

	// Renew writes it too, with what was announced since.
	a.Masters, a.Locks, a.LockSetID = 0, []string{"M-3"}, "set-2"
	ms.Announce(a, longTTL)
	renewOne(t, s, holderA.ID, ref(st), longTTL)
	got = members(t, reader, store.MemberFilter{WithLocks: true})
	if len(got) != 1 || got[0].Masters != 0 || got[0].LockSetID != "set-2" || !slices.Equal(got[0].Locks, []string{"M-3"}) {
		t.Errorf("after Renew with a new lock set: %+v", got)
	}
	if by := members(t, reader, store.MemberFilter{Lock: "M-1"}); len(by) != 0 {
		t.Errorf("filter by a lock the member left: %v", memberIDs(by))
	}
	if by := members(t, reader, store.MemberFilter{Lock: "M-3"}); len(by) != 1 {
		t.Errorf("filter by the member's lock: %v", memberIDs(by))
	}
}

// testMembersFilterByLock: the candidates of a lock are the members taking
// part in it, sorted by id.
func testMembersFilterByLock(t *testing.T, h Harness) {
	s := open(t, h)
	ms := membership(t, s)
	for i, locks := range [][]string{{"F-1", "F-2"}, {"F-2"}, {"F-3"}} {
		hd := holderN(i)
		ms.Announce(store.Member{ID: hd.ID, Info: hd.Info, Locks: locks, LockSetID: locks[0]}, longTTL)
		acquire(t, s, hd, longTTL, locks...)
	}
	check := func(lock string, want ...string) {
		t.Helper()
		if got := memberIDs(members(t, s, store.MemberFilter{Lock: lock})); !slices.Equal(got, want) {
			t.Errorf("members of %q = %v, want %v", lock, got, want)
		}
	}
	check("F-1", holderN(0).ID)
	check("F-2", holderN(0).ID, holderN(1).ID)
	check("F-3", holderN(2).ID)
	check("F-NONE")
	if got := memberIDs(members(t, s, store.MemberFilter{})); !slices.Equal(got, []string{holderN(0).ID, holderN(1).ID, holderN(2).ID}) {
		t.Errorf("all members = %v, want sorted by id", got)
	}
}

// testMembersExpire: a member that stops calling disappears by itself;
// one that keeps renewing stays.
func testMembersExpire(t *testing.T, h Harness) {
	s := open(t, h)
	ms := membership(t, s)
	ms.Announce(store.Member{ID: holderA.ID, Locks: []string{"E-1"}, LockSetID: "e"}, h.short())
	// B's record lives 5 short TTLs and is renewed every short TTL / 3:
	// generous, so that a loaded machine does not expire it between calls.
	bTTL := 5 * h.short()
	ms.Announce(store.Member{ID: holderB.ID, Locks: []string{"E-2"}, LockSetID: "e2"}, bTTL)
	mustAcquire(t, s, holderA, "E-1", longTTL)
	b := mustAcquire(t, s, holderB, "E-2", longTTL)
	first := members(t, s, store.MemberFilter{})
	deadline := time.Now().Add(bTTL + h.short())
	for time.Now().Before(deadline) {
		renewOne(t, s, holderB.ID, ref(b), longTTL)
		time.Sleep(h.short() / 3)
	}
	got := members(t, s, store.MemberFilter{})
	if ids := memberIDs(got); !slices.Equal(ids, []string{holderB.ID}) {
		t.Fatalf("members = %v, want only %q: a silent member must expire, a renewing one stay", ids, holderB.ID)
	}
	if len(first) != 2 || !got[0].SeenAt.After(first[1].SeenAt) {
		t.Errorf("renewals did not refresh the record: first %+v, now %+v", first, got)
	}
}

// testMembersFreshWhileCalling: a member that keeps calling is read as
// having called lately. Its record's age (the part of its TTL run out),
// less the RefreshLag the store reports, stays within the gap between its
// calls. The balancer judges from that whether a peer is alive: a store
// that refreshed the record less often than it says (etcd's keepalive
// once a third of the TTL has passed, before RefreshLag) made a live
// follower look silent, and each member counted a different lineup.
func testMembersFreshWhileCalling(t *testing.T, h Harness) {
	s := open(t, h)
	ms := membership(t, s)
	reader := open(t, h)
	const ttl = 18 * time.Second
	ms.Announce(store.Member{ID: holderA.ID, Locks: []string{"F-1"}, LockSetID: "f"}, ttl)
	began := time.Now()
	st := mustAcquire(t, s, holderA, "F-1", longTTL)
	// Calls for a little under a third of the TTL: a store that refreshes
	// once a third has passed has not refreshed since the Acquire.
	var last time.Time
	for time.Since(began) < ttl/3-1200*time.Millisecond {
		time.Sleep(400 * time.Millisecond)
		last = time.Now()
		renewOne(t, s, holderA.ID, ref(st), longTTL)
	}
	got := members(t, reader, store.MemberFilter{})
	// Taken after the read, as the balancer does: the TTL left is the
	// store's at some moment of the call, so a slow call makes the record
	// look younger by at most its own length, never older (taken before
	// it, a read 12 ms slow failed PostgreSQL in CI).
	readAt := time.Now()
	if len(got) != 1 {
		t.Fatalf("members %v, want %q", memberIDs(got), holderA.ID)
	}
	m := got[0]
	if m.RefreshLag < 0 || m.RefreshLag > ttl/3 {
		t.Errorf("RefreshLag %v: a record may lag its member's calls by at most a third of its TTL (%v)", m.RefreshLag, ttl/3)
	}
	seen := readAt.Add(-(ttl - m.TTL) + m.RefreshLag)
	// A backend with coarse leases may grant the record's lease shorter
	// than asked and report whole units left, each up to a unit (etcd:
	// one second, and half a second more for its expiry tick), which the
	// estimate counts as age.
	behind, bound := last.Sub(seen), h.slack()+clockSlack+h.LeaseGranularity+h.LeaseGranularity/2
	t.Logf("the record reads %v behind the member's last call (bound %v)", behind.Round(time.Millisecond), bound)
	if behind > bound {
		t.Errorf("the member called %v ago, but its record (TTL %v of %v, RefreshLag %v) says it was seen %v before that: "+
			"a live member reads as silent", readAt.Sub(last).Round(time.Millisecond), m.TTL, ttl, m.RefreshLag, behind.Round(time.Millisecond))
	}
}

// testMembersLeave: Leave deletes the record at once, and the handle stops
// writing it.
func testMembersLeave(t *testing.T, h Harness) {
	s := open(t, h)
	ms := membership(t, s)
	ms.Announce(store.Member{ID: holderA.ID, Locks: []string{"L-1"}, LockSetID: "l"}, longTTL)
	st := mustAcquire(t, s, holderA, "L-1", longTTL)
	if len(members(t, s, store.MemberFilter{})) != 1 {
		t.Fatal("precondition: member not written")
	}
	if err := ms.Leave(testCtx(t), holderA.ID); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if got := members(t, s, store.MemberFilter{}); len(got) != 0 {
		t.Errorf("after Leave: %v", memberIDs(got))
	}
	renewOne(t, s, holderA.ID, ref(st), longTTL)
	if got := members(t, s, store.MemberFilter{}); len(got) != 0 {
		t.Errorf("a renewal after Leave wrote the member again: %v", memberIDs(got))
	}
}

// testMembersPerHandle: a handle writes only what was announced on it.
func testMembersPerHandle(t *testing.T, h Harness) {
	s := open(t, h)
	membership(t, s).Announce(store.Member{ID: holderA.ID, Locks: []string{"P-1"}, LockSetID: "p"}, longTTL)
	other := open(t, h)
	mustAcquire(t, other, holderA, "P-1", longTTL)
	if got := members(t, other, store.MemberFilter{}); len(got) != 0 {
		t.Errorf("another handle's Acquire wrote the member: %v", memberIDs(got))
	}
}

// expectChange waits for a change of kind about lock.
func expectChange(t *testing.T, ch <-chan store.Change, kind store.ChangeKind, lock, after string) {
	t.Helper()
	nextChange(t, ch, fmt.Sprintf("%s change for %q", kind, lock), after, func(c store.Change) bool {
		return c.Kind == kind && c.Lock == lock
	})
}

// testNotifierHints: the hints of a lease change are true of the commit
// it announces (and present, when the harness says the backend sets them,
// which the backend declares with store.LeaseHinter): an acquisition
// names its holder and token, a release reserved for a successor names
// it, and a release to anyone names nobody.
func testNotifierHints(t *testing.T, h Harness) {
	sub := open(t, h)
	n := notifier(t, sub)
	// What the store declares (store.LeaseHinter) is what the harness
	// says, so that the suite holds the declaration to the hints below.
	if declared := store.HintsLeases(sub); declared != h.Hints {
		t.Fatalf("the harness says Hints = %v, but %T declares %v (store.LeaseHinter): a receiver treats a lease change without hints from a store that declares them as a lock that may be free", h.Hints, sub, declared)
	}
	s := open(t, h)
	ch := subscribe(t, n)
	// next takes the next lease change of lock, failing on a false hint.
	next := func(lock, after string, want store.Change) {
		t.Helper()
		got := nextChange(t, ch, fmt.Sprintf("a lease change of %q", lock), after, func(c store.Change) bool {
			return c.Kind == store.ChangeLease && c.Lock == lock
		})
		if bare := (store.Change{Kind: got.Kind, Lock: got.Lock}); got != want && (h.Hints || got != bare) {
			t.Fatalf("after %s: pushed %+v, want %+v", after, got, want)
		}
	}
	st := mustAcquire(t, s, holderA, "H-LEASE", longTTL)
	next("H-LEASE", "Acquire", store.Change{Kind: store.ChangeLease, Lock: "H-LEASE", Holder: holderA.ID, Token: st.Token})
	release(t, s, holderA.ID, ref(st))
	next("H-LEASE", "Release", store.Change{Kind: store.ChangeLease, Lock: "H-LEASE"})
	st = mustAcquire(t, s, holderB, "H-LEASE", longTTL)
	next("H-LEASE", "a second Acquire", store.Change{Kind: store.ChangeLease, Lock: "H-LEASE", Holder: holderB.ID, Token: st.Token})
	if _, ok := s.(store.Handoffs); !ok {
		return
	}
	r := ref(st)
	r.Successor, r.Reserve = holderC.ID, longTTL
	release(t, s, holderB.ID, r)
	next("H-LEASE", "a Release reserved for a successor", store.Change{Kind: store.ChangeLease, Lock: "H-LEASE", ReservedFor: holderC.ID})
	st = mustAcquire(t, s, holderC, "H-LEASE", longTTL)
	next("H-LEASE", "the successor's Acquire", store.Change{Kind: store.ChangeLease, Lock: "H-LEASE", Holder: holderC.ID, Token: st.Token})
}

// testNotifierKinds: each change is pushed with its kind: leases
// (acquire, release), controls (disable, enable, hand-off request),
// history appends, and members joining and leaving.
func testNotifierKinds(t *testing.T, h Harness) {
	sub := open(t, h)
	n := notifier(t, sub)
	s := open(t, h)
	ch := subscribe(t, n)
	st := mustAcquire(t, s, holderA, "K-LEASE", longTTL)
	expectChange(t, ch, store.ChangeLease, "K-LEASE", "Acquire")
	release(t, s, holderA.ID, ref(st))
	expectChange(t, ch, store.ChangeLease, "K-LEASE", "Release")
	disable(t, s, "K-CONTROL", "kinds", "ops")
	expectChange(t, ch, store.ChangeControl, "K-CONTROL", "Disable")
	enable(t, s, "K-CONTROL", "ops")
	expectChange(t, ch, store.ChangeControl, "K-CONTROL", "Enable")
	if ho, ok := s.(store.Handoffs); ok {
		mustAcquire(t, s, holderA, "K-HANDOFF", longTTL)
		if _, err := ho.Handoff(testCtx(t), "K-HANDOFF", "", "ops"); err != nil {
			t.Fatalf("Handoff: %v", err)
		}
		expectChange(t, ch, store.ChangeControl, "K-HANDOFF", "Handoff")
	}
	if hs, ok := s.(store.History); ok {
		if err := hs.AppendEvents(testCtx(t), []store.Event{{Lock: "K-HISTORY", Kind: store.EventAcquired}}); err != nil {
			t.Fatalf("AppendEvents: %v", err)
		}
		expectChange(t, ch, store.ChangeHistory, "K-HISTORY", "AppendEvents")
	}
	if ms, ok := s.(store.Membership); ok {
		ms.Announce(store.Member{ID: holderB.ID, Locks: []string{"K-MEMBER"}, LockSetID: "k"}, longTTL)
		mustAcquire(t, s, holderB, "K-MEMBER", longTTL)
		expectChange(t, ch, store.ChangeMember, "", "a member's first record")
		if err := ms.Leave(testCtx(t), holderB.ID); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		expectChange(t, ch, store.ChangeMember, "", "Leave")
	}
}

// testNotifierRevokedHint: a Disable of a held lock is pushed naming the
// token it revoked (when the harness says the backend does; never a wrong
// one), and a Disable of a free lock, an Enable or a hand-off request name
// none.
func testNotifierRevokedHint(t *testing.T, h Harness) {
	sub := open(t, h)
	n := notifier(t, sub)
	s := open(t, h)
	ch := subscribe(t, n)
	next := func(lock, after string, want int64) {
		t.Helper()
		got := nextChange(t, ch, fmt.Sprintf("a control change of %q", lock), after, func(c store.Change) bool {
			return c.Kind == store.ChangeControl && c.Lock == lock
		})
		if got.Revoked != want && (h.ControlHints || got.Revoked != 0) {
			t.Fatalf("after %s: pushed %+v, want Revoked %d", after, got, want)
		}
	}
	st := mustAcquire(t, s, holderA, "RH-HELD", longTTL)
	disable(t, s, "RH-HELD", "hint", "ops")
	next("RH-HELD", "a Disable of a held lock", st.Token)
	enable(t, s, "RH-HELD", "ops")
	next("RH-HELD", "Enable", 0)
	disable(t, s, "RH-FREE", "hint", "ops")
	next("RH-FREE", "a Disable of a free lock", 0)
	if _, ok := s.(store.Handoffs); ok {
		mustAcquire(t, s, holderA, "RH-HANDOFF", longTTL)
		requestHandoff(t, s, "RH-HANDOFF", "")
		next("RH-HANDOFF", "Handoff", 0)
	}
}
