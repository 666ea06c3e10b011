package storetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
	"github.com/masterjob/masterjob/store/storetest"
)

// The suite is checked the way it checks backends: against a real one
// (memstore) that passes, and against copies of it with one deliberate bug
// each (mutants), which the subtests aimed at that bug must catch.

const mutantEnv = "MASTERJOB_STORETEST_MUTANT"

// historyLimit is the retention the harness declares (Harness.HistoryLimit).
const historyLimit = 1200

// memHarness builds memstores keeping keep history entries, each handle
// wrapped by wrap; the harness declares historyLimit.
func memHarness(wrap func(store.Store) store.Store, keep int) func(t *testing.T) storetest.Harness {
	return func(t *testing.T) storetest.Harness {
		ms := memstore.New(memstore.WithHistoryLimit(keep))
		// The hints are held to what the wrapped store declares: a
		// mutant that embeds the store.Store interface declares none.
		return storetest.Harness{
			Open:          func(t *testing.T) store.Store { return wrap(ms.Reopen()) },
			DeleteRecords: func(t *testing.T, locks ...string) { ms.DeleteRecords(locks...) },
			HistoryLimit:  historyLimit,
			Hints:         store.HintsLeases(wrap(ms)),
		}
	}
}

// TestSuiteOnMemstore: the suite passes on a correct backend.
func TestSuiteOnMemstore(t *testing.T) {
	storetest.Run(t, memHarness(func(s store.Store) store.Store { return s }, historyLimit))
}

// Each mutant embeds the real store and overrides one method with a bug.
type (
	renewAlwaysSucceeds   struct{ store.Store }
	ownLeaseReacquired    struct{ store.Store }
	locksUnsorted         struct{ store.Store }
	closeIgnored          struct{ store.Store }
	contextIgnored        struct{ store.Store }
	namesErrorUnwrapped   struct{ store.Store }
	releaseUnfenced       struct{ store.Store }
	leaseTooShort         struct{ store.Store }
	revocationHidden      struct{ store.Store }
	controlAlwaysChanged  struct{ store.Store }
	unknownLocksOmitted   struct{ store.Store }
	disableChecksLate     struct{ store.Store }
	tokenReportedStale    struct{ store.Store }
	renewResultsTruncated struct{ store.Store }

	// History mutants embed the memstore itself, so that they keep its
	// store.History methods.
	eventsOldestFirst     struct{ *memstore.Store }
	eventsFilterIgnored   struct{ *memstore.Store }
	eventsBeforeInclusive struct{ *memstore.Store }
	eventsLimitIgnored    struct{ *memstore.Store }
	eventTextTrimmed      struct{ *memstore.Store }
	eventBatchPartial     struct{ *memstore.Store }

	// Cluster mutants embed the memstore too, for its store.Handoffs,
	// store.Membership and store.Notifier methods: without them the tests
	// aimed at the bug would be skipped, and pass.
	reservationIgnored    struct{ *memstore.Store }
	transferIsRelease     struct{ *memstore.Store }
	transferUnfenced      struct{ *memstore.Store }
	handoffHidden         struct{ *memstore.Store }
	takeoverUnreported    struct{ *memstore.Store }
	acquisitionsNotPushed struct{ *memstore.Store }
	hintsFalse            struct{ *memstore.Store }
	lossUnannounced       struct{ *memstore.Store }
)

// Acquire takes a lock reserved for another holder as if it were free: it
// clears the reservation (by acquiring and releasing as the successor)
// before acquiring.
func (s reservationIgnored) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	states, err := s.Store.Locks(ctx, l...)
	if err != nil {
		return nil, err
	}
	for _, st := range states {
		if st.ReservedFor == "" || st.ReservedFor == h.ID || st.ReservedTTL <= 0 || st.Held() {
			continue
		}
		got, err := s.Store.Acquire(ctx, store.Holder{ID: st.ReservedFor}, []string{st.Lock}, ttl)
		if err == nil && got[0].Acquired {
			_ = s.Store.Release(ctx, st.ReservedFor, []store.LeaseRef{{Lock: st.Lock, Token: got[0].Token}})
		}
	}
	return s.Store.Acquire(ctx, h, l, ttl)
}

func (s handoffHidden) Renew(ctx context.Context, id string, l []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	res, err := s.Store.Renew(ctx, id, l, ttl)
	for i := range res {
		res[i].HandoffRequested, res[i].HandoffTo = false, ""
	}
	return res, err
}

func (s takeoverUnreported) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	res, err := s.Store.Acquire(ctx, h, l, ttl)
	for i := range res {
		res[i].PrevHolder, res[i].PrevToken, res[i].PrevExpired = "", 0, false
	}
	return res, err
}

// Subscribe drops the lease changes of locks that are held when the change
// arrives: acquisitions, as a backend that pushes only releases would.
func (s acquisitionsNotPushed) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return rewritten(ctx, s.Store, func(c store.Change) (store.Change, bool) {
		if c.Kind == store.ChangeLease {
			if st, err := s.Store.Locks(context.WithoutCancel(ctx), c.Lock); err == nil && st[0].Held() {
				return c, false
			}
		}
		return c, true
	})
}

// rewritten subscribes to ms and passes on what f makes of each change,
// dropping those it refuses.
func rewritten(ctx context.Context, ms *memstore.Store, f func(store.Change) (store.Change, bool)) (<-chan store.Change, error) {
	in, err := ms.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan store.Change)
	go func() {
		defer close(out)
		for c := range in {
			c, ok := f(c)
			if !ok {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				for range in { // until the store closes it
				}
				return
			}
		}
	}()
	return out, nil
}

// expiredMemberReturned's Members returns, beside the live members, every
// member it returned before for the same filter that has not left since:
// expired members too.
type expiredMemberReturned struct {
	*memstore.Store
	mu   sync.Mutex
	seen map[store.MemberFilter]map[string]store.Member
}

func (s *expiredMemberReturned) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	res, err := s.Store.Members(ctx, f)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := s.seen[f]
	if seen == nil {
		seen = map[string]store.Member{}
		s.seen[f] = seen
	}
	for _, m := range res {
		seen[m.ID] = m
	}
	for id, m := range seen {
		if !slices.ContainsFunc(res, func(r store.Member) bool { return r.ID == id }) {
			res = append(res, m)
		}
	}
	slices.SortFunc(res, func(a, b store.Member) int { return strings.Compare(a.ID, b.ID) })
	return res, nil
}

func (s *expiredMemberReturned) Leave(ctx context.Context, id string) error {
	s.mu.Lock()
	for _, seen := range s.seen {
		delete(seen, id)
	}
	s.mu.Unlock()
	return s.Store.Leave(ctx, id)
}

func (s eventsOldestFirst) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	res, err := s.Store.Events(ctx, f)
	slices.Reverse(res)
	return res, err
}

func (s eventsFilterIgnored) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	f.Lock = ""
	return s.Store.Events(ctx, f)
}

func (s eventsBeforeInclusive) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	if f.BeforeID > 0 {
		f.BeforeID++
	}
	return s.Store.Events(ctx, f)
}

func (s eventsLimitIgnored) Events(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	f.Limit = store.MaxEventsLimit
	return s.Store.Events(ctx, f)
}

func (s eventTextTrimmed) AppendEvents(ctx context.Context, events []store.Event) error {
	events = slices.Clone(events)
	for i := range events {
		events[i].Reason = strings.TrimSpace(events[i].Reason)
	}
	return s.Store.AppendEvents(ctx, events)
}

// AppendEvents appends the valid events of a batch one by one, so that an
// invalid one fails the call after the others were recorded.
func (s eventBatchPartial) AppendEvents(ctx context.Context, events []store.Event) error {
	for _, e := range events {
		if err := s.Store.AppendEvents(ctx, []store.Event{e}); err != nil {
			return err
		}
	}
	return nil
}

func mem(s store.Store) *memstore.Store { return s.(*memstore.Store) }

func (s renewAlwaysSucceeds) Renew(ctx context.Context, id string, l []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	res, err := s.Store.Renew(ctx, id, l, ttl)
	for i := range res {
		res[i].Renewed = true
	}
	return res, err
}

func (s ownLeaseReacquired) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	res, err := s.Store.Acquire(ctx, h, l, ttl)
	for i := range res {
		if res[i].Holder == h.ID {
			res[i].Acquired = true
		}
	}
	return res, err
}

func (s locksUnsorted) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	res, err := s.Store.Locks(ctx, names...)
	slices.Reverse(res)
	return res, err
}

func (closeIgnored) Close() error { return nil }

func (s contextIgnored) Acquire(_ context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	return s.Store.Acquire(context.Background(), h, l, ttl)
}

func (s namesErrorUnwrapped) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	ch, err := s.Store.Disable(ctx, lock, reason, by)
	if err != nil {
		err = errors.New(err.Error())
	}
	return ch, err
}

// Release frees whatever lease the lock has, whoever holds it.
func (s releaseUnfenced) Release(ctx context.Context, _ string, l []store.LeaseRef) error {
	for _, ref := range l {
		st, err := s.Store.Locks(ctx, ref.Lock)
		if err != nil {
			return err
		}
		if err := s.Store.Release(ctx, st[0].Holder, []store.LeaseRef{{Lock: ref.Lock, Token: st[0].Token}}); err != nil {
			return err
		}
	}
	return nil
}

// Transfer releases, giving the lock to nobody.
func (s transferIsRelease) Transfer(ctx context.Context, id string, l []store.LeaseRef, _ time.Duration) error {
	return s.Release(ctx, id, l)
}

// Transfer gives away whatever lease the lock has, whoever holds it.
func (s transferUnfenced) Transfer(ctx context.Context, _ string, l []store.LeaseRef, ttl time.Duration) error {
	for _, ref := range l {
		st, err := s.Store.Locks(ctx, ref.Lock)
		if err != nil {
			return err
		}
		ref.Token = st[0].Token
		if err := s.Store.Transfer(ctx, st[0].Holder, []store.LeaseRef{ref}, ttl); err != nil {
			return err
		}
	}
	return nil
}

func (s leaseTooShort) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	return s.Store.Acquire(ctx, h, l, ttl/10)
}

func (s revocationHidden) Renew(ctx context.Context, id string, l []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	res, err := s.Store.Renew(ctx, id, l, ttl)
	for i := range res {
		res[i].Revoked = false
	}
	return res, err
}

func (s controlAlwaysChanged) Disable(ctx context.Context, lock, reason, by string) (store.ControlChange, error) {
	ch, err := s.Store.Disable(ctx, lock, reason, by)
	ch.Changed = err == nil
	return ch, err
}

func (s unknownLocksOmitted) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	res, err := s.Store.Locks(ctx, names...)
	return slices.DeleteFunc(res, func(st store.LockState) bool { return st.Token == 0 && !st.Disabled }), err
}

// Acquire checks the control before taking, in a separate step: a Disable
// between the two is missed. (The enable/re-disable dance below emulates a
// backend whose acquisition ignores the mark it did not see.)
func (s disableChecksLate) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	before, err := s.Store.Locks(ctx, l...)
	if err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Millisecond) // widen the window
	var wasOff []string
	for _, st := range before {
		if !st.Disabled {
			after, err := s.Store.Locks(ctx, st.Lock)
			if err == nil && after[0].Disabled {
				wasOff = append(wasOff, st.Lock)
				_, _ = s.Store.Enable(ctx, st.Lock, "mutant")
			}
		}
	}
	res, err := s.Store.Acquire(ctx, h, l, ttl)
	for _, lock := range wasOff {
		// Re-disable without revoking: set the mark back on the record.
		_, _ = s.Store.Disable(ctx, lock, "race", "suite")
	}
	for i := range res {
		if slices.Contains(wasOff, res[i].Lock) && res[i].Acquired {
			res[i].Disabled = false
		}
	}
	return res, err
}

// Acquire reports the token of the lock's first ever lease, as a backend
// whose counter restarts would.
func (s tokenReportedStale) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	res, err := s.Store.Acquire(ctx, h, l, ttl)
	for i := range res {
		res[i].Token = 1
	}
	return res, err
}

func (s renewResultsTruncated) Renew(ctx context.Context, id string, l []store.LeaseRef, ttl time.Duration) ([]store.RenewResult, error) {
	res, err := s.Store.Renew(ctx, id, l, ttl)
	if len(res) > 1 {
		res = res[:len(res)-1]
	}
	return res, err
}

// memberRefreshUnsaid reports each member's record as if only the
// member's first Acquire had refreshed it, and says no RefreshLag: a store
// that keeps a record alive less often than it reports (etcd's keepalive
// once a third of the TTL had passed, before RefreshLag). The first calls
// are shared by every handle of the process (a mutant runs in a process
// of its own).
type memberRefreshUnsaid struct{ *memstore.Store }

var memberFirstCalls sync.Map // member id -> time.Time

func (s memberRefreshUnsaid) Acquire(ctx context.Context, h store.Holder, l []string, ttl time.Duration) ([]store.LockState, error) {
	memberFirstCalls.LoadOrStore(h.ID, time.Now())
	return s.Store.Acquire(ctx, h, l, ttl)
}

func (s memberRefreshUnsaid) Members(ctx context.Context, f store.MemberFilter) ([]store.Member, error) {
	res, err := s.Store.Members(ctx, f)
	for i, m := range res {
		if first, ok := memberFirstCalls.Load(m.ID); ok {
			// Its TTL as it would be had the record last been written at
			// the first call, not at the latest (SeenAt).
			res[i].TTL = max(m.TTL-m.SeenAt.Sub(first.(time.Time)), time.Millisecond)
			res[i].SeenAt = first.(time.Time)
		}
	}
	return res, err
}

var mutants = []struct {
	name  string
	wrap  func(store.Store) store.Store
	fails []string // subtests that must catch it
	keep  int      // history entries the store keeps; 0: as declared
}{
	{"renew-always-succeeds", func(s store.Store) store.Store { return renewAlwaysSucceeds{s} },
		[]string{"Renew/WrongTokenRefused", "Renew/WrongHolderRefused", "Renew/ExpiredLeaseRefused", "Renew/BatchReportsLostLeases"}, 0},
	{"own-lease-reacquired", func(s store.Store) store.Store { return ownLeaseReacquired{s} },
		[]string{"Acquire/OwnLeaseReturnedUnchanged", "Acquire/MixedBatch"}, 0},
	{"locks-unsorted", func(s store.Store) store.Store { return locksUnsorted{s} },
		[]string{"Locks/ListsEveryKnownLockSorted", "Locks/UnknownNamesFreeAndEnabled"}, 0},
	{"close-ignored", func(s store.Store) store.Store { return closeIgnored{s} },
		[]string{"Close/CallsAfterCloseFail"}, 0},
	{"context-ignored", func(s store.Store) store.Store { return contextIgnored{s} },
		[]string{"Context/CancelledFailsFast"}, 0},
	{"names-error-unwrapped", func(s store.Store) store.Store { return namesErrorUnwrapped{s} },
		[]string{"Names/InvalidRejected"}, 0},
	{"release-unfenced", func(s store.Store) store.Store { return releaseUnfenced{s} },
		[]string{"Release/Fenced", "Release/OtherAcquiresImmediately"}, 0},
	{"lease-too-short", func(s store.Store) store.Store { return leaseTooShort{s} },
		[]string{"Acquire/FreeLock", "Expiry/DecidedByStoreClock"}, 0},
	{"revocation-hidden", func(s store.Store) store.Store { return revocationHidden{s} },
		[]string{"Control/DisableRevokesLease", "Renew/BatchReportsLostLeases"}, 0},
	{"control-always-changed", func(s store.Store) store.Store { return controlAlwaysChanged{s} },
		[]string{"Control/DisableTwiceUnchanged"}, 0},
	{"unknown-locks-omitted", func(s store.Store) store.Store { return unknownLocksOmitted{s} },
		[]string{"Locks/UnknownNamesFreeAndEnabled"}, 0},
	{"disable-checks-late", func(s store.Store) store.Store { return disableChecksLate{s} },
		[]string{"Control/DisableAtomicWithAcquire"}, 0},
	{"token-reported-stale", func(s store.Store) store.Store { return tokenReportedStale{s} },
		[]string{"Token/GrowsAcrossRelease", "Token/GrowsAcrossReopen", "Token/GrowsAcrossDeletedRecords",
			"Concurrency/OneWinnerAfterEachRelease"}, 0},
	{"renew-results-truncated", func(s store.Store) store.Store { return renewResultsTruncated{s} },
		[]string{"Renew/BatchReportsLostLeases", "Batch/ThousandLocks"}, 0},
	{"events-oldest-first", func(s store.Store) store.Store { return eventsOldestFirst{mem(s)} },
		[]string{"History/AppendedNewestFirst", "History/BeforeIDPaging", "History/Limit"}, 0},
	{"events-filter-ignored", func(s store.Store) store.Store { return eventsFilterIgnored{mem(s)} },
		[]string{"History/FilterByLock", "History/BeforeIDPaging"}, 0},
	{"events-before-inclusive", func(s store.Store) store.Store { return eventsBeforeInclusive{mem(s)} },
		[]string{"History/BeforeIDPaging", "History/RetentionBound"}, 0},
	{"events-limit-ignored", func(s store.Store) store.Store { return eventsLimitIgnored{mem(s)} },
		[]string{"History/Limit", "History/BeforeIDPaging"}, 0},
	{"event-text-trimmed", func(s store.Store) store.Store { return eventTextTrimmed{mem(s)} },
		[]string{"History/ValuesStoredVerbatim"}, 0},
	{"event-batch-partial", func(s store.Store) store.Store { return eventBatchPartial{mem(s)} },
		[]string{"History/InvalidLockRejected"}, 0},
	{"reservation-ignored", func(s store.Store) store.Store { return reservationIgnored{mem(s)} },
		[]string{"Handoff/ReleaseReservesForSuccessor", "Handoff/ReservationLapses"}, 0},
	{"transfer-is-release", func(s store.Store) store.Store { return transferIsRelease{mem(s)} },
		[]string{"Transfer/GivesLockToSuccessor", "Transfer/Batch", "Transfer/TokensGrow", "Transfer/Pushed"}, 0},
	{"transfer-unfenced", func(s store.Store) store.Store { return transferUnfenced{mem(s)} },
		[]string{"Transfer/Fenced"}, 0},
	{"handoff-hidden", func(s store.Store) store.Store { return handoffHidden{mem(s)} },
		[]string{"Handoff/RequestSeenByHolder"}, 0},
	{"expired-member-returned", func(s store.Store) store.Store {
		return &expiredMemberReturned{Store: mem(s), seen: map[store.MemberFilter]map[string]store.Member{}}
	}, []string{"Members/Expire"}, 0},
	{"member-refresh-unsaid", func(s store.Store) store.Store { return memberRefreshUnsaid{mem(s)} },
		[]string{"Members/FreshWhileCalling"}, 0},
	{"takeover-unreported", func(s store.Store) store.Store { return takeoverUnreported{mem(s)} },
		[]string{"Acquire/ReportsTakeover"}, 0},
	{"acquisitions-not-pushed", func(s store.Store) store.Store { return acquisitionsNotPushed{mem(s)} },
		[]string{"Notifier/DeliversAcquisitions", "Notifier/Kinds"}, 0},
	{"hints-false", func(s store.Store) store.Store { return hintsFalse{mem(s)} },
		[]string{"Notifier/Hints"}, 0},
	{"loss-unannounced", func(s store.Store) store.Store { return lossUnannounced{mem(s)} },
		[]string{"Notifier/NoSilentLoss"}, 0},
	{"retention-too-long", func(s store.Store) store.Store { return s },
		[]string{"History/RetentionBound"}, historyLimit + 1},
	{"retention-too-short", func(s store.Store) store.Store { return s },
		[]string{"History/RetentionBound"}, historyLimit - 1},
}

// Subscribe pushes lease changes with false hints: an acquisition with
// the token before its own, a release reserved for an instance nobody
// named.
func (s hintsFalse) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return rewritten(ctx, s.Store, func(c store.Change) (store.Change, bool) {
		if c.Kind == store.ChangeLease {
			if c.Token > 0 {
				c.Token--
			} else {
				c.ReservedFor = "nobody-named-it"
			}
		}
		return c, true
	})
}

// Subscribe drops changes when the subscriber falls behind and keeps quiet
// about it, as every backend did before store.ChangeResync.
func (s lossUnannounced) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	return rewritten(ctx, s.Store, func(c store.Change) (store.Change, bool) {
		return c, c.Kind != store.ChangeResync
	})
}

// TestMutant runs the suite on the mutant named by the environment; it is
// run by TestMutantsAreCaught in a child process and skipped otherwise.
func TestMutant(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestMutantsAreCaught")
	}
	for _, m := range mutants {
		if m.name == name {
			keep := m.keep
			if keep == 0 {
				keep = historyLimit
			}
			storetest.Run(t, memHarness(m.wrap, keep))
			return
		}
	}
	t.Fatalf("unknown mutant %q", name)
}

// TestMutantsAreCaught: for each mutant, the subtests aimed at its bug fail.
func TestMutantsAreCaught(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("inside a mutant run")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot re-execute the test binary: %v", err)
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			// -test.run takes alternatives of whole slash-separated paths.
			var alts []string
			for _, sub := range m.fails {
				parts := strings.Split("TestMutant/"+sub, "/")
				for i, p := range parts {
					parts[i] = "^" + regexp.QuoteMeta(p) + "$"
				}
				alts = append(alts, strings.Join(parts, "/"))
			}
			pattern := strings.Join(alts, "|")
			cmd := exec.CommandContext(t.Context(), exe, "-test.run="+pattern, "-test.v")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed on mutant %s:\n%s", m.name, out)
			}
			for _, sub := range m.fails {
				if !strings.Contains(string(out), "--- FAIL: TestMutant/"+sub+" ") {
					t.Errorf("mutant %s: subtest %s did not fail:\n%s", m.name, sub, out)
				}
			}
		})
	}
}
