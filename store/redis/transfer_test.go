package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Engine tests of Transfer beyond the conformance suite (storetest's
// Transfer/...): the reservation of a disabled lock, a batch larger than
// one script, the token of a lock whose counter key fell behind, and a
// successor whose member record expired.

func transferCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func acquireOne(t *testing.T, s *Store, holder, lock string) store.LockState {
	t.Helper()
	st, err := s.Acquire(transferCtx(t), store.Holder{ID: holder}, []string{lock}, time.Minute)
	if err != nil || len(st) != 1 || !st[0].Acquired {
		t.Fatalf("Acquire(%s, %s) = %+v, %v", holder, lock, st, err)
	}
	return st[0]
}

// announceMember writes the member record of id (through a handle of its
// own, as the successor would), valid for ttl, so that locks may be given
// to it.
func announceMember(t *testing.T, prefix, id string, ttl time.Duration) {
	t.Helper()
	m := openTest(t, prefix)
	defer m.Close()
	m.Announce(store.Member{ID: id, Info: "info of " + id}, ttl)
	acquireOne(t, m, id, "MEMBER-"+id) // writes the record
}

func stateOf(t *testing.T, s *Store, lock string) store.LockState {
	t.Helper()
	st, err := s.Locks(transferCtx(t), lock)
	if err != nil || len(st) != 1 {
		t.Fatalf("Locks(%s) = %+v, %v", lock, st, err)
	}
	return st[0]
}

// TestTransferDisabledReserves: the lease of a disabled lock is released,
// reserved for the successor when the ref asks for it, not given.
func TestTransferDisabledReserves(t *testing.T) {
	s := openTest(t, testPrefix(t))
	defer s.Close()
	st := acquireOne(t, s, "a", "L")
	if _, err := s.Disable(transferCtx(t), "L", "maintenance", "ops"); err != nil {
		t.Fatal(err)
	}
	ref := store.LeaseRef{Lock: "L", Token: st.Token, Successor: "b", Reserve: 10 * time.Second}
	if err := s.Transfer(transferCtx(t), "a", []store.LeaseRef{ref}, time.Minute); err != nil {
		t.Fatal(err)
	}
	got := stateOf(t, s, "L")
	if got.Held() || got.Holder != "" || got.ReservedFor != "b" || got.ReservedTTL <= 0 {
		t.Fatalf("after the transfer of a disabled lock: %+v, want free and reserved for b", got)
	}
}

// TestTransferManyLocks: a call on more locks than one script handles
// gives and releases each as asked.
func TestTransferManyLocks(t *testing.T) {
	p := testPrefix(t)
	s := openTest(t, p)
	defer s.Close()
	announceMember(t, p, "b", time.Minute)
	const n = maxLocksPerScript + 50
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("M%03d", i)
	}
	sts, err := s.Acquire(transferCtx(t), store.Holder{ID: "a"}, names, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	refs := make([]store.LeaseRef, n)
	for i, st := range sts {
		refs[i] = store.LeaseRef{Lock: st.Lock, Token: st.Token}
		if i%2 == 0 {
			refs[i].Successor = "b"
		}
	}
	if err := s.Transfer(transferCtx(t), "a", refs, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := s.Locks(transferCtx(t), names...)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range got {
		switch {
		case i%2 == 0 && (st.Holder != "b" || !st.Held() || st.Token <= sts[i].Token):
			t.Fatalf("%s: %+v, want held by b with a token above %d", st.Lock, st, sts[i].Token)
		case i%2 == 1 && st.Held():
			t.Fatalf("%s: %+v, want free", st.Lock, st)
		}
	}
}

// TestTransferTokenAboveLease: the new token exceeds the ended lease's
// even when the counter key is behind it (lost, or rewritten by hand).
func TestTransferTokenAboveLease(t *testing.T) {
	p := testPrefix(t)
	s := openTest(t, p)
	defer s.Close()
	announceMember(t, p, "b", time.Minute)
	acquireOne(t, s, "a", "T")
	stem := strings.TrimSuffix(s.k.lease("T"), suffixLease)
	high := time.Now().Add(24 * time.Hour).UnixMicro() // a token from a clock ahead
	c := adminClient(t)
	if err := c.HSet(transferCtx(t), stem+"lease", "t", strconv.FormatInt(high, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(transferCtx(t), stem+"tok", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ref := store.LeaseRef{Lock: "T", Token: high, Successor: "b"}
	if err := s.Transfer(transferCtx(t), "a", []store.LeaseRef{ref}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, s, "T"); got.Holder != "b" || got.Token <= high {
		t.Fatalf("after the transfer: %+v, want held by b with a token above %d", got, high)
	}
}

// TestTransferExpiredMember: a successor whose member record expired (the
// hash's PEXPIRE ran out, no Leave) is not given the lock: the lease is
// released, reserved for it as asked.
func TestTransferExpiredMember(t *testing.T) {
	p := testPrefix(t)
	s := openTest(t, p)
	defer s.Close()
	announceMember(t, p, "b", 300*time.Millisecond)
	st := acquireOne(t, s, "a", "X")
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := adminClient(t).Exists(transferCtx(t), s.k.member("b")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the member record of b did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ref := store.LeaseRef{Lock: "X", Token: st.Token, Successor: "b", Reserve: 10 * time.Second}
	if err := s.Transfer(transferCtx(t), "a", []store.LeaseRef{ref}, time.Minute); err != nil {
		t.Fatal(err)
	}
	got := stateOf(t, s, "X")
	if got.Held() || got.Holder != "" || got.ReservedFor != "b" || got.ReservedTTL <= 0 {
		t.Fatalf("after the transfer to an expired member: %+v, want free and reserved for b", got)
	}
}
