//go:build linux

package bench

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	binOnce sync.Once
	bins    Binaries
	binErr  error
)

// testEnv builds the binaries once and returns an Env on backend spec.
func testEnv(t *testing.T, spec string) *Env {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "masterjob-bench-test-")
		if err != nil {
			binErr = err
			return
		}
		bins, binErr = Build(dir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	b, err := NewBackend(spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Bin: bins, Backend: b, Dir: t.TempDir(), Logf: t.Logf}
}

// backends returns the stores to test: SQLite, and PostgreSQL when
// $MASTERJOB_TEST_POSTGRES names a reachable server (required under $CI).
func backends(t *testing.T) []string {
	specs := []string{SQLite}
	url := os.Getenv("MASTERJOB_TEST_POSTGRES")
	if url == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("MASTERJOB_TEST_POSTGRES is not set under CI")
		}
		t.Log("MASTERJOB_TEST_POSTGRES not set: PostgreSQL skipped")
		return specs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at $MASTERJOB_TEST_POSTGRES: %v", err)
		}
		t.Logf("PostgreSQL unreachable, skipped: %v", err)
		return specs
	}
	_ = conn.Close(ctx)
	return append(specs, url)
}

// TestSmoke runs every scenario for a few trials with short timings. It
// asserts correctness only (a new child started, with a greater token, after
// the old one exited; nothing started while disabled; the SIGSTOPped child
// is gone after SIGCONT; round trips were counted), never timing: the long
// runs of cmd/masterjob-bench measure that.
func TestSmoke(t *testing.T) {
	const lease = 600 * time.Millisecond
	for _, spec := range backends(t) {
		env := testEnv(t, spec)
		t.Run(env.Backend.Kind, func(t *testing.T) {
			ctx := context.Background()
			check := smokeScenarios(t, env, lease)
			if env.Backend.Kind == SQLite {
				t.Run("exec", func(t *testing.T) { check(env.ExecBaseline(ctx, 2)) })
				t.Run("idle", func(t *testing.T) {
					r, err := env.Idle(ctx, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					for _, u := range r.Usage {
						if u.RSS <= 0 || u.HWM < u.RSS || u.Anon <= 0 || u.Anon >= u.RSS {
							t.Errorf("%s: implausible memory: %+v", u.Role, u)
						}
					}
				})
			}
		})
	}
}

// smokeScenarios runs once, at lease, every scenario that applies to every
// store (failover, treefailover, handoff, handoff-api, control, sigstop, round trips),
// each asserting only that it ran and produced samples, and returns the
// check it used for the caller's store-specific scenarios.
func smokeScenarios(t *testing.T, env *Env, lease time.Duration) func(*Result, error) {
	t.Helper()
	ctx := context.Background()
	check := sampleCheck(t)
	t.Run("failover", func(t *testing.T) { checkWills(t, check)(env.CrashFailover(ctx, lease, 2)) })
	t.Run("treefailover", func(t *testing.T) { check(env.TreeCrashFailover(ctx, lease, 2)) })
	t.Run("handoff", func(t *testing.T) { check(env.Handoff(ctx, lease, 2)) })
	t.Run("handoff-api", func(t *testing.T) {
		r, err := env.HandoffAPI(ctx, lease, 2)
		if errors.Is(err, ErrNoHandoffs) {
			t.Skipf("%v: the scenario runs once this store implements store.Handoffs", err)
		}
		check(r, err)
	})
	t.Run("control", func(t *testing.T) {
		timing := LeaseTiming(lease)
		timing.Check = time.Second
		check(env.Control(ctx, timing, 1))
	})
	t.Run("sigstop", func(t *testing.T) { check(env.SigStop(ctx, lease, lease+300*time.Millisecond, 2, false)) })
	t.Run("roundtrips", func(t *testing.T) {
		for _, mode := range []string{ModeHeld, ModeFollowed} {
			r, err := env.RoundTrips(ctx, mode, 100, LeaseTiming(lease), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if r.RoundTrips == 0 {
				t.Errorf("%s: no round trips counted", mode)
			}
		}
	})
	return check
}

// sampleCheck returns a check of a scenario's result: no error, and
// samples in every series but those named in except.
// checkWills wraps check: every crash failover of masterjob must have been
// the last will's release (an engine the will could not open, or a will
// that never ran, leaves the lease to expire, and the scenario passes
// otherwise).
func checkWills(t *testing.T, check func(*Result, error)) func(*Result, error) {
	return func(r *Result, err error) {
		t.Helper()
		check(r, err)
		if r != nil && r.Store != EtcdElection && r.Wills != r.Trials {
			t.Errorf("%s %s: the last will released the lease in %d of %d trials", r.Store, r.Scenario, r.Wills, r.Trials)
		}
	}
}

func sampleCheck(t *testing.T, except ...string) func(*Result, error) {
	return func(r *Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range r.Series {
			if s.Summary.N == 0 && !slices.Contains(except, s.Name) {
				t.Errorf("%s: %q has no samples", r.Scenario, s.Name)
			}
		}
	}
}
