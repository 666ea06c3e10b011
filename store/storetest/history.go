package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Conformance tests of store.History. Each opens its handles with
// openHistory, which skips the test when the backend does not implement
// the capability. Events are told apart by their Reason ("e-0001", ...).

// historyHandle is a handle that keeps a history.
type historyHandle struct {
	store.Store
	store.History
}

// openHistory opens a handle and skips the test unless it implements
// store.History.
func openHistory(t *testing.T, h Harness) historyHandle {
	t.Helper()
	s := open(t, h)
	hs, ok := s.(store.History)
	if !ok {
		t.Skipf("%T does not implement store.History", s)
	}
	return historyHandle{s, hs}
}

// tagged returns n events on lock whose reasons are prefix-0000, prefix-0001...
func tagged(lock, prefix string, from, n int) []store.Event {
	kinds := []store.EventKind{store.EventAcquired, store.EventReleased, store.EventLost,
		store.EventDemoted, store.EventDisabled, store.EventEnabled}
	out := make([]store.Event, n)
	for i := range out {
		k := from + i
		out[i] = store.Event{
			Lock:     lock,
			Kind:     kinds[k%len(kinds)],
			Instance: fmt.Sprintf("instance-%d", k%3),
			Token:    int64(k + 1),
			Reason:   fmt.Sprintf("%s-%04d", prefix, k),
			Remote:   fmt.Sprintf("192.0.2.%d:%d", k%250, 1000+k),
		}
	}
	return out
}

func appendEvents(t *testing.T, s store.History, events ...store.Event) {
	t.Helper()
	if err := s.AppendEvents(testCtx(t), events); err != nil {
		t.Fatalf("AppendEvents(%d events): %v", len(events), err)
	}
}

func readEvents(t *testing.T, s store.History, f store.EventFilter) []store.Event {
	t.Helper()
	got, err := s.Events(testCtx(t), f)
	if err != nil {
		t.Fatalf("Events(%+v): %v", f, err)
	}
	checkNewestFirst(t, fmt.Sprintf("Events(%+v)", f), got)
	return got
}

// allEvents pages through every entry matching lock ("" for all), newest
// first.
func allEvents(t *testing.T, s store.History, lock string) []store.Event {
	t.Helper()
	var out []store.Event
	f := store.EventFilter{Lock: lock, Limit: store.MaxEventsLimit}
	for {
		page := readEvents(t, s, f)
		out = append(out, page...)
		if len(page) < store.MaxEventsLimit {
			break
		}
		f.BeforeID = page[len(page)-1].ID
	}
	checkNewestFirst(t, "all pages", out)
	return out
}

// checkNewestFirst fails unless IDs strictly decrease.
func checkNewestFirst(t *testing.T, what string, events []store.Event) {
	t.Helper()
	for i := 1; i < len(events); i++ {
		if events[i].ID >= events[i-1].ID {
			t.Fatalf("%s: entry %d has ID %d after ID %d; want strictly decreasing IDs (newest first)",
				what, i, events[i].ID, events[i-1].ID)
		}
	}
}

func reasons(events []store.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Reason
	}
	return out
}

// newestFirst returns the reasons of events in reverse order of appending.
func newestFirst(events ...[]store.Event) []string {
	var out []string
	for _, batch := range events {
		out = append(out, reasons(batch)...)
	}
	slices.Reverse(out)
	return out
}

// sameEvent compares what the caller gave with what the store returned;
// ID and At are the store's.
func sameEvent(want, got store.Event) bool {
	return want.Lock == got.Lock && want.Kind == got.Kind && want.Instance == got.Instance &&
		want.Token == got.Token && want.Reason == got.Reason && want.Remote == got.Remote
}

func describeEvent(e store.Event) string {
	return fmt.Sprintf("{id=%d lock=%q kind=%q instance=%q token=%d reason=%q remote=%q at=%v}",
		e.ID, e.Lock, e.Kind, e.Instance, e.Token, e.Reason, e.Remote, e.At)
}

// testHistoryNewestFirst: two batches come back newest first, every field
// as given, with IDs and times assigned by the store (the caller's are
// ignored), At on the store's clock.
func testHistoryNewestFirst(t *testing.T, h Harness) {
	s := openHistory(t, h)
	const clock = "HISTORY-CLOCK"
	t0 := disable(t, s, clock, "before", "suite").State.ChangedAt

	first := tagged("H", "e", 0, 4)
	first[0].ID, first[0].At = 987654, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC) // ignored
	appendEvents(t, s, first...)
	second := tagged("H", "e", 4, 3)
	appendEvents(t, s, second...)

	t1 := enable(t, s, clock, "suite").State.ChangedAt
	got := readEvents(t, s, store.EventFilter{})
	if g, w := reasons(got), newestFirst(first, second); !slices.Equal(g, w) {
		t.Fatalf("Events() = %q, want %q (newest first)", g, w)
	}
	want := slices.Concat(first, second)
	slices.Reverse(want)
	for i, e := range got {
		if !sameEvent(want[i], e) {
			t.Errorf("entry %d = %s, want the fields of %s", i, describeEvent(e), describeEvent(want[i]))
		}
		if e.ID <= 0 || e.ID == 987654 {
			t.Errorf("entry %d: ID %d, want one assigned by the store", i, e.ID)
		}
		if e.At.IsZero() || e.At.Before(t0.Add(-clockSlack)) || e.At.After(t1.Add(clockSlack)) {
			t.Errorf("entry %d: At %v, want the store's time between %v and %v", i, e.At, t0, t1)
		}
	}
	if last := got[len(got)-1]; !last.At.After(time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the caller's At was kept: %v", last.At)
	}
	// A later batch is not older.
	if got[0].At.Before(got[len(got)-1].At.Add(-clockSlack)) {
		t.Errorf("newest entry at %v, before the oldest at %v", got[0].At, got[len(got)-1].At)
	}
}

// testHistoryFilter: a lock filter returns that lock's entries only,
// matching the name exactly (no pattern matching).
func testHistoryFilter(t *testing.T, h Harness) {
	s := openHistory(t, h)
	locks := []string{"A", "B", "%", "_", "a", "B2", "B%"}
	var all []store.Event
	for i := range 21 {
		all = append(all, tagged(locks[i%len(locks)], "e", i, 1)...)
	}
	appendEvents(t, s, all[:10]...)
	appendEvents(t, s, all[10:]...)
	for _, lock := range locks {
		var want []store.Event
		for _, e := range all {
			if e.Lock == lock {
				want = append(want, e)
			}
		}
		got := readEvents(t, s, store.EventFilter{Lock: lock})
		if g, w := reasons(got), newestFirst(want); !slices.Equal(g, w) {
			t.Errorf("Events(lock %q) = %q, want %q", lock, g, w)
		}
	}
	if got := readEvents(t, s, store.EventFilter{Lock: "UNKNOWN"}); len(got) != 0 {
		t.Errorf("Events(lock UNKNOWN) = %q, want none", reasons(got))
	}
}

// testHistoryPaging: BeforeID pages through the history without gaps or
// repeats, with and without a lock filter.
func testHistoryPaging(t *testing.T, h Harness) {
	s := openHistory(t, h)
	var all []store.Event
	for i := range 5 {
		batch := tagged("P", "e", i*5, 5)
		batch[i].Lock = "OTHER"
		appendEvents(t, s, batch...)
		all = append(all, batch...)
	}
	for _, lock := range []string{"", "P"} {
		var want []store.Event
		for _, e := range all {
			if lock == "" || e.Lock == lock {
				want = append(want, e)
			}
		}
		var got []store.Event
		f := store.EventFilter{Lock: lock, Limit: 7}
		for page := 0; ; page++ {
			p := readEvents(t, s, f)
			if len(p) > 7 {
				t.Fatalf("page %d of lock %q: %d entries, Limit 7", page, lock, len(p))
			}
			for _, e := range p {
				if e.ID >= f.BeforeID && f.BeforeID > 0 {
					t.Fatalf("page %d of lock %q: entry ID %d, not below BeforeID %d", page, lock, e.ID, f.BeforeID)
				}
			}
			got = append(got, p...)
			if len(p) < 7 {
				break
			}
			if page > len(all) {
				t.Fatalf("paging lock %q does not end", lock)
			}
			f.BeforeID = p[len(p)-1].ID
		}
		if g, w := reasons(got), newestFirst(want); !slices.Equal(g, w) {
			t.Errorf("pages of lock %q = %q, want %q", lock, g, w)
		}
	}
	// BeforeID is exclusive; below the oldest ID there is nothing.
	every := readEvents(t, s, store.EventFilter{Limit: store.MaxEventsLimit})
	mid := every[3]
	if got := readEvents(t, s, store.EventFilter{BeforeID: mid.ID, Limit: 1}); len(got) != 1 || got[0].ID != every[4].ID {
		t.Errorf("Events(BeforeID %d, Limit 1) = %v, want only ID %d", mid.ID, reasons(got), every[4].ID)
	}
	if got := readEvents(t, s, store.EventFilter{BeforeID: every[len(every)-1].ID}); len(got) != 0 {
		t.Errorf("Events(BeforeID = oldest ID) = %q, want none", reasons(got))
	}
	if got := readEvents(t, s, store.EventFilter{BeforeID: -5}); len(got) != len(all) {
		t.Errorf("Events(BeforeID -5) returned %d entries, want all %d (not positive: from the newest)", len(got), len(all))
	}
}

// testHistoryLimit: Limit bounds the page; 0 or less means
// store.DefaultEventsLimit; more than store.MaxEventsLimit is capped.
func testHistoryLimit(t *testing.T, h Harness) {
	s := openHistory(t, h)
	n := store.DefaultEventsLimit + 20
	capped := h.HistoryLimit > store.MaxEventsLimit
	if capped {
		n = store.MaxEventsLimit + 20
	}
	batch := tagged("L", "e", 0, n)
	appendEvents(t, s, batch...)
	want := newestFirst(batch)
	for _, tc := range []struct {
		limit, want int
	}{
		{1, 1},
		{3, 3},
		{0, store.DefaultEventsLimit},
		{-1, store.DefaultEventsLimit},
	} {
		got := readEvents(t, s, store.EventFilter{Limit: tc.limit})
		if g := reasons(got); !slices.Equal(g, want[:tc.want]) {
			t.Errorf("Events(Limit %d) returned %d entries (%.60q...), want the newest %d", tc.limit, len(g), g, tc.want)
		}
	}
	if !capped {
		t.Logf("Harness.HistoryLimit %d does not exceed store.MaxEventsLimit: the cap is not checked", h.HistoryLimit)
		return
	}
	for _, limit := range []int{store.MaxEventsLimit + 1, 1 << 30} {
		if got := readEvents(t, s, store.EventFilter{Limit: limit}); len(got) != store.MaxEventsLimit {
			t.Errorf("Events(Limit %d) returned %d entries, want store.MaxEventsLimit (%d)", limit, len(got), store.MaxEventsLimit)
		}
	}
}

// testHistoryRetention: the store keeps exactly the newest HistoryLimit
// entries, whatever the sizes of the batches that pushed the older out,
// including a batch longer than the retention itself.
func testHistoryRetention(t *testing.T, h Harness) {
	s := openHistory(t, h)
	limit := h.HistoryLimit
	if limit <= 0 {
		t.Skip("Harness.HistoryLimit is not set: the retention bound cannot be checked")
	}
	var appended []store.Event
	add := func(what string, events []store.Event) {
		t.Helper()
		appendEvents(t, s, events...)
		appended = append(appended, events...)
		want := newestFirst(appended)
		if len(want) > limit {
			want = want[:limit]
		}
		got := allEvents(t, s, "")
		if len(got) > limit {
			t.Fatalf("after %s: %d entries kept, retention %d", what, len(got), limit)
		}
		if g := reasons(got); !slices.Equal(g, want) {
			t.Fatalf("after %s: kept %d entries from %.40q to %.40q, want the newest %d from %.40q to %.40q",
				what, len(g), first(g), last(g), len(want), first(want), last(want))
		}
	}
	n := 0
	next := func(k int) []store.Event {
		b := tagged(fmt.Sprintf("R%d", n%3), "e", n, k)
		n += k
		return b
	}
	add("filling up to one below the retention", next(limit-1))
	add("reaching the retention", next(1))
	for i := range 3 {
		add(fmt.Sprintf("batch %d beyond the retention", i+1), next(7))
	}
	add("one batch longer than the retention", next(limit+5))
	add("one more entry", next(1))
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// testHistoryVerbatim: text is stored exactly as given (quotes, SQL,
// patterns, escapes, newlines, non-ASCII, long strings); only invalid UTF-8
// and NUL bytes are replaced, as store.CleanText says.
func testHistoryVerbatim(t *testing.T, h Harness) {
	s := openHistory(t, h)
	hostile := []string{
		"",
		" leading and trailing spaces ",
		`'; DROP TABLE masterjob_locks; --`,
		`" OR 1=1 --`,
		`\'\\"\n`,
		"%_*?[]{}$1 ?1 :name @p",
		"line one\nline two\r\n\ttabbed",
		"ünïcødé ✓ 日本語 🙂 \u202eRTL override",
		"\u00a0\u2028\u2029\ufeff",
		"{{prefix}} {{T}} $$ E'\\x41'",
		strings.Repeat("long reason ", 1000),
	}
	var batch []store.Event
	for i, v := range hostile {
		batch = append(batch, store.Event{
			Lock: "VERBATIM", Kind: store.EventKind("kind " + v), Instance: v, Token: int64(i) - 3,
			Reason: v, Remote: v,
		})
	}
	// Names the store accepts are stored as they are too.
	for _, lock := range []string{"a'b", `x"; DROP TABLE y; --`, "ä ö", "%", strings.Repeat("n", store.MaxLockNameLen)} {
		batch = append(batch, store.Event{Lock: lock, Kind: store.EventAcquired, Reason: "name " + lock})
	}
	dirty := store.Event{Lock: "VERBATIM", Kind: "k\x00ind", Instance: "in\xffst", Reason: "nul\x00and\xc3bad", Remote: "\x00"}
	batch = append(batch, dirty)
	appendEvents(t, s, batch...)

	got := readEvents(t, s, store.EventFilter{Limit: store.MaxEventsLimit})
	if len(got) != len(batch) {
		t.Fatalf("Events returned %d entries, want %d", len(got), len(batch))
	}
	slices.Reverse(got)
	for i, want := range batch[:len(batch)-1] {
		if !sameEvent(want, got[i]) {
			t.Errorf("entry %d stored as %s, want %s", i, describeEvent(got[i]), describeEvent(want))
		}
	}
	clean := store.Event{Lock: "VERBATIM", Kind: "k\uFFFDind", Instance: "in\uFFFDst", Reason: "nul\uFFFDand\uFFFDbad", Remote: "\uFFFD"}
	if g := got[len(got)-1]; !sameEvent(clean, g) {
		t.Errorf("invalid UTF-8 and NUL stored as %s, want %s (store.CleanText)", describeEvent(g), describeEvent(clean))
	}
	for _, lock := range []string{"a'b", "%"} {
		if g := readEvents(t, s, store.EventFilter{Lock: lock}); len(g) != 1 || g[0].Reason != "name "+lock {
			t.Errorf("Events(lock %q) = %q, want only its own entry", lock, reasons(g))
		}
	}
}

// testHistoryInvalidLock: one invalid lock name fails the whole batch
// with ErrInvalidLockName and appends nothing; a filter on an invalid name
// fails the same way.
func testHistoryInvalidLock(t *testing.T, h Harness) {
	s := openHistory(t, h)
	appendEvents(t, s, tagged("OK", "before", 0, 1)...)
	for _, bad := range []string{"", strings.Repeat("x", store.MaxLockNameLen+1), "bad\xff", "ctl\x01"} {
		batch := tagged("OK", "e", 0, 3)
		batch[1].Lock = bad
		if err := s.AppendEvents(testCtx(t), batch); !isErr(err, store.ErrInvalidLockName) {
			t.Errorf("AppendEvents with lock %q: %v, want ErrInvalidLockName", bad, err)
		}
		if _, err := s.Events(testCtx(t), store.EventFilter{Lock: bad}); bad != "" && !isErr(err, store.ErrInvalidLockName) {
			t.Errorf("Events(lock %q): %v, want ErrInvalidLockName", bad, err)
		}
	}
	if got := readEvents(t, s, store.EventFilter{}); !slices.Equal(reasons(got), []string{"before-0000"}) {
		t.Errorf("after rejected batches the history is %q, want only the first entry", reasons(got))
	}
}

// testHistoryEmptyBatch: nil and empty batches append nothing and succeed.
func testHistoryEmptyBatch(t *testing.T, h Harness) {
	s := openHistory(t, h)
	if err := s.AppendEvents(testCtx(t), nil); err != nil {
		t.Errorf("AppendEvents(nil): %v", err)
	}
	if err := s.AppendEvents(testCtx(t), []store.Event{}); err != nil {
		t.Errorf("AppendEvents(empty): %v", err)
	}
	if got := readEvents(t, s, store.EventFilter{}); len(got) != 0 {
		t.Errorf("history after empty batches = %q, want empty", reasons(got))
	}
}

// testHistoryShared: entries appended through one handle are read through
// another, including one opened after the first was closed.
func testHistoryShared(t *testing.T, h Harness) {
	a := openHistory(t, h)
	b := openHistory(t, h)
	batch := tagged("S", "e", 0, 3)
	appendEvents(t, a, batch...)
	if got := readEvents(t, b, store.EventFilter{}); !slices.Equal(reasons(got), newestFirst(batch)) {
		t.Errorf("other handle reads %q, want %q", reasons(got), newestFirst(batch))
	}
	more := tagged("S", "e", 3, 2)
	appendEvents(t, b, more...)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c := openHistory(t, h)
	if got := readEvents(t, c, store.EventFilter{}); !slices.Equal(reasons(got), newestFirst(batch, more)) {
		t.Errorf("reopened handle reads %q, want %q", reasons(got), newestFirst(batch, more))
	}
}

// testHistoryConcurrent: batches appended at once from several handles all
// arrive, with distinct IDs, each writer's entries in the order it
// appended them.
func testHistoryConcurrent(t *testing.T, h Harness) {
	const (
		writers = 6
		batches = 8
		size    = 5
	)
	handles := make([]historyHandle, writers)
	for i := range handles {
		handles[i] = openHistory(t, h)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w, s := range handles {
		wg.Go(func() {
			for b := range batches {
				batch := tagged(fmt.Sprintf("C%d", w%2), fmt.Sprintf("w%d", w), b*size, size)
				if err := s.AppendEvents(testCtx(t), batch); err != nil {
					errs <- fmt.Errorf("writer %d batch %d: %w", w, b, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := allEvents(t, handles[0], "")
	if len(got) != writers*batches*size {
		t.Fatalf("%d entries after concurrent appends, want %d", len(got), writers*batches*size)
	}
	slices.Reverse(got)
	seen := map[string]int{}
	for _, e := range got {
		w, n, ok := strings.Cut(e.Reason, "-")
		if !ok {
			t.Fatalf("unexpected entry %s", describeEvent(e))
		}
		want := fmt.Sprintf("%04d", seen[w])
		if n != want {
			t.Fatalf("writer %s: entry %s arrived where %s was due (a writer's entries out of order)", w, n, want)
		}
		seen[w]++
	}
}

// testHistoryCancelled: calls with a cancelled context fail with its
// error and append nothing.
func testHistoryCancelled(t *testing.T, h Harness) {
	s := openHistory(t, h)
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if err := s.AppendEvents(ctx, tagged("X", "e", 0, 2)); !isErr(err, context.Canceled) {
		t.Errorf("AppendEvents with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Events(ctx, store.EventFilter{}); !isErr(err, context.Canceled) {
		t.Errorf("Events with a cancelled context: %v, want context.Canceled", err)
	}
	if got := readEvents(t, s, store.EventFilter{}); len(got) != 0 {
		t.Errorf("history after a cancelled append = %q, want empty", reasons(got))
	}
}

// testHistoryClosed: calls on a closed handle fail with ErrClosed.
func testHistoryClosed(t *testing.T, h Harness) {
	s := openHistory(t, h)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.AppendEvents(testCtx(t), tagged("X", "e", 0, 1)); !isErr(err, store.ErrClosed) {
		t.Errorf("AppendEvents after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Events(testCtx(t), store.EventFilter{}); !isErr(err, store.ErrClosed) {
		t.Errorf("Events after Close: %v, want ErrClosed", err)
	}
}
