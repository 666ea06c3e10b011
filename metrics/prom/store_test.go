package prom_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// countingStore counts the reads of the locks.
type countingStore struct {
	*memstore.Store
	reads atomic.Int64
}

func (c *countingStore) Locks(ctx context.Context, names ...string) ([]store.LockState, error) {
	c.reads.Add(1)
	return c.Store.Locks(ctx, names...)
}

// plain returns the value of a metric without labels, or -1.
func plain(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// The collector exports the store's view of every lock: master or not,
// disabled or not, token, TTL counted down between reads; it reads the
// store at most once per cache interval, however many scrapes; a failed
// read exports only masterjob_store_view_up 0.
func TestStoreCollector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		ms := memstore.New()
		defer ms.Close()
		st := &countingStore{Store: ms}
		h := store.Holder{ID: "inst-1"}
		acquired, err := ms.Acquire(ctx, h, []string{"HELD", "FREED"}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tokens := map[string]int64{}
		for _, s := range acquired {
			tokens[s.Lock] = s.Token
		}
		if err := ms.Release(ctx, h.ID, []store.LeaseRef{{Lock: "FREED", Token: tokens["FREED"]}}); err != nil {
			t.Fatal(err)
		}
		if _, err := ms.Disable(ctx, "OFF", "maintenance", "test"); err != nil {
			t.Fatal(err)
		}

		col, err := prom.NewStoreCollector(st)
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(col)
		want := map[string][4]float64{ // has_master, disabled, token, ttl
			"HELD":  {1, 0, float64(tokens["HELD"]), 10},
			"FREED": {0, 0, float64(tokens["FREED"]), 0},
			"OFF":   {0, 1, 0, 0},
		}
		check := func(ttlHeld float64) {
			t.Helper()
			w := want["HELD"]
			w[3] = ttlHeld
			want["HELD"] = w
			for lock, v := range want {
				got := [4]float64{
					gauge(t, reg, "masterjob_lock_has_master", lock), gauge(t, reg, "masterjob_lock_disabled", lock),
					gauge(t, reg, "masterjob_lock_token", lock), gauge(t, reg, "masterjob_lock_ttl_seconds", lock),
				}
				if got[0] != v[0] || got[1] != v[1] || got[2] != v[2] || math.Abs(got[3]-v[3]) > 0.01 {
					t.Errorf("%s: has_master, disabled, token, ttl = %v, want %v", lock, got, v)
				}
			}
			if up := plain(t, reg, "masterjob_store_view_up"); up != 1 {
				t.Errorf("masterjob_store_view_up = %v, want 1", up)
			}
		}
		check(10)
		reads := st.reads.Load()

		// 100 concurrent scrapes within the cache interval: no read.
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() { _, _ = reg.Gather() })
		}
		wg.Wait()
		time.Sleep(1500 * time.Millisecond)
		check(8.5) // counted down locally
		if n := st.reads.Load() - reads; n != 0 {
			t.Fatalf("%d reads within the cache interval, want 0", n)
		}
		// Past it: one read for many scrapes.
		time.Sleep(time.Second)
		for range 100 {
			wg.Go(func() { _, _ = reg.Gather() })
		}
		wg.Wait()
		if n := st.reads.Load() - reads; n != 1 {
			t.Fatalf("%d reads for 100 scrapes past the cache interval, want 1", n)
		}
		check(7.5)
		// The lease runs out: no master, TTL 0, before the next read.
		time.Sleep(8 * time.Second)
		want["HELD"] = [4]float64{0, 0, float64(tokens["HELD"]), 0}
		check(0)

		// An outage: only store_view_up, 0.
		ms.SetFailure(errors.New("down"))
		time.Sleep(prom.DefaultCacheFor)
		if up := plain(t, reg, "masterjob_store_view_up"); up != 0 {
			t.Errorf("masterjob_store_view_up during an outage = %v, want 0", up)
		}
		if v := gauge(t, reg, "masterjob_lock_has_master", "HELD"); v != -1 {
			t.Errorf("per-lock series exported during an outage")
		}
	})
}

// WithStoreLocks limits the series to the named locks.
func TestStoreCollectorLocks(t *testing.T) {
	ms := memstore.New()
	defer ms.Close()
	for _, l := range []string{"A", "B"} {
		if _, err := ms.Disable(context.Background(), l, "r", "test"); err != nil {
			t.Fatal(err)
		}
	}
	col, err := prom.NewStoreCollector(ms, prom.WithStoreLocks("B"), prom.WithStoreConstLabels(prometheus.Labels{"app": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	if a, b := gauge(t, reg, "masterjob_lock_disabled", "A"), gauge(t, reg, "masterjob_lock_disabled", "B"); a != -1 || b != 1 {
		t.Fatalf("A %v, B %v: want only B", a, b)
	}
	if _, err := prom.NewStoreCollector(nil); err == nil {
		t.Fatal("NewStoreCollector(nil) succeeded")
	}
}
