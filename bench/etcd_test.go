//go:build linux

package bench

import (
	"context"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// TestSmokeEtcd runs the scenarios on etcd, masterjob's store and etcd's
// own election side by side, for a trial or two at a lease of 2 s (the
// shortest etcd grants with its default timing). Correctness only, as
// TestSmoke.
func TestSmokeEtcd(t *testing.T) {
	const lease = 2 * time.Second
	envs := map[string]*Env{}
	for _, kind := range []string{Etcd, EtcdElection} {
		envs[kind] = testEnv(t, kind)
	}
	if _, err := EtcdServer(t.TempDir()); err != nil {
		etcdtest.Unavailable(t, "etcd for the benchmark: "+err.Error())
	}
	t.Cleanup(StopEtcd)
	for _, kind := range []string{Etcd, EtcdElection} {
		env := envs[kind]
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			// etcd's election has no store view of the lease's expiry.
			check := sampleCheck(t, SeriesAfterExpiry)
			t.Run("failover", func(t *testing.T) { checkWills(t, check)(env.CrashFailover(ctx, lease, 2)) })
			t.Run("treefailover", func(t *testing.T) { check(env.TreeCrashFailover(ctx, lease, 2)) })
			t.Run("handoff", func(t *testing.T) { check(env.Handoff(ctx, lease, 2)) })
			t.Run("sigstop", func(t *testing.T) { check(env.SigStop(ctx, lease, lease+time.Second, 1, false)) })
			if kind == EtcdElection {
				return
			}
			t.Run("control", func(t *testing.T) {
				timing := LeaseTiming(lease)
				timing.Check = time.Second
				check(env.Control(ctx, timing, 1))
			})
			t.Run("roundtrips", func(t *testing.T) {
				for _, mode := range []string{ModeHeld, ModeFollowed} {
					r, err := env.RoundTrips(ctx, mode, 10, LeaseTiming(3*time.Second), 2*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("%s: %d requests %v", mode, r.RoundTrips, r.Messages)
					if r.RoundTrips == 0 {
						t.Errorf("%s: no requests counted", mode)
					}
				}
			})
		})
	}
}
