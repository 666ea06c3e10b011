package mysql

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// TestTransferDetails checks what the conformance suite leaves open on this
// engine: a long member info reaches the lock whole; a successor without a
// member record is not given the lock, which is released with the
// reservation asked for; a ref repeated in one call is acted on once (the
// first); a revoked lease is released with the reservation asked for; and
// the successor's member row is read without a lock (a transaction holding
// it does not delay the transfer).
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
				{Lock: "T-NOMEMBER", Token: tok["T-NOMEMBER"], Successor: "holder-c", Reserve: time.Minute},
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
			if g := got["T-NOMEMBER"]; g.Held() || g.ReservedFor != "holder-c" || g.ReservedTTL <= 0 {
				t.Errorf("T-NOMEMBER: %+v, want free and reserved for holder-c (it has no member record)", g)
			}
		})
	}
}

// TestTransferRacesLeave: a Leave of the successor that commits while the
// transfer waits for the sequence (Leave holds it from before its delete
// until its commit) is seen by the transfer's member check, at each
// isolation level: the lease is released, reserved for the successor, not
// given to an instance whose Leave has committed. The transfer's read of
// the member records must therefore come after the sequence is locked, in
// a snapshot taken after that (REPEATABLE READ takes it at the first
// consistent read).
func TestTransferRacesLeave(t *testing.T) {
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			s := openStoreDSN(t, isolationDSN(t, iso), WithTablePrefix(newPrefix(t)), WithCallTimeout(10*time.Second))
			ctx := t.Context()
			s.Announce(store.Member{ID: holderB.ID, Info: holderB.Info}, time.Minute)
			if _, err := s.Acquire(ctx, holderB, []string{"T-B"}, time.Minute); err != nil {
				t.Fatal(err)
			}
			held, err := s.Acquire(ctx, holderA, []string{"T-LEAVE"}, time.Minute)
			if err != nil || !held[0].Acquired {
				t.Fatalf("Acquire: %+v, %v", held, err)
			}

			// The successor's Leave, paused after its delete: it holds the
			// sequence, as Leave does, and has not committed.
			conn, err := adminDB(t).Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, q := range []string{
				"START TRANSACTION",
				"SELECT value FROM " + s.t.seq + " WHERE id = 1 FOR UPDATE",
				"DELETE FROM " + s.t.memberLocks + " WHERE member_id = " + quoteString(holderB.ID),
				"DELETE FROM " + s.t.members + " WHERE id = " + quoteString(holderB.ID),
			} {
				if _, err := conn.ExecContext(ctx, q); err != nil {
					_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
					t.Fatalf("%s: %v", q, err)
				}
			}

			done := make(chan error, 1)
			go func() {
				ref := store.LeaseRef{Lock: "T-LEAVE", Token: held[0].Token, Successor: holderB.ID, Reserve: time.Minute}
				done <- s.Transfer(ctx, holderA.ID, []store.LeaseRef{ref}, time.Minute)
			}()
			// Wait until the transfer waits for the sequence, then commit
			// the Leave.
			waitForLockWait(t, s.t.seq, done)
			if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Transfer: %v", err)
			}
			st, err := s.Locks(ctx, "T-LEAVE")
			if err != nil {
				t.Fatal(err)
			}
			if g := st[0]; g.Held() || g.Holder != "" || g.ReservedFor != holderB.ID {
				t.Fatalf("after a transfer to a successor whose Leave committed first: %+v, want free and reserved for %s", g, holderB.ID)
			}
		})
	}
}

// waitForLockWait waits until a statement that locks table (FOR UPDATE)
// runs, which here means that it waits for the lock held by the test (the
// tests of other packages may share the server, hence the table's name),
// or fails the test if done is sent first.
func waitForLockWait(t *testing.T, table string, done <-chan error) {
	t.Helper()
	pattern := "%" + strings.Trim(table, "`") + "%FOR UPDATE%"
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := adminDB(t).QueryRowContext(t.Context(),
			"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE "+
				quoteString(pattern)).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			time.Sleep(50 * time.Millisecond) // into the wait itself
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the transfer ended (%v) without waiting for the sequence", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the transfer did not wait for the sequence")
}
