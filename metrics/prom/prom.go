// Package prom exports an executor's events as Prometheus metrics through
// github.com/prometheus/client_golang. It is an adapter: the masterjob
// package itself does not depend on Prometheus.
//
//	reg := prometheus.NewRegistry()
//	obs, err := prom.NewObserver(reg, prom.WithLocks("JOB-SCHEDULER"))
//	if err != nil {
//		return err
//	}
//	ex, err := masterjob.New(st, masterjob.WithObserver(obs))
//	...
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// To feed metrics and the audit history at once, combine observers with
// masterjob.Observers(obs, recorder). A registry of its own has no Go
// runtime or process metrics: register collectors.NewGoCollector() and
// collectors.NewProcessCollector too, if it is the process's only one.
//
// # Metrics
//
//	masterjob_is_master{lock}                        gauge: 1 while this instance is master of lock, else 0
//	masterjob_transitions_total{lock,kind,reason}    counter: mastership transitions
//	masterjob_renewal_duration_seconds               histogram: batched renewal round trips
//	masterjob_check_duration_seconds                 histogram: batched check (acquisition) round trips
//	masterjob_store_errors_total{op}                 counter: failed store round trips; op is "renew" or "check"
//	masterjob_renewal_failures_total                 counter: renewals that did not extend a lease
//	masterjob_lease_ttl_seconds{lock}                gauge: seconds until the lease expires, as the store
//	                                                 reported after the last renewal; 0 when not master
//
// and, from a StoreCollector (NewStoreCollector), the store's view of every
// lock, read at scrape time (at most once per cache interval):
//
//	masterjob_lock_has_master{lock}                  gauge: 1 while the lock has an unexpired lease
//	masterjob_lock_disabled{lock}                    gauge: 1 while the lock is disabled
//	masterjob_lock_token{lock}                       gauge: fencing token of the current or last lease
//	masterjob_lock_ttl_seconds{lock}                 gauge: seconds left on the lease, by the store's clock
//	masterjob_store_view_up                          gauge: 1 when the last read of the store succeeded
//
// kind is one of acquired, released, lost, demoted (masterjob.TransitionKind).
// reason is a short, stable label derived from the transition's cause (see
// Reason): shutdown, disabled, lease_lost, trust_window_passed,
// lease_expired, job_returned, none (for acquired), or other.
//
// A renewal failure is a renewal round trip that failed (each attempt,
// retries included; these are also counted as store errors with op
// "renew") or a lease that the store refused to renew because it was no
// longer this instance's (a "lost" transition). Durations are observed for
// failed round trips too.
//
// # Label cardinality
//
// The lock label carries user-chosen lock names: every lock this instance
// has been master of (or was named with WithLocks) gets its own series of
// masterjob_is_master and masterjob_lease_ttl_seconds, and a few of
// masterjob_transitions_total. That is fine for the usual tens or hundreds
// of locks; an application that makes lock names from unbounded data (user
// ids, dates) should not use this adapter as is. Series are never deleted
// while the Observer lives: a lock this instance no longer holds keeps
// reporting 0.
package prom

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/masterjob/masterjob"
)

// DefaultBuckets are the buckets, in seconds, of the duration histograms:
// from 1 ms to 10 s, the range of a store round trip from a local SQLite
// file to a struggling remote database.
var DefaultBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Values of the reason label of masterjob_transitions_total.
const (
	ReasonShutdown          = "shutdown"
	ReasonDisabled          = "disabled"
	ReasonLeaseLost         = "lease_lost"
	ReasonTrustWindowPassed = "trust_window_passed"
	ReasonLeaseExpired      = "lease_expired"
	ReasonJobReturned       = "job_returned"
	ReasonNone              = "none"
	ReasonOther             = "other"
)

// Values of the op label of masterjob_store_errors_total.
const (
	OpRenew = "renew"
	OpCheck = "check"
)

var reasons = []struct {
	err   error
	label string
}{
	{masterjob.ErrShutdown, ReasonShutdown},
	{masterjob.ErrDisabled, ReasonDisabled},
	{masterjob.ErrLeaseLost, ReasonLeaseLost},
	{masterjob.ErrTrustWindowPassed, ReasonTrustWindowPassed},
	{masterjob.ErrLeaseExpired, ReasonLeaseExpired},
	{masterjob.ErrJobReturned, ReasonJobReturned},
}

// Reason returns the reason label of a transition's cause: ReasonNone for
// nil, the label of the first masterjob reason sentinel that err wraps
// (errors.Is), or ReasonOther.
func Reason(err error) string {
	if err == nil {
		return ReasonNone
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return ReasonOther
}

// Option configures NewObserver.
type Option func(*config)

type config struct {
	buckets     []float64
	constLabels prometheus.Labels
	locks       []string
}

// WithBuckets sets the buckets, in seconds, of the renewal and check
// duration histograms (default DefaultBuckets).
func WithBuckets(b []float64) Option {
	return func(c *config) { c.buckets = append([]float64(nil), b...) }
}

// WithConstLabels adds labels with fixed values to every metric, for
// example the application's name when several share a registry.
func WithConstLabels(l prometheus.Labels) Option {
	return func(c *config) {
		if c.constLabels == nil {
			c.constLabels = prometheus.Labels{}
		}
		for k, v := range l {
			c.constLabels[k] = v
		}
	}
}

// WithLocks creates the per-lock series of the named locks at once, with
// masterjob_is_master at 0, so that a lock this instance follows but has
// not yet been master of is visible (and alerts on it can fire). Pass the
// locks registered with the executor.
func WithLocks(locks ...string) Option {
	return func(c *config) { c.locks = append(c.locks, locks...) }
}

// Observer is a masterjob.Observer that updates Prometheus metrics. Create
// it with NewObserver; its methods are safe for concurrent use and never
// block.
type Observer struct {
	isMaster        *prometheus.GaugeVec
	transitions     *prometheus.CounterVec
	renewalDuration prometheus.Histogram
	checkDuration   prometheus.Histogram
	storeErrors     *prometheus.CounterVec
	renewalFailures prometheus.Counter
	leaseTTL        *prometheus.GaugeVec
}

var _ masterjob.Observer = (*Observer)(nil)

// NewObserver creates the metrics, registers them with reg and returns the
// Observer that updates them. It fails, registering nothing, when reg
// already holds metrics of the same names (a second Observer on one
// registry needs WithConstLabels that tell them apart) or an option is
// invalid.
func NewObserver(reg prometheus.Registerer, opts ...Option) (*Observer, error) {
	if reg == nil {
		return nil, errors.New("prom: nil Registerer")
	}
	c := config{buckets: DefaultBuckets}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if len(c.buckets) == 0 {
		return nil, errors.New("prom: WithBuckets: no buckets")
	}
	for i := 1; i < len(c.buckets); i++ {
		if c.buckets[i] <= c.buckets[i-1] {
			return nil, fmt.Errorf("prom: WithBuckets: buckets must increase, got %v", c.buckets)
		}
	}
	const ns = "masterjob"
	o := &Observer{
		isMaster: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "is_master", ConstLabels: c.constLabels,
			Help: "1 while this instance is the master of the lock, else 0.",
		}, []string{"lock"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "transitions_total", ConstLabels: c.constLabels,
			Help: "Mastership transitions of this instance by lock, kind (acquired, released, lost, demoted) and reason.",
		}, []string{"lock", "kind", "reason"}),
		renewalDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "renewal_duration_seconds", ConstLabels: c.constLabels, Buckets: c.buckets,
			Help: "Duration of batched lease renewal round trips to the store, failed ones included.",
		}),
		checkDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "check_duration_seconds", ConstLabels: c.constLabels, Buckets: c.buckets,
			Help: "Duration of batched check (acquisition) round trips to the store, failed ones included.",
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "store_errors_total", ConstLabels: c.constLabels,
			Help: "Store round trips that failed, by operation (renew, check).",
		}, []string{"op"}),
		renewalFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "renewal_failures_total", ConstLabels: c.constLabels,
			Help: "Renewals that did not extend a lease: failed renewal round trips (retries included) and leases the store refused to renew.",
		}),
		leaseTTL: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "lease_ttl_seconds", ConstLabels: c.constLabels,
			Help: "Seconds until the lease of the lock expires, as the store reported after the last renewal; 0 when this instance is not master.",
		}, []string{"lock"}),
	}
	// Both ops exist from the start, so that rate() sees the first error.
	o.storeErrors.WithLabelValues(OpRenew)
	o.storeErrors.WithLabelValues(OpCheck)
	for _, l := range c.locks {
		o.isMaster.WithLabelValues(l).Set(0)
		o.leaseTTL.WithLabelValues(l).Set(0)
	}
	var done []prometheus.Collector
	for _, col := range o.collectors() {
		if err := reg.Register(col); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("prom: registering metrics: %w", err)
		}
		done = append(done, col)
	}
	return o, nil
}

func (o *Observer) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		o.isMaster, o.transitions, o.renewalDuration, o.checkDuration,
		o.storeErrors, o.renewalFailures, o.leaseTTL,
	}
}

// Transition implements masterjob.Observer.
func (o *Observer) Transition(t masterjob.Transition) {
	o.transitions.WithLabelValues(t.Lock, string(t.Kind), Reason(t.Reason)).Inc()
	if t.Kind == masterjob.Acquired {
		o.isMaster.WithLabelValues(t.Lock).Set(1)
		return
	}
	// Released (its job stopped, its release returned), lost or demoted
	// (the job may still be stopping): this instance no longer trusts the
	// lease.
	o.isMaster.WithLabelValues(t.Lock).Set(0)
	o.leaseTTL.WithLabelValues(t.Lock).Set(0)
	if t.Kind == masterjob.Lost {
		o.renewalFailures.Inc()
	}
}

// Renewal implements masterjob.Observer.
func (o *Observer) Renewal(took time.Duration, _ int, err error) {
	o.renewalDuration.Observe(took.Seconds())
	if err != nil {
		o.storeErrors.WithLabelValues(OpRenew).Inc()
		o.renewalFailures.Inc()
	}
}

// Check implements masterjob.Observer.
func (o *Observer) Check(took time.Duration, _ int, err error) {
	o.checkDuration.Observe(took.Seconds())
	if err != nil {
		o.storeErrors.WithLabelValues(OpCheck).Inc()
	}
}

// LeaseTTL implements masterjob.Observer.
func (o *Observer) LeaseTTL(lock string, ttl time.Duration) {
	o.leaseTTL.WithLabelValues(lock).Set(max(ttl.Seconds(), 0))
}
