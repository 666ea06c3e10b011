package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// An executor appends the history entry of a release while the release is
// in flight. On a pool with one connection the append used to dial a
// second one, and the server started a backend in the middle of the
// hand-off (seen in the benchmark's hand-offs with perf and the statement
// log). The append now waits for the release and uses its connection.
func TestHistoryAppendWaitsForRelease(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, testDSN(), WithSchema(newSchema(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	held, err := s.Acquire(ctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute)
	if err != nil || !held[0].Acquired {
		t.Fatalf("acquire: %v %+v", err, held)
	}
	// Another session holds the lock's row: the release waits in the server.
	tx, err := adminPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+s.table+" WHERE lock_name = 'L' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	dialled := s.pool.Stat().NewConnsCount()
	released := make(chan error, 1)
	go func() { released <- s.Release(ctx, "a", []store.LeaseRef{{Lock: "L", Token: held[0].Token}}) }()
	// Wait with a context already done returns an error while a call is
	// in flight.
	done, cancel := context.WithCancel(ctx)
	cancel()
	for s.ending.Wait(done) == nil {
		time.Sleep(time.Millisecond)
	}
	appended := make(chan error, 1)
	go func() {
		appended <- s.AppendEvents(ctx, []store.Event{{Lock: "L", Kind: store.EventReleased, Instance: "a", Token: held[0].Token}})
	}()
	// Time for an append that does not wait to dial and commit.
	select {
	case err := <-appended:
		t.Errorf("the append returned (%v) while the release was in flight", err)
		appended <- err
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := <-appended; err != nil {
		t.Fatalf("append: %v", err)
	}
	if n := s.pool.Stat().NewConnsCount() - dialled; n != 0 {
		t.Errorf("the pool dialled %d connection(s) for the append; want it to use the release's", n)
	}
}
