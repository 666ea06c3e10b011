package postgres

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/store"
)

// BenchmarkQueryModes compares, interleaved so that the server's load hits
// all alike, the calls of a hand-off of one lock on a store that prepares
// its statements (pgx's default query mode) and on one that prepares none
// (default_query_exec_mode=exec): an acquisition with the member's
// record, the transfer to a successor, the successor's read of its lease,
// its renewal and its release. The server may run a prepared statement
// with a generic plan after five executions on a connection, which a
// hand-off's statements, rare on any one connection, do not reach: the
// third store, "custom", prepares too but has the server plan every
// execution for its parameters (plan_cache_mode=force_custom_plan), as a
// hand-off's are. It reports the median of each (ms):
//
//	go test -run '^$' -bench QueryModes -benchtime 300x ./store/postgres/
func BenchmarkQueryModes(b *testing.B) {
	schema := newSchema(b)
	modes := []string{"exec", "prepared", "custom"}
	stores := map[string]*Store{}
	for _, m := range modes {
		stores[m] = newStoreOn(b, userPool(b, func(c *pgxpool.Config) {
			switch m {
			case "exec":
				c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
			case "custom":
				c.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
			}
		}), WithSchema(schema))
	}
	ctx := b.Context()
	from, to := holderA, holderB
	for _, m := range modes {
		s := stores[m]
		s.Announce(store.Member{ID: to.ID, Locks: []string{"J"}, LockSetID: "s"}, time.Minute)
		if _, err := s.Acquire(ctx, to, []string{"K"}, time.Minute); err != nil {
			b.Fatal(err)
		}
		s.Announce(store.Member{ID: from.ID, Locks: []string{"J"}, LockSetID: "s"}, time.Minute)
	}
	times := map[string][]time.Duration{}
	timed := func(name string, fn func() error) {
		t0 := time.Now()
		if err := fn(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		times[name] = append(times[name], time.Since(t0))
	}
	for b.Loop() {
		for _, m := range modes {
			s := stores[m]
			var token int64
			timed(m+"-acquire", func() error {
				st, err := s.Acquire(ctx, from, []string{"J"}, time.Minute)
				if err == nil && !st[0].Acquired {
					err = fmt.Errorf("not acquired: %+v", st[0])
				}
				if err == nil {
					token = st[0].Token
				}
				return err
			})
			timed(m+"-transfer", func() error {
				return s.Transfer(ctx, from.ID, []store.LeaseRef{{Lock: "J", Token: token, Successor: to.ID}}, time.Minute)
			})
			timed(m+"-read", func() error {
				ls, err := s.Locks(ctx, "J")
				if err == nil && ls[0].Holder != to.ID {
					err = fmt.Errorf("not given: %+v", ls[0])
				}
				if err == nil {
					token = ls[0].Token
				}
				return err
			})
			ref := []store.LeaseRef{{Lock: "J", Token: token}}
			timed(m+"-renew", func() error {
				res, err := s.Renew(ctx, to.ID, ref, time.Minute)
				if err == nil && !res[0].Renewed {
					err = fmt.Errorf("not renewed: %+v", res[0])
				}
				return err
			})
			timed(m+"-release", func() error { return s.Release(ctx, to.ID, ref) })
		}
	}
	for _, name := range slices.Sorted(maps.Keys(times)) {
		d := times[name]
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "ms/"+name)
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHandOffStatements times what a hand-off runs as it does in a
// cluster: the leaver's transfer and the successor's read of its lease,
// each the first of its kind on a connection that has made an acquisition
// (a runner's: each runs one hand-off in its life), on fresh pools of one
// connection per iteration, interleaved on a store that prepares (pgx's
// default query mode: the transfer and the read prepared and planned
// ahead, when the acquisition prepared the connection) and on one that
// prepares none (default_query_exec_mode=exec). It reports the median
// of each (ms):
//
//	go test -run '^$' -bench HandOffStatements -benchtime 100x ./store/postgres/
func BenchmarkHandOffStatements(b *testing.B) {
	schema := newSchema(b)
	openStore(b, WithSchema(schema)) // migrates
	modes := []string{"exec", "prepared"}
	open := func(mode string) *Store {
		pool := userPool(b, func(c *pgxpool.Config) {
			c.MaxConns = 1
			if mode == "exec" {
				c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
			}
		})
		s, err := New(b.Context(), pool, WithSchema(schema), WithoutMigrate())
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	ctx := b.Context()
	from, to := holderA, holderB
	times := map[string][]time.Duration{}
	for b.Loop() {
		for _, m := range modes {
			leaver, successor := open(m), open(m)
			successor.Announce(store.Member{ID: to.ID, Locks: []string{"J"}, LockSetID: "s"}, time.Minute)
			if _, err := successor.Acquire(ctx, to, []string{"K"}, time.Minute); err != nil {
				b.Fatal(err)
			}
			st, err := leaver.Acquire(ctx, from, []string{"J"}, time.Minute)
			if err != nil || !st[0].Acquired {
				b.Fatalf("acquire: %+v, %v", st, err)
			}
			t0 := time.Now()
			if err := leaver.Transfer(ctx, from.ID, []store.LeaseRef{{Lock: "J", Token: st[0].Token, Successor: to.ID}}, time.Minute); err != nil {
				b.Fatal(err)
			}
			times[m+"-transfer"] = append(times[m+"-transfer"], time.Since(t0))
			t0 = time.Now()
			ls, err := successor.Locks(ctx, "J")
			if err != nil || ls[0].Holder != to.ID {
				b.Fatalf("not given: %+v, %v", ls, err)
			}
			times[m+"-read"] = append(times[m+"-read"], time.Since(t0))
			if err := successor.Release(ctx, to.ID, []store.LeaseRef{{Lock: "J", Token: ls[0].Token}}); err != nil {
				b.Fatal(err)
			}
			for _, s := range []*Store{leaver, successor} {
				_ = s.Close()
				s.pool.Close()
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(times)) {
		d := times[name]
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "ms/"+name)
	}
	b.ReportMetric(0, "ns/op")
}
