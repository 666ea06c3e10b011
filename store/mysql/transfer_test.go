package mysql

import (
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// TestTransferDetails checks what the conformance suite leaves open on this
// engine: a long member info reaches the lock whole; a successor without an
// unexpired member record gets an empty HolderInfo; a ref repeated in one
// call is acted on once (the first); a revoked lease is released with the
// reservation asked for; and the successor's member row is read without a
// lock (a transaction holding it does not delay the transfer).
func TestTransferDetails(t *testing.T) {
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			s := openStoreDSN(t, isolationDSN(t, iso), WithTablePrefix(newPrefix(t)), WithCallTimeout(3*time.Second))
			ctx := t.Context()
			info := strings.Repeat("i", 60000)
			s.Announce(store.Member{ID: holderB.ID, Info: info, Locks: []string{"T-GIVE"}}, time.Minute)
			if _, err := s.Acquire(ctx, store.Holder{ID: holderB.ID, Info: "b"}, []string{"T-B"}, time.Minute); err != nil {
				t.Fatal(err)
			}
			held, err := s.Acquire(ctx, holderA, []string{"T-GIVE", "T-FREE", "T-REVOKED", "T-NOMEMBER"}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			tok := map[string]int64{}
			for _, st := range held {
				if !st.Acquired {
					t.Fatalf("%s not acquired", st.Lock)
				}
				tok[st.Lock] = st.Token
			}
			if _, err := s.Disable(ctx, "T-REVOKED", "maintenance", "ops"); err != nil {
				t.Fatal(err)
			}
			// The successor's member row stays locked during the transfer.
			release := holdRowLocks(t, "SELECT id FROM "+s.t.members+" WHERE id = "+quoteString(holderB.ID))
			refs := []store.LeaseRef{
				{Lock: "T-GIVE", Token: tok["T-GIVE"], Successor: holderB.ID},
				{Lock: "T-GIVE", Token: tok["T-GIVE"], Successor: "holder-c"},
				{Lock: "T-FREE", Token: tok["T-FREE"]},
				{Lock: "T-REVOKED", Token: tok["T-REVOKED"], Successor: holderB.ID, Reserve: time.Minute},
				{Lock: "T-NOMEMBER", Token: tok["T-NOMEMBER"], Successor: "holder-c"},
			}
			start := time.Now()
			if err := s.Transfer(ctx, holderA.ID, refs, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 900*time.Millisecond {
				t.Errorf("the transfer took %v: it waited for the successor's member row", d)
			}
			release()
			states, err := s.Locks(ctx, "T-GIVE", "T-FREE", "T-REVOKED", "T-NOMEMBER")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]store.LockState{}
			for _, st := range states {
				got[st.Lock] = st
			}
			if g := got["T-GIVE"]; g.Holder != holderB.ID || g.Token <= tok["T-GIVE"] || g.HolderInfo != info {
				t.Errorf("T-GIVE: holder %q token %d info of %d bytes, want %q, more than %d, %d bytes",
					g.Holder, g.Token, len(g.HolderInfo), holderB.ID, tok["T-GIVE"], len(info))
			}
			if g := got["T-FREE"]; g.Held() || g.ReservedFor != "" {
				t.Errorf("T-FREE: %+v, want free and not reserved", g)
			}
			if g := got["T-REVOKED"]; g.Held() || g.ReservedFor != holderB.ID || g.ReservedTTL <= 0 || !g.Disabled {
				t.Errorf("T-REVOKED: %+v, want free, disabled, reserved for %s", g, holderB.ID)
			}
			if g := got["T-NOMEMBER"]; g.Holder != "holder-c" || g.HolderInfo != "" || g.Token <= tok["T-NOMEMBER"] {
				t.Errorf("T-NOMEMBER: %+v, want held by holder-c with an empty info", g)
			}
			if got["T-GIVE"].Token == got["T-NOMEMBER"].Token {
				t.Errorf("two locks given the same token %d", got["T-GIVE"].Token)
			}
		})
	}
}
