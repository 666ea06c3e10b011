package postgres

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/masterjob/masterjob/store"
)

// BenchmarkServerTime measures, with EXPLAIN ANALYZE, the time the server
// spends planning and executing each statement an instance with a member
// record sends, for a member taking part in n locks and holding them: the
// renewal, the check (Acquire of the n locks by another holder), the
// member's write without and with its lock list, and Members of one lock.
// Unlike the time a call takes, it does not count the client, the network
// or the parsing of the results, so it isolates the cost of the member's
// statement on a busy host. It reports the medians. Run with:
//
//	go test -run '^$' -bench ServerTime -benchtime 20x ./store/postgres/
func BenchmarkServerTime(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		s := openStore(b, WithSchema(newSchema(b)))
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("L-%05d", i)
		}
		s.Announce(store.Member{ID: "m", Locks: names, LockSetID: "set"}, time.Hour)
		states, err := s.Acquire(b.Context(), store.Holder{ID: "m"}, names, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		refs := make([]store.LeaseRef, len(states))
		for i, st := range states {
			refs[i] = store.LeaseRef{Lock: st.Lock, Token: st.Token}
		}
		nm, tok := splitRefs(refs)
		hour := micros(time.Hour)
		for _, st := range []struct {
			name string
			sql  string
			args []any
		}{
			{"renew", s.q.renew, []any{nm, tok, "m", hour}},
			{"check", s.q.acquire, []any{nm, "other", "", hour, s.seq, s.channel}},
			{"member-write", s.q.memberWrite, []any{"m", "", "set", []string(nil), int32(0), 1.0, hour, s.ann.writer, int64(1), s.channel}},
			{"member-write-with-list", s.q.memberWrite, []any{"m", "", "set", names, int32(0), 1.0, hour, s.ann.writer, int64(1), s.channel}},
			{"members-of-a-lock", s.q.members, []any{names[n-1], false}},
		} {
			b.Run(fmt.Sprintf("%s/locks=%d", st.name, n), func(b *testing.B) {
				var plan, exec []float64
				for b.Loop() {
					var js []byte
					args := append([]any{pgx.QueryExecModeExec}, st.args...)
					if err := s.pool.QueryRow(b.Context(), "EXPLAIN (ANALYZE, FORMAT JSON) "+st.sql, args...).Scan(&js); err != nil {
						b.Fatal(err)
					}
					var out []struct {
						Plan float64 `json:"Planning Time"`
						Exec float64 `json:"Execution Time"`
					}
					if err := json.Unmarshal(js, &out); err != nil || len(out) != 1 {
						b.Fatalf("EXPLAIN output %s: %v", js, err)
					}
					plan = append(plan, out[0].Plan)
					exec = append(exec, out[0].Exec)
				}
				slices.Sort(plan)
				slices.Sort(exec)
				b.ReportMetric(plan[len(plan)/2], "plan-median-ms")
				b.ReportMetric(exec[len(exec)/2], "exec-median-ms")
			})
		}
	}
}
