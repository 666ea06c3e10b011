// Package storetest is the conformance suite every store.Store backend runs
// against a real server (or, for embedded backends, a real file).
//
// A backend's test calls Run with a function that builds a fresh, isolated
// namespace (its own table prefix, schema or file) for each subtest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Harness {
//			path := filepath.Join(t.TempDir(), "masterjob.db")
//			return storetest.Harness{
//				Open:          func(t *testing.T) store.Store { ... open path, WithHistoryLimit(1200) ... },
//				DeleteRecords: func(t *testing.T, locks ...string) { ... DELETE ... },
//				HistoryLimit:  1200,
//			}
//		})
//	}
//
// The suite checks the promises of package store: one unexpired lease per
// lock, fencing by (holder, token), tokens that grow across release, expiry,
// reopening and deleted records, expiry decided by the store's clock,
// controls checked atomically with acquisition, batched calls, input
// validation, closed handles and cancelled contexts, for backends that
// implement store.Notifier, push notifications, and for backends that
// implement store.History, the audit history (order, filters, paging,
// limits, retention, verbatim values), and, for backends with a server
// (Harness.OpenVia), that a handle answers soon after an outage ends. Tests
// of a capability the backend lacks are skipped, saying so.
//
// Every subtest runs in parallel with the others on its own namespace. Tests
// that depend on time wait for conditions by polling with generous deadlines;
// no assertion rests on a fixed sleep. Short leases (a few hundred
// milliseconds) are used where expiry must be observed, so a backend must
// honour sub-second TTLs, unless its Harness.LeaseGranularity says
// otherwise.
//
// Requirements the suite makes explicit beyond the doc comments of package
// store:
//   - A lease released with Release leaves the lock's record in place:
//     Locks reports it with an empty Holder and the released lease's Token.
//   - Locks orders by lock name in byte order (Go's string order), whatever
//     the database's collation.
//   - Acquire checks every name before doing anything: one invalid name fails
//     the whole call and takes no lock.
//   - A call made with an already cancelled context fails with an error
//     wrapping the context's error and changes nothing.
//   - Subscribe is listening when it returns: a change committed by another
//     handle after Subscribe returned is delivered (in the absence of
//     connection failures).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Harness gives the suite access to one fresh, isolated store namespace (own
// table prefix / schema / file).
type Harness struct {
	// Open returns a new handle on the same namespace each call (reopen the
	// file / new pool). The suite closes what it opens.
	Open func(t *testing.T) store.Store
	// DeleteRecords deletes the named locks' records directly in the
	// database, as an operator might. The suite checks tokens still grow
	// afterwards.
	DeleteRecords func(t *testing.T, locks ...string)
	// HistoryLimit is the history retention the harness's stores were
	// opened with (their WithHistoryLimit), for backends that implement
	// store.History. The retention test appends about twice that many
	// entries, so keep it small; above store.MaxEventsLimit (1000) it lets
	// the suite check the cap on Limit too. 0 skips the tests that need it.
	HistoryLimit int
	// LeaseGranularity is the unit of the backend's lease TTLs, for a
	// backend that cannot grant leases to the millisecond (etcd grants
	// whole seconds, and shortens a lease so that its expiry check, every
	// 500 ms, still frees the lock within the asked duration). The suite
	// then raises its short leases to it, lets a granted lease fall short
	// of the asked duration by up to it, and compares the times and TTLs
	// of one lease as different handles report them within it. 0 for
	// backends with leases to the millisecond.
	LeaseGranularity time.Duration
	// Hints says the backend's Notifier sets the hints of lease changes
	// (store.Change's Holder, Token and ReservedFor): the suite then
	// requires them. Without it the suite still fails a hint that is set
	// and false.
	Hints bool
	// ControlHints says the backend's Notifier names the lease a Disable
	// revoked (store.Change.Revoked): the suite then requires it. Without
	// it the suite still fails a Revoked that is set and false.
	ControlHints bool
	// Server is the host:port of the backend's server, and OpenVia opens
	// a handle like Open's that reaches that server through addr
	// (host:port) instead: on Linux the suite puts a TCP proxy there and
	// cuts it (Outage/AnswersSoonAfter). Leave both unset for a backend
	// without a server.
	Server  string
	OpenVia func(t *testing.T, addr string) store.Store
}

// short is the short lease of the suite, raised to the backend's lease
// granularity.
func (h Harness) short() time.Duration { return max(shortTTL, h.LeaseGranularity) }

// slack bounds the difference between two reports of one store time or
// TTL.
func (h Harness) slack() time.Duration { return clockSlack + h.LeaseGranularity }

// near reports whether two store timestamps are equal up to h's slack.
func (h Harness) near(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -h.slack() && d < h.slack()
}

// testCase is one conformance test.
type testCase struct {
	name string
	fn   func(t *testing.T, h Harness)
}

// tests lists every conformance test, grouped by prefix.
var tests = []testCase{
	{"Acquire/FreeLock", testAcquireFreeLock},
	{"Acquire/HeldByOtherIsRefused", testAcquireHeldByOther},
	{"Acquire/OwnLeaseReturnedUnchanged", testAcquireOwnLease},
	{"Acquire/MixedBatch", testAcquireMixedBatch},
	{"Acquire/EmptyBatchIsNoop", testEmptyBatch},
	{"Acquire/ReportsTakeover", testAcquireReportsTakeover},

	{"Renew/ExtendsLease", testRenewExtends},
	{"Renew/WrongTokenRefused", testRenewWrongToken},
	{"Renew/WrongHolderRefused", testRenewWrongHolder},
	{"Renew/ExpiredLeaseRefused", testRenewExpired},
	{"Renew/BatchReportsLostLeases", testRenewBatchLost},

	{"Release/Fenced", testReleaseFenced},
	{"Release/OtherAcquiresImmediately", testReleaseOtherAcquires},

	{"Token/GrowsAcrossRelease", testTokenAcrossRelease},
	{"Token/GrowsAcrossExpiry", testTokenAcrossExpiry},
	{"Token/GrowsAcrossReopen", testTokenAcrossReopen},
	{"Token/GrowsAcrossDeletedRecords", testTokenAcrossDelete},

	{"Expiry/DecidedByStoreClock", testExpiryByStore},

	{"Concurrency/OneWinnerPerFreshLock", testConcurrencyFreshLocks},
	{"Concurrency/OneWinnerAfterEachRelease", testConcurrencySameLock},
	{"Concurrency/OverlappingBatchesInAnyOrder", testConcurrencyBatches},

	{"Control/DisabledLockRefusesAcquisition", testDisabledRefuses},
	{"Control/DisableCreatesRecord", testDisableCreatesRecord},
	{"Control/DisableTwiceUnchanged", testDisableTwice},
	{"Control/EnableChanges", testEnableChanges},
	{"Control/DisableRevokesLease", testDisableRevokes},
	{"Control/RevokedLeaseBlocksUntilExpiry", testRevokedLeaseExpires},
	{"Control/AuditFieldsRecorded", testAuditFields},
	{"Control/DisableAtomicWithAcquire", testDisableAtomic},

	{"Batch/ThousandLocks", testThousandLocks},

	{"Locks/ListsEveryKnownLockSorted", testLocksListsAll},
	{"Locks/UnknownNamesFreeAndEnabled", testLocksUnknown},

	{"Names/InvalidRejected", testInvalidNames},
	{"Names/UnusualButValid", testUnusualNames},

	{"Close/CallsAfterCloseFail", testClosed},
	{"Context/CancelledFailsFast", testCancelledContext},

	{"Notifier/DeliversChanges", testNotifierDelivers},
	{"Notifier/ClosesOnCancel", testNotifierCloses},
	{"Notifier/DeliversAcquisitions", testNotifierDeliversAcquisitions},
	{"Notifier/Kinds", testNotifierKinds},
	{"Notifier/Hints", testNotifierHints},
	{"Notifier/RevokedHint", testNotifierRevokedHint},
	{"Notifier/NoSilentLoss", testNotifierNoSilentLoss},

	{"Handoff/RequestSeenByHolder", testHandoffRequestSeenByHolder},
	{"Handoff/RefusedWithoutMasterOrWhenDisabled", testHandoffRefused},
	{"Handoff/ClearedByDisable", testHandoffClearedByDisable},
	{"Handoff/ReleaseReservesForSuccessor", testHandoffReservesForSuccessor},
	{"Handoff/ReservationLapses", testHandoffReservationLapses},
	{"Handoff/RequestIsPushed", testHandoffNotifies},

	{"Transfer/GivesLockToSuccessor", testTransferGivesLock},
	{"Transfer/Fenced", testTransferFenced},
	{"Transfer/RevokedLeaseReleased", testTransferRevokedReleases},
	{"Transfer/Batch", testTransferBatch},
	{"Transfer/TokensGrow", testTransferTokensGrow},
	{"Transfer/SilentSuccessor", testTransferSilentSuccessor},
	{"Transfer/Pushed", testTransferPushed},
	{"Transfer/NotToDepartedMember", testTransferNotToDepartedMember},
	{"Transfer/LeaseControlled", testTransferredLeaseControlled},

	{"Members/WrittenByAcquireAndRenew", testMembersWrittenByCalls},
	{"Members/FilterByLock", testMembersFilterByLock},
	{"Members/Expire", testMembersExpire},
	{"Members/FreshWhileCalling", testMembersFreshWhileCalling},
	{"Members/Leave", testMembersLeave},
	{"Members/WrittenOnlyByTheAnnouncingHandle", testMembersPerHandle},

	{"History/AppendedNewestFirst", testHistoryNewestFirst},
	{"History/FilterByLock", testHistoryFilter},
	{"History/BeforeIDPaging", testHistoryPaging},
	{"History/Limit", testHistoryLimit},
	{"History/RetentionBound", testHistoryRetention},
	{"History/ValuesStoredVerbatim", testHistoryVerbatim},
	{"History/InvalidLockRejected", testHistoryInvalidLock},
	{"History/EmptyBatchIsNoop", testHistoryEmptyBatch},
	{"History/SharedAcrossHandles", testHistoryShared},
	{"History/ConcurrentAppends", testHistoryConcurrent},
	{"History/CancelledContextFailsFast", testHistoryCancelled},
	{"History/CallsAfterCloseFail", testHistoryClosed},
}

// Run runs every conformance test; newHarness is called once per subtest
// with that subtest's t, and must clean up via t.Cleanup.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if h.Open == nil {
				t.Fatal("storetest: Harness.Open is nil")
			}
			tc.fn(t, h)
		})
	}
}

// Timing used throughout the suite.
const (
	// longTTL is a lease that never expires during a test.
	longTTL = 30 * time.Second
	// shortTTL is a lease a test waits out.
	shortTTL = 300 * time.Millisecond
	// waitLimit bounds every wait for a condition; generous so that a slow
	// CI machine does not flake.
	waitLimit = 15 * time.Second
	// pollEvery is the interval between polls of a condition.
	pollEvery = 20 * time.Millisecond
	// clockSlack absorbs the rounding of store timestamps (milliseconds in
	// some backends) when comparing store durations with local ones.
	clockSlack = 5 * time.Millisecond
)

// Holders used by the tests.
var (
	holderA = store.Holder{ID: "holder-a", Info: `{"host":"host-a","pid":101}`}
	holderB = store.Holder{ID: "holder-b", Info: `{"host":"host-b","pid":202}`}
	holderC = store.Holder{ID: "holder-c", Info: `{"host":"host-c","pid":303}`}
)

func holderN(i int) store.Holder {
	return store.Holder{ID: fmt.Sprintf("holder-%02d", i), Info: fmt.Sprintf(`{"n":%d}`, i)}
}

// open opens a handle and closes it when the test ends.
func open(t *testing.T, h Harness) store.Store {
	t.Helper()
	s := h.Open(t)
	if s == nil {
		t.Fatal("storetest: Harness.Open returned nil")
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testCtx is the context of a test's store calls: bounded, so that a hung
// backend fails the test instead of the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// acquire calls Acquire and checks that it returns exactly one state per
// distinct name; it returns the states by lock name.
func acquire(t *testing.T, s store.Store, h store.Holder, ttl time.Duration, locks ...string) map[string]store.LockState {
	t.Helper()
	got, err := s.Acquire(testCtx(t), h, locks, ttl)
	if err != nil {
		t.Fatalf("Acquire(%s, %d locks, %v): %v", h.ID, len(locks), ttl, err)
	}
	return statesByName(t, "Acquire", got, locks)
}

func statesByName(t *testing.T, op string, got []store.LockState, locks []string) map[string]store.LockState {
	t.Helper()
	want := map[string]bool{}
	for _, l := range locks {
		want[l] = true
	}
	m := make(map[string]store.LockState, len(got))
	for _, st := range got {
		if !want[st.Lock] {
			t.Fatalf("%s returned a state for %q, which was not asked for", op, st.Lock)
		}
		if _, dup := m[st.Lock]; dup {
			t.Fatalf("%s returned two states for %q", op, st.Lock)
		}
		m[st.Lock] = st
	}
	if len(m) != len(want) {
		t.Fatalf("%s returned %d states for %d distinct locks", op, len(m), len(want))
	}
	return m
}

// acquireOne acquires one lock and returns its state, acquired or not.
func acquireOne(t *testing.T, s store.Store, h store.Holder, lock string, ttl time.Duration) store.LockState {
	t.Helper()
	return acquire(t, s, h, ttl, lock)[lock]
}

// mustAcquire acquires one lock and fails the test unless it was taken.
func mustAcquire(t *testing.T, s store.Store, h store.Holder, lock string, ttl time.Duration) store.LockState {
	t.Helper()
	st := acquireOne(t, s, h, lock, ttl)
	if !st.Acquired {
		t.Fatalf("%s could not acquire %q: %s", h.ID, lock, describe(st))
	}
	return st
}

// mustNotAcquire tries one lock and fails the test if it was taken.
func mustNotAcquire(t *testing.T, s store.Store, h store.Holder, lock string, ttl time.Duration) store.LockState {
	t.Helper()
	st := acquireOne(t, s, h, lock, ttl)
	if st.Acquired {
		t.Fatalf("%s acquired %q, which it should not have: %s", h.ID, lock, describe(st))
	}
	return st
}

// renew calls Renew and checks it returns exactly one result per ref,
// echoing the ref's lock and token; it returns results by lock name.
func renew(t *testing.T, s store.Store, holderID string, ttl time.Duration, refs ...store.LeaseRef) map[string]store.RenewResult {
	t.Helper()
	got, err := s.Renew(testCtx(t), holderID, refs, ttl)
	if err != nil {
		t.Fatalf("Renew(%s, %d leases): %v", holderID, len(refs), err)
	}
	want := map[string]int64{}
	for _, r := range refs {
		want[r.Lock] = r.Token
	}
	if len(got) != len(refs) {
		t.Fatalf("Renew returned %d results for %d leases", len(got), len(refs))
	}
	m := make(map[string]store.RenewResult, len(got))
	for _, r := range got {
		tok, ok := want[r.Lock]
		if !ok {
			t.Fatalf("Renew returned a result for %q, which was not asked for", r.Lock)
		}
		if r.Token != tok {
			t.Fatalf("Renew result for %q has token %d, the ref had %d", r.Lock, r.Token, tok)
		}
		if _, dup := m[r.Lock]; dup {
			t.Fatalf("Renew returned two results for %q", r.Lock)
		}
		m[r.Lock] = r
	}
	return m
}

func renewOne(t *testing.T, s store.Store, holderID string, ref store.LeaseRef, ttl time.Duration) store.RenewResult {
	t.Helper()
	return renew(t, s, holderID, ttl, ref)[ref.Lock]
}

func release(t *testing.T, s store.Store, holderID string, refs ...store.LeaseRef) {
	t.Helper()
	if err := s.Release(testCtx(t), holderID, refs); err != nil {
		t.Fatalf("Release(%s, %d leases): %v", holderID, len(refs), err)
	}
}

// lockState returns the store's view of one lock.
func lockState(t *testing.T, s store.Store, lock string) store.LockState {
	t.Helper()
	got, err := s.Locks(testCtx(t), lock)
	if err != nil {
		t.Fatalf("Locks(%q): %v", lock, err)
	}
	if len(got) != 1 || got[0].Lock != lock {
		t.Fatalf("Locks(%q) returned %d states (%v), want exactly that lock", lock, len(got), names(got))
	}
	return got[0]
}

func disable(t *testing.T, s store.Store, lock, reason, by string) store.ControlChange {
	t.Helper()
	ch, err := s.Disable(testCtx(t), lock, reason, by)
	if err != nil {
		t.Fatalf("Disable(%q): %v", lock, err)
	}
	if ch.State.Lock != lock {
		t.Fatalf("Disable(%q) returned the state of %q", lock, ch.State.Lock)
	}
	return ch
}

func enable(t *testing.T, s store.Store, lock, by string) store.ControlChange {
	t.Helper()
	ch, err := s.Enable(testCtx(t), lock, by)
	if err != nil {
		t.Fatalf("Enable(%q): %v", lock, err)
	}
	if ch.State.Lock != lock {
		t.Fatalf("Enable(%q) returned the state of %q", lock, ch.State.Lock)
	}
	return ch
}

func ref(st store.LockState) store.LeaseRef { return store.LeaseRef{Lock: st.Lock, Token: st.Token} }

func names(states []store.LockState) []string {
	out := make([]string, len(states))
	for i, s := range states {
		out[i] = s.Lock
	}
	return out
}

func describe(st store.LockState) string {
	return fmt.Sprintf("{lock=%q holder=%q token=%d ttl=%v acquired=%v revoked=%v disabled=%v reason=%q}",
		st.Lock, st.Holder, st.Token, st.TTL, st.Acquired, st.Revoked, st.Disabled, st.Reason)
}

// waitFor polls cond until it returns true, failing the test after
// waitLimit. what describes the condition for the failure message.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", waitLimit, what)
		}
		select {
		case <-time.After(pollEvery):
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting until %s", what)
		}
	}
}

// checkTTL fails unless 0 < ttl <= max and ttl is not far below max (the
// call that returned it took at most that long).
func checkTTL(t *testing.T, what string, got, max time.Duration) {
	t.Helper()
	if got <= 0 || got > max+clockSlack {
		t.Errorf("%s: TTL = %v, want in (0, %v]", what, got, max)
	}
	if got < max/2 {
		t.Errorf("%s: TTL = %v, far below the %v just granted", what, got, max)
	}
}

// isErr reports whether err wraps target.
func isErr(err, target error) bool { return err != nil && errors.Is(err, target) }
