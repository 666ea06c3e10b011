package mysql

import (
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// A renewal whose batch read the server's time before another writer ended
// the lease (an operator, a failover, the chaos harness's store-side
// expiry), and that locks the row after that writer committed, must not
// revive the lease: the time the batch read at its start made the ended
// lease look valid still. The same bug was found on PostgreSQL by the
// chaos harness.
func TestRenewDoesNotReviveALeaseEndedMeanwhile(t *testing.T) {
	prefix := newPrefix(t)
	s, err := Open(t.Context(), testDSN(), WithTablePrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	st, err := s.Acquire(ctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", st, err)
	}
	tx, err := adminDB(t).BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	table := quoteIdent(prefix + "locks")
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE lock_name = 'L' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		res []store.RenewResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := s.Renew(ctx, "a", []store.LeaseRef{{Lock: "L", Token: st[0].Token}}, time.Minute)
		done <- answer{res, err}
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := tx.ExecContext(ctx, `UPDATE `+table+` SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1000 MICROSECOND WHERE lock_name = 'L'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.res[0].Renewed {
		t.Fatalf("the renewal revived a lease ended while it waited: %+v", a.res[0])
	}
}
