package prom_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newObserver(t *testing.T, opts ...prom.Option) (*prom.Observer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	o, err := prom.NewObserver(reg, opts...)
	if err != nil {
		t.Fatalf("NewObserver: %v", err)
	}
	return o, reg
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "none"},
		{masterjob.ErrShutdown, "shutdown"},
		{masterjob.ErrDisabled, "disabled"},
		{masterjob.ErrLeaseLost, "lease_lost"},
		{masterjob.ErrTrustWindowPassed, "trust_window_passed"},
		{masterjob.ErrLeaseExpired, "lease_expired"},
		{masterjob.ErrJobReturned, "job_returned"},
		{fmt.Errorf("context: %w", masterjob.ErrDisabled), "disabled"},
		{errors.New("something else"), "other"},
	} {
		if got := prom.Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestEvents feeds events by hand and compares the exposition.
func TestEvents(t *testing.T) {
	o, reg := newObserver(t, prom.WithLocks("IDLE"))
	o.Transition(masterjob.Transition{Lock: "A", Kind: masterjob.Acquired, Token: 1})
	o.LeaseTTL("A", 2500*time.Millisecond)
	o.Renewal(3*time.Millisecond, 1, nil)
	o.Renewal(2*time.Second, 1, errors.New("store down"))
	o.Check(7*time.Millisecond, 2, nil)
	o.Check(20*time.Second, 2, errors.New("store down"))
	o.Transition(masterjob.Transition{Lock: "B", Kind: masterjob.Acquired, Token: 4})
	o.Transition(masterjob.Transition{Lock: "B", Kind: masterjob.Lost, Token: 4, Reason: masterjob.ErrLeaseLost})

	const want = `
# HELP masterjob_is_master 1 while this instance is the master of the lock, else 0.
# TYPE masterjob_is_master gauge
masterjob_is_master{lock="A"} 1
masterjob_is_master{lock="B"} 0
masterjob_is_master{lock="IDLE"} 0
# HELP masterjob_lease_ttl_seconds Seconds until the lease of the lock expires, as the store reported after the last renewal; 0 when this instance is not master.
# TYPE masterjob_lease_ttl_seconds gauge
masterjob_lease_ttl_seconds{lock="A"} 2.5
masterjob_lease_ttl_seconds{lock="B"} 0
masterjob_lease_ttl_seconds{lock="IDLE"} 0
# HELP masterjob_renewal_failures_total Renewals that did not extend a lease: failed renewal round trips (retries included) and leases the store refused to renew.
# TYPE masterjob_renewal_failures_total counter
masterjob_renewal_failures_total 2
# HELP masterjob_store_errors_total Store round trips that failed, by operation (renew, check).
# TYPE masterjob_store_errors_total counter
masterjob_store_errors_total{op="check"} 1
masterjob_store_errors_total{op="renew"} 1
# HELP masterjob_transitions_total Mastership transitions of this instance by lock, kind (acquired, released, lost, demoted) and reason.
# TYPE masterjob_transitions_total counter
masterjob_transitions_total{kind="acquired",lock="A",reason="none"} 1
masterjob_transitions_total{kind="acquired",lock="B",reason="none"} 1
masterjob_transitions_total{kind="lost",lock="B",reason="lease_lost"} 1
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"masterjob_is_master", "masterjob_lease_ttl_seconds", "masterjob_renewal_failures_total",
		"masterjob_store_errors_total", "masterjob_transitions_total")
	if err != nil {
		t.Error(err)
	}

	const wantHist = `
# HELP masterjob_check_duration_seconds Duration of batched check (acquisition) round trips to the store, failed ones included.
# TYPE masterjob_check_duration_seconds histogram
masterjob_check_duration_seconds_bucket{le="0.001"} 0
masterjob_check_duration_seconds_bucket{le="0.0025"} 0
masterjob_check_duration_seconds_bucket{le="0.005"} 0
masterjob_check_duration_seconds_bucket{le="0.01"} 1
masterjob_check_duration_seconds_bucket{le="0.025"} 1
masterjob_check_duration_seconds_bucket{le="0.05"} 1
masterjob_check_duration_seconds_bucket{le="0.1"} 1
masterjob_check_duration_seconds_bucket{le="0.25"} 1
masterjob_check_duration_seconds_bucket{le="0.5"} 1
masterjob_check_duration_seconds_bucket{le="1"} 1
masterjob_check_duration_seconds_bucket{le="2.5"} 1
masterjob_check_duration_seconds_bucket{le="5"} 1
masterjob_check_duration_seconds_bucket{le="10"} 1
masterjob_check_duration_seconds_bucket{le="+Inf"} 2
masterjob_check_duration_seconds_sum 20.007
masterjob_check_duration_seconds_count 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantHist), "masterjob_check_duration_seconds"); err != nil {
		t.Error(err)
	}
	if n := histCount(t, reg, "masterjob_renewal_duration_seconds"); n != 2 {
		t.Errorf("renewal histogram: %d observations, want 2", n)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
}

// TestReleaseResetsGauges checks that every kind of end of mastership sets
// is_master and the TTL to 0, and a new acquisition sets is_master again.
func TestReleaseResetsGauges(t *testing.T) {
	for _, kind := range []masterjob.TransitionKind{masterjob.Released, masterjob.Lost, masterjob.Demoted} {
		t.Run(string(kind), func(t *testing.T) {
			o, reg := newObserver(t)
			o.Transition(masterjob.Transition{Lock: "L", Kind: masterjob.Acquired, Token: 1})
			o.LeaseTTL("L", 9*time.Second)
			o.Transition(masterjob.Transition{Lock: "L", Kind: kind, Token: 1, Reason: masterjob.ErrShutdown})
			if v := gauge(t, reg, "masterjob_is_master", "L"); v != 0 {
				t.Errorf("is_master after %s = %v, want 0", kind, v)
			}
			if v := gauge(t, reg, "masterjob_lease_ttl_seconds", "L"); v != 0 {
				t.Errorf("lease_ttl after %s = %v, want 0", kind, v)
			}
			o.Transition(masterjob.Transition{Lock: "L", Kind: masterjob.Acquired, Token: 2})
			if v := gauge(t, reg, "masterjob_is_master", "L"); v != 1 {
				t.Errorf("is_master after a new acquisition = %v, want 1", v)
			}
		})
	}
}

// gauge returns the value of a metric with the given lock label, or -1.
func gauge(t *testing.T, reg prometheus.Gatherer, name, lock string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "lock" && lp.GetValue() == lock {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func counter(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestRegistration(t *testing.T) {
	t.Run("nil registerer", func(t *testing.T) {
		if _, err := prom.NewObserver(nil); err == nil {
			t.Fatal("NewObserver(nil) succeeded")
		}
	})
	t.Run("bad buckets", func(t *testing.T) {
		for _, b := range [][]float64{{}, {1, 1}, {2, 1}} {
			if _, err := prom.NewObserver(prometheus.NewRegistry(), prom.WithBuckets(b)); err == nil {
				t.Errorf("WithBuckets(%v) accepted", b)
			}
		}
	})
	t.Run("conflict registers nothing", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		// A metric of the same name as the adapter's last one.
		other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "masterjob_lease_ttl_seconds", Help: "x"})
		reg.MustRegister(other)
		if _, err := prom.NewObserver(reg); err == nil {
			t.Fatal("NewObserver succeeded on a registry with a conflicting metric")
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if len(mfs) != 1 {
			names := []string{}
			for _, mf := range mfs {
				names = append(names, mf.GetName())
			}
			t.Errorf("after a failed NewObserver the registry holds %v, want only the conflicting metric", names)
		}
	})
	t.Run("two observers with const labels", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		a, err := prom.NewObserver(reg, prom.WithConstLabels(prometheus.Labels{"app": "a"}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := prom.NewObserver(reg); err == nil {
			t.Fatal("a second observer without distinguishing labels was registered")
		}
		b, err := prom.NewObserver(reg, prom.WithConstLabels(prometheus.Labels{"app": "b"}))
		if err != nil {
			t.Fatal(err)
		}
		a.Transition(masterjob.Transition{Lock: "L", Kind: masterjob.Acquired})
		b.Transition(masterjob.Transition{Lock: "L", Kind: masterjob.Acquired})
		b.Transition(masterjob.Transition{Lock: "L", Kind: masterjob.Released, Reason: masterjob.ErrShutdown})
		if v := counter(t, reg, "masterjob_transitions_total", map[string]string{"app": "b", "kind": "released"}); v != 1 {
			t.Errorf("b's released transitions = %v, want 1", v)
		}
		if v := counter(t, reg, "masterjob_transitions_total", map[string]string{"app": "a", "kind": "released"}); v != 0 {
			t.Errorf("a's released transitions = %v, want 0", v)
		}
	})
}

// TestWithExecutor runs a real executor on an in-memory store (in a
// synctest bubble, so its timers run on a fake clock) and reads the metrics
// through a disable and an enable.
func TestWithExecutor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, reg := newObserver(t, prom.WithLocks("JOB"))
		st := memstore.New()
		ex, err := masterjob.New(st,
			masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
			masterjob.WithInstanceID("i1"),
			masterjob.WithInitDelay(0),
			masterjob.WithHeartbeatInterval(time.Second),
			masterjob.WithTolerance(3*time.Second),
			masterjob.WithCheckMasterInterval(2*time.Second),
			masterjob.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
			masterjob.WithObserver(o),
		)
		if err != nil {
			t.Fatal(err)
		}
		if err := ex.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
			<-ctx.Done()
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- ex.Run(ctx) }()

		time.Sleep(2500 * time.Millisecond) // acquired, and two heartbeats
		synctest.Wait()
		if v := gauge(t, reg, "masterjob_is_master", "JOB"); v != 1 {
			t.Fatalf("is_master = %v while master, want 1", v)
		}
		if v := gauge(t, reg, "masterjob_lease_ttl_seconds", "JOB"); v <= 0 || v > 3 {
			t.Errorf("lease_ttl = %v, want in (0, 3]", v)
		}
		if n := histCount(t, reg, "masterjob_renewal_duration_seconds"); n < 2 {
			t.Errorf("renewals observed: %d, want at least 2", n)
		}
		if n := histCount(t, reg, "masterjob_check_duration_seconds"); n < 1 {
			t.Errorf("checks observed: %d, want at least 1", n)
		}

		if _, err := st.Disable(ctx, "JOB", "test", "tester"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if v := gauge(t, reg, "masterjob_is_master", "JOB"); v != 0 {
			t.Errorf("is_master = %v after disable, want 0", v)
		}
		if v := counter(t, reg, "masterjob_transitions_total", map[string]string{"lock": "JOB", "kind": "released", "reason": "disabled"}); v != 1 {
			t.Errorf("released/disabled transitions = %v, want 1", v)
		}

		if _, err := st.Enable(ctx, "JOB", "tester"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if v := gauge(t, reg, "masterjob_is_master", "JOB"); v != 1 {
			t.Errorf("is_master = %v after enable, want 1", v)
		}
		if v := counter(t, reg, "masterjob_transitions_total", map[string]string{"lock": "JOB", "kind": "acquired"}); v != 2 {
			t.Errorf("acquired transitions = %v, want 2", v)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if v := counter(t, reg, "masterjob_transitions_total", map[string]string{"lock": "JOB", "kind": "released", "reason": "shutdown"}); v != 1 {
			t.Errorf("released/shutdown transitions = %v, want 1", v)
		}
		if v := counter(t, reg, "masterjob_store_errors_total", map[string]string{"op": "renew"}); v != 0 {
			t.Errorf("store errors = %v on a healthy store", v)
		}
		_ = st.Close()
	})
}

func histCount(t *testing.T, reg prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}
