//go:build linux

package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/internal/pgcount"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/postgres"
)

// Benchmarks of the calls an instance makes at each heartbeat (Renew of
// the leases it holds) and each check (Acquire of locks another instance
// holds), with and without a member record announced, through
// pgcount.Proxy, which counts the round trips (Syncs and simple
// Queries) and the bytes the client sends. They run only with -bench:
//
//	go test -run '^$' -bench . -benchtime 20x ./store/postgres/
//
// on the server of MASTERJOB_TEST_POSTGRES (or the tests' default).

var benchSizes = []int{1, 100, 10000}

// benchEnv is a fresh schema reached through a counting proxy.
type benchEnv struct {
	b      *testing.B
	proxy  *pgcount.Proxy
	schema string
	stores []*postgres.Store
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	dsn := os.Getenv("MASTERJOB_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL not reachable at MASTERJOB_TEST_POSTGRES=%q: %v", dsn, err)
		if os.Getenv("CI") != "" {
			b.Fatal(msg)
		}
		b.Skip(msg)
	}
	_ = admin.Close(ctx)
	p, err := pgcount.New(net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	if err != nil {
		b.Fatal(err)
	}
	raw := make([]byte, 6)
	_, _ = rand.Read(raw)
	e := &benchEnv{b: b, proxy: p, schema: "mjbench_" + hex.EncodeToString(raw)}
	b.Cleanup(func() {
		for _, s := range e.stores {
			_ = s.Close()
		}
		_ = p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.ConnectConfig(ctx, cfg); err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{e.schema}.Sanitize()+" CASCADE")
			_ = conn.Close(ctx)
		}
	})
	return e
}

// open returns a new handle on the schema, through the proxy, on a pool
// that pings only long-idle connections, as Open's does.
func (e *benchEnv) open() *postgres.Store {
	e.b.Helper()
	dsn := os.Getenv("MASTERJOB_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		e.b.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e.proxy.Addr())
	pcfg.ConnConfig.Host = host
	p, _ := strconv.Atoi(port)
	pcfg.ConnConfig.Port = uint16(p)
	pcfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool { return p.IdleDuration > time.Minute }
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		e.b.Fatal(err)
	}
	e.b.Cleanup(pool.Close)
	s, err := postgres.New(ctx, pool, postgres.WithSchema(e.schema), postgres.WithCallTimeout(time.Minute))
	if err != nil {
		e.b.Fatal(err)
	}
	e.stores = append(e.stores, s)
	return s
}

// loop runs fn b.N times and reports the round trips and bytes sent per
// call.
func (e *benchEnv) loop(fn func() error) {
	b := e.b
	c0 := e.proxy.Counts()
	n := 0
	for b.Loop() {
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	d := e.proxy.Counts().Sub(c0)
	b.ReportMetric(float64(d.RoundTrips())/float64(n), "roundtrips/op")
	b.ReportMetric(float64(d.BytesIn)/float64(n), "sent-B/op")
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

func acquireAll(b *testing.B, s *postgres.Store, h store.Holder, locks []string) []store.LeaseRef {
	b.Helper()
	states, err := s.Acquire(context.Background(), h, locks, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return postgres.HeldRefs(b, states)
}

func member(id string, locks []string, set string) store.Member {
	return store.Member{ID: id, Info: `{"host":"bench"}`, Locks: locks, LockSetID: set, Weight: 1}
}

// BenchmarkCalls: Renew of n held leases, and a check (Acquire) of n locks
// another instance holds, without and with a member record taking part in
// the n locks (written in the same round trip, its lock list unchanged).
// Each iteration makes both calls, one after the other, so that a busy
// host slows both alike; it reports the median time of each (ms), and the
// round trips and bytes sent per call of each.
func BenchmarkCalls(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("renew/locks=%d", n), func(b *testing.B) {
			e := newBenchEnv(b)
			s := e.open()
			plain, withMember := store.Holder{ID: "plain"}, store.Holder{ID: "member"}
			plainRefs := acquireAll(b, s, plain, names("P", n))
			mlocks := names("M", n)
			s.Announce(member(withMember.ID, mlocks, "set"), time.Hour)
			memberRefs := acquireAll(b, s, withMember, mlocks)
			e.pair(func(h store.Holder, refs []store.LeaseRef) func() error {
				return func() error {
					res, err := s.Renew(context.Background(), h.ID, refs, time.Hour)
					if err == nil && !res[0].Renewed {
						err = fmt.Errorf("not renewed")
					}
					return err
				}
			}, [2]store.Holder{plain, withMember}, [2][]store.LeaseRef{plainRefs, memberRefs})
		})
		b.Run(fmt.Sprintf("check/locks=%d", n), func(b *testing.B) {
			e := newBenchEnv(b)
			s := e.open()
			locks := names("L", n)
			acquireAll(b, s, store.Holder{ID: "holder"}, locks)
			plain, withMember := store.Holder{ID: "plain"}, store.Holder{ID: "member"}
			s.Announce(member(withMember.ID, locks, "set"), time.Hour)
			e.pair(func(h store.Holder, _ []store.LeaseRef) func() error {
				return func() error {
					states, err := s.Acquire(context.Background(), h, locks, time.Hour)
					if err == nil && states[0].Acquired {
						err = fmt.Errorf("acquired a held lock")
					}
					return err
				}
			}, [2]store.Holder{plain, withMember}, [2][]store.LeaseRef{})
		})
	}
}

// pair runs call(hs[i], refs[i]) for i = 0 (no member) and 1 (member) at
// each iteration and reports, for each, the median time, the round trips
// and the bytes sent per call.
func (e *benchEnv) pair(call func(store.Holder, []store.LeaseRef) func() error, hs [2]store.Holder, refs [2][]store.LeaseRef) {
	b := e.b
	fns := [2]func() error{call(hs[0], refs[0]), call(hs[1], refs[1])}
	var times [2][]time.Duration
	var counts [2]pgcount.Counts
	for i := range counts {
		counts[i] = pgcount.Counts{Messages: map[byte]int64{}}
	}
	n := 0
	for b.Loop() {
		for i, fn := range fns {
			c0 := e.proxy.Counts()
			t0 := time.Now()
			if err := fn(); err != nil {
				b.Fatal(err)
			}
			times[i] = append(times[i], time.Since(t0))
			d := e.proxy.Counts().Sub(c0)
			counts[i].Messages['S'] += d.Messages['S']
			counts[i].Messages['Q'] += d.Messages['Q']
			counts[i].BytesIn += d.BytesIn
		}
		n++
	}
	for i, name := range []string{"plain", "member"} {
		slices.Sort(times[i])
		b.ReportMetric(float64(times[i][len(times[i])/2].Microseconds())/1000, name+"-median-ms")
		b.ReportMetric(float64(counts[i].RoundTrips())/float64(n), name+"-roundtrips/call")
		b.ReportMetric(float64(counts[i].BytesIn)/float64(n), name+"-sent-B/call")
	}
}

// BenchmarkLockSetChange: a Renew of one lease that also writes a new lock
// list of n names (the set alternates between two that differ by one
// name): what a change of the locks an instance takes part in costs once.
func BenchmarkLockSetChange(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("locks=%d", n), func(b *testing.B) {
			e := newBenchEnv(b)
			s := e.open()
			locks := names("L", n)
			h := store.Holder{ID: "holder"}
			refs := acquireAll(b, s, h, locks[:1])
			sets := [2][]string{locks, append(locks[:n-1:n-1], "L-OTHER")}
			i := 0
			e.loop(func() error {
				i++
				s.Announce(member(h.ID, sets[i%2], strconv.Itoa(i%2)), time.Hour)
				_, err := s.Renew(context.Background(), h.ID, refs, time.Hour)
				return err
			})
		})
	}
}

// BenchmarkMembers: the members of one lock (candidates), and every member
// with its lock list, with 10 members taking part in the same n locks.
func BenchmarkMembers(b *testing.B) {
	for _, n := range benchSizes {
		for _, f := range []struct {
			name   string
			filter func(locks []string) store.MemberFilter
		}{
			{"lock", func(locks []string) store.MemberFilter { return store.MemberFilter{Lock: locks[len(locks)-1]} }},
			{"all", func([]string) store.MemberFilter { return store.MemberFilter{} }},
			{"all-with-locks", func([]string) store.MemberFilter { return store.MemberFilter{WithLocks: true} }},
		} {
			b.Run(fmt.Sprintf("%s/locks=%d", f.name, n), func(b *testing.B) {
				e := newBenchEnv(b)
				s := e.open()
				locks := names("L", n)
				for i := range 10 {
					h := store.Holder{ID: fmt.Sprintf("member-%02d", i)}
					s.Announce(member(h.ID, locks, "set"), time.Hour)
					if _, err := s.Acquire(context.Background(), h, locks[:1], time.Hour); err != nil {
						b.Fatal(err)
					}
				}
				filter := f.filter(locks)
				e.loop(func() error {
					ms, err := s.Members(context.Background(), filter)
					if err == nil && len(ms) != 10 {
						err = fmt.Errorf("%d members", len(ms))
					}
					return err
				})
			})
		}
	}
}
