package postgres

import (
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// A renewal whose statement began before another writer ended the lease
// (an operator, a failover, the chaos harness's store-side expiry) and
// that reads the row after that writer committed must not revive the
// lease: PostgreSQL re-checks a concurrently updated row with the
// statement's start time as now(), by which the ended lease still looked
// valid. Found by the chaos harness: a holder ran on 3.6 s after its
// lease was expired by an outside writer, its renewals succeeding.
func TestRenewDoesNotReviveALeaseEndedMeanwhile(t *testing.T) {
	s := openStore(t, WithSchema(newSchema(t)))
	ctx := t.Context()
	st, err := s.Acquire(ctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute)
	if err != nil || !st[0].Acquired {
		t.Fatalf("Acquire: %+v, %v", st, err)
	}
	// The outside writer locks the row first.
	tx, err := adminPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM `+s.table+` WHERE lock_name = 'L' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// The renewal starts (its statement's now() is taken) and waits on the
	// row.
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
	// The writer ends the lease at its own moment, well after the
	// renewal's start, and commits.
	if _, err := tx.Exec(ctx, `UPDATE `+s.table+` SET expires_at = clock_timestamp() - interval '1 millisecond' WHERE lock_name = 'L'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.res[0].Renewed {
		t.Fatalf("the renewal revived a lease ended while it waited: %+v", a.res[0])
	}
	if ls, _ := s.Locks(ctx, "L"); ls[0].Held() {
		t.Fatalf("lock still held after its lease was ended: %+v", ls[0])
	}
}
