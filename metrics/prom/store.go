package prom

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/masterjob/masterjob/store"
)

// Defaults of a StoreCollector.
const (
	// DefaultCacheFor is how long a StoreCollector reuses what it read.
	DefaultCacheFor = 2 * time.Second
	// DefaultReadTimeout bounds a StoreCollector's read of the store.
	DefaultReadTimeout = 3 * time.Second
)

// LockReader is what a StoreCollector reads: every store.Store is one.
type LockReader interface {
	Locks(ctx context.Context, names ...string) ([]store.LockState, error)
}

// StoreCollector is a prometheus.Collector of the store's view of every
// lock (or of the named ones), for a process that runs no executor of
// those locks (masterjob serve) as much as for one that does:
//
//	masterjob_lock_has_master{lock}    gauge: 1 while the lock has an unexpired lease, else 0
//	masterjob_lock_disabled{lock}      gauge: 1 while the lock is disabled, else 0
//	masterjob_lock_token{lock}         gauge: fencing token of the current or last lease (0: never acquired)
//	masterjob_lock_ttl_seconds{lock}   gauge: seconds until the lease expires, by the store's clock; 0 without one
//	masterjob_store_view_up            gauge: 1 when the last read of the store succeeded, else 0
//
// The store is read when Prometheus scrapes, at most once per cache
// interval (WithCacheFor) whatever the number of scrapes: concurrent
// scrapes wait for one read, which is bounded by WithReadTimeout. The TTL
// of a cached read is counted down with the local monotonic clock. When
// the read fails, only masterjob_store_view_up (0) is exported, so that
// alerts on the per-lock series do not see stale values.
//
// Every lock the store knows gets four series: fine for the usual tens or
// hundreds of locks; pass the names (WithStoreLocks) when the store holds
// many more.
type StoreCollector struct {
	st                LockReader
	names             []string
	cacheFor, timeout time.Duration

	hasMaster, disabled, token, ttl, up *prometheus.Desc

	mu     sync.Mutex // held during a read: one read at a time
	readAt time.Time  // monotonic; zero before the first read
	states []store.LockState
	err    error
}

// StoreOption configures NewStoreCollector.
type StoreOption func(*storeConfig)

type storeConfig struct {
	cacheFor, timeout time.Duration
	names             []string
	constLabels       prometheus.Labels
}

// WithCacheFor sets how long a read of the store is reused (default
// DefaultCacheFor). Zero or less reads on every scrape.
func WithCacheFor(d time.Duration) StoreOption {
	return func(c *storeConfig) { c.cacheFor = d }
}

// WithReadTimeout bounds each read of the store (default
// DefaultReadTimeout).
func WithReadTimeout(d time.Duration) StoreOption {
	return func(c *storeConfig) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithStoreLocks limits the series to the named locks (default: every
// lock the store knows).
func WithStoreLocks(names ...string) StoreOption {
	return func(c *storeConfig) { c.names = append(c.names, names...) }
}

// WithStoreConstLabels adds labels with fixed values to every series.
func WithStoreConstLabels(l prometheus.Labels) StoreOption {
	return func(c *storeConfig) {
		if c.constLabels == nil {
			c.constLabels = prometheus.Labels{}
		}
		for k, v := range l {
			c.constLabels[k] = v
		}
	}
}

// NewStoreCollector returns a collector of st's view of the locks.
// Register it with a registry (reg.Register).
func NewStoreCollector(st LockReader, opts ...StoreOption) (*StoreCollector, error) {
	if st == nil {
		return nil, errors.New("prom: NewStoreCollector: nil store")
	}
	c := storeConfig{cacheFor: DefaultCacheFor, timeout: DefaultReadTimeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("masterjob_"+name, help, labels, c.constLabels)
	}
	return &StoreCollector{
		st: st, names: c.names, cacheFor: c.cacheFor, timeout: c.timeout,
		hasMaster: desc("lock_has_master", "1 while the lock has an unexpired lease in the store, else 0.", "lock"),
		disabled:  desc("lock_disabled", "1 while the lock is disabled in the store, else 0.", "lock"),
		token:     desc("lock_token", "Fencing token of the lock's current or last lease in the store; 0 if never acquired.", "lock"),
		ttl:       desc("lock_ttl_seconds", "Seconds until the lock's lease expires, by the store's clock; 0 without an unexpired lease.", "lock"),
		up:        desc("store_view_up", "1 when the last read of the locks from the store succeeded, else 0."),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *StoreCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hasMaster, c.disabled, c.token, c.ttl, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the store unless the
// last read is fresh enough.
func (c *StoreCollector) Collect(ch chan<- prometheus.Metric) {
	states, age, err := c.read()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, s := range states {
		ttl := s.TTL - age
		held := s.Holder != "" && ttl > 0
		if !held {
			ttl = 0
		}
		ch <- prometheus.MustNewConstMetric(c.hasMaster, prometheus.GaugeValue, b2f(held), s.Lock)
		ch <- prometheus.MustNewConstMetric(c.disabled, prometheus.GaugeValue, b2f(s.Disabled), s.Lock)
		ch <- prometheus.MustNewConstMetric(c.token, prometheus.GaugeValue, float64(s.Token), s.Lock)
		ch <- prometheus.MustNewConstMetric(c.ttl, prometheus.GaugeValue, ttl.Seconds(), s.Lock)
	}
}

// read returns the locks as last read and how long ago, reading them when
// that was longer ago than the cache interval.
func (c *StoreCollector) read() ([]store.LockState, time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && time.Since(c.readAt) < c.cacheFor {
		return c.states, time.Since(c.readAt), c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	c.states, c.err = c.st.Locks(ctx, c.names...)
	// The TTLs are the store's at about the middle of the call.
	c.readAt = start.Add(time.Since(start) / 2)
	return c.states, time.Since(c.readAt), c.err
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
