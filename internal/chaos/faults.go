//go:build linux

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Fault kinds.
const (
	FaultKill    = "sigkill"       // SIGKILL an instance, then restart it
	FaultStop    = "sigstop"       // SIGSTOP an instance for longer than the lease, then SIGCONT
	FaultCut     = "cut"           // cut an instance from the store
	FaultLatency = "latency"       // add latency between an instance and the store
	FaultRestart = "store-restart" // end the instance's server backends / reopen its handle
	FaultClock   = "clock-jump"    // jump the instance's wall clock forward or back, then back
	FaultDisable = "disable"       // disable a lock from the driver, then enable it
)

// FaultKinds lists the kinds, in report order.
var FaultKinds = []string{FaultKill, FaultStop, FaultCut, FaultLatency, FaultRestart, FaultClock, FaultDisable}

// faultWeights sets how often each kind is drawn.
var faultWeights = map[string]int{
	FaultKill: 3, FaultStop: 3, FaultCut: 3, FaultLatency: 2, FaultRestart: 2, FaultClock: 2, FaultDisable: 2,
}

// scheduler draws faults from a seeded source and runs them, at most
// Instances-1 instance faults at a time, so that one instance at least is
// not under a fault it was dealt (it may still be restarting).
type scheduler struct {
	d   *driver
	rng *rand.Rand

	mu       sync.Mutex
	busy     map[int]bool
	disabled map[string]bool
	wg       sync.WaitGroup
}

func (sc *scheduler) uniform(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(sc.rng.Int64N(int64(hi-lo)))
}

func (sc *scheduler) pickKind() string {
	kinds := sc.d.cfg.Kinds
	if len(kinds) == 0 {
		kinds = FaultKinds
	}
	total := 0
	for _, k := range kinds {
		total += faultWeights[k]
	}
	n := sc.rng.IntN(total)
	for _, k := range kinds {
		if n < faultWeights[k] {
			return k
		}
		n -= faultWeights[k]
	}
	return kinds[0]
}

// run injects cfg.Faults faults and waits until all have ended.
func (sc *scheduler) run(ctx context.Context) {
	d := sc.d
	cfg := d.cfg
	n := 0
	for n < cfg.Faults {
		gap := sc.uniform(cfg.FaultGap/2, cfg.FaultGap*3/2)
		select {
		case <-ctx.Done():
			sc.wg.Wait()
			return
		case <-time.After(gap):
		}
		kind := sc.pickKind()
		rec := FaultRecord{Kind: kind}
		var fn func(*FaultRecord)
		if kind == FaultDisable {
			lock := lockName(sc.rng.IntN(cfg.Locks))
			sc.mu.Lock()
			taken := sc.disabled[lock]
			if !taken {
				sc.disabled[lock] = true
			}
			sc.mu.Unlock()
			if taken {
				continue
			}
			hold := sc.uniform(200*time.Millisecond, 1200*time.Millisecond)
			rec.Target = lock
			fn = func(r *FaultRecord) {
				defer func() { sc.mu.Lock(); delete(sc.disabled, lock); sc.mu.Unlock() }()
				d.faultDisable(ctx, r, lock, hold)
			}
		} else {
			idx := sc.pickTarget()
			if idx < 0 {
				continue
			}
			s := d.slots[idx]
			rec.Target = fmt.Sprintf("instance %d", idx)
			release := func() { sc.mu.Lock(); delete(sc.busy, idx); sc.mu.Unlock() }
			switch kind {
			case FaultKill:
				delay := sc.uniform(0, 300*time.Millisecond)
				fn = func(r *FaultRecord) { defer release(); d.faultKill(ctx, r, s, delay) }
			case FaultStop:
				hold := cfg.Timing.Tolerance + sc.uniform(100*time.Millisecond, 800*time.Millisecond)
				fn = func(r *FaultRecord) { defer release(); d.faultStop(ctx, r, s, hold) }
			case FaultCut:
				mode := []string{CutReset, CutStall}[sc.rng.IntN(2)]
				hold := sc.uniform(200*time.Millisecond, 2000*time.Millisecond)
				fn = func(r *FaultRecord) { defer release(); d.faultCut(ctx, r, s, mode, hold) }
			case FaultLatency:
				lat := sc.uniform(5*time.Millisecond, 40*time.Millisecond)
				hold := sc.uniform(500*time.Millisecond, 2000*time.Millisecond)
				fn = func(r *FaultRecord) { defer release(); d.faultLatency(ctx, r, s, lat, hold) }
			case FaultRestart:
				fn = func(r *FaultRecord) { defer release(); d.faultRestart(ctx, r, s) }
			case FaultClock:
				off := sc.uniform(10*time.Second, time.Hour)
				if sc.rng.IntN(2) == 0 {
					off = -off
				}
				hold := sc.uniform(300*time.Millisecond, 1500*time.Millisecond)
				fn = func(r *FaultRecord) { defer release(); d.faultClock(ctx, r, s, off, hold) }
			}
		}
		n++
		rec.N = n
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			r := rec
			r.Start = Mono()
			fn(&r)
			r.End = Mono()
			d.mu.Lock()
			d.faults = append(d.faults, r)
			d.mu.Unlock()
			d.record("fault", r)
			if r.Err != "" {
				d.problem(VHarness, "", "fault %d (%s on %s) failed: %s", r.N, r.Kind, r.Target, r.Err)
			}
		}()
		if n%100 == 0 {
			d.logf("%d/%d faults started", n, cfg.Faults)
		}
	}
	sc.wg.Wait()
}

// pickTarget returns a random slot that is not under a fault, or -1.
func (sc *scheduler) pickTarget() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.busy) >= sc.d.cfg.Instances-1 {
		return -1
	}
	var free []int
	for i := range sc.d.cfg.Instances {
		if !sc.busy[i] {
			free = append(free, i)
		}
	}
	idx := free[sc.rng.IntN(len(free))]
	sc.busy[idx] = true
	return idx
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (d *driver) faultKill(ctx context.Context, r *FaultRecord, s *slot, delay time.Duration) {
	at, err := d.kill(s)
	if err != nil {
		r.Err = err.Error()
		return
	}
	sleepCtx(ctx, delay)
	ready := Mono()
	defer func() { d.down(Window{Index: s.index, From: at, To: ready, Cause: "killed"}) }()
	if ctx.Err() != nil {
		return
	}
	if err := d.start(s); err != nil {
		r.Err = err.Error()
		return
	}
	t, err := d.waitReady(ctx, s, 30*time.Second)
	ready = Mono()
	if err != nil {
		r.Err = err.Error()
		return
	}
	ready = t
	r.Detail = fmt.Sprintf("restarted after %v, ready after %v", delay, dur(ready-at))
}

func (d *driver) faultStop(ctx context.Context, r *FaultRecord, s *slot, hold time.Duration) {
	s.mu.Lock()
	pid := s.pid
	s.mu.Unlock()
	from := Mono()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		r.Err = err.Error()
		return
	}
	sleepCtx(ctx, hold)
	// The process has been stopped for a while: a lock it holds now, it
	// has held since it stopped.
	lockHeld := d.spec.kind == kindSQLite && sqliteWriterLockHeld(pid, d.spec.path)
	err := syscall.Kill(pid, syscall.SIGCONT)
	to := Mono()
	w := Window{Index: s.index, From: from, To: to, Cause: "stop"}
	d.mu.Lock()
	d.tl.Stopped = append(d.tl.Stopped, w)
	d.mu.Unlock()
	d.down(w)
	if err != nil {
		r.Err = err.Error()
	}
	r.Detail = fmt.Sprintf("stopped %v", dur(to-from))
	if lockHeld {
		// Every instance's store calls waited for the paused writer: the
		// store was unavailable to all of them.
		r.Detail += "; it held SQLite's write lock, blocking every instance's store calls"
		d.mu.Lock()
		d.tl.StoreBlocked = append(d.tl.StoreBlocked, w)
		d.mu.Unlock()
		if d.cfg.StrictSQLiteLock {
			d.problem(VPausedWriter, "", "instance %d was SIGSTOPped from %s to %s holding SQLite's write lock: every instance's store calls blocked for %v",
				s.index, ts(from), ts(to), dur(to-from))
		}
		for _, o := range d.slots {
			if o != s {
				d.down(Window{Index: o.index, From: from, To: to, Cause: "store-locked"})
			}
		}
	}
}

func (d *driver) faultCut(ctx context.Context, r *FaultRecord, s *slot, mode string, hold time.Duration) {
	var from, to int64
	if d.spec.proxied() {
		p := d.proxies[s.index]
		p.Cut(mode)
		from = Mono()
		sleepCtx(ctx, hold)
		to = Mono()
		p.Restore()
		r.Detail = fmt.Sprintf("proxy %s for %v", mode, hold)
	} else {
		// No network between an instance and its SQLite file: fail or hang
		// every store call of the instance instead.
		smode := map[string]string{CutReset: "fail", CutStall: "hang"}[mode]
		a, err := d.control(s, Message{Type: msgOutage, Mode: smode})
		if err != nil {
			r.Err = err.Error()
			return
		}
		from = a.T
		sleepCtx(ctx, hold)
		b, err := d.control(s, Message{Type: msgOutage})
		to = Mono()
		if err != nil {
			r.Err = err.Error()
		} else {
			to = b.T
		}
		r.Detail = fmt.Sprintf("store outage (%s) for %v", smode, hold)
	}
	d.down(Window{Index: s.index, From: from, To: to, Cause: "cut"})
}

func (d *driver) faultLatency(ctx context.Context, r *FaultRecord, s *slot, lat, hold time.Duration) {
	var from, to int64
	if d.spec.proxied() {
		p := d.proxies[s.index]
		p.SetLatency(lat)
		from = Mono()
		sleepCtx(ctx, hold)
		p.SetLatency(0)
		to = Mono()
		r.Detail = fmt.Sprintf("proxy latency %v each way for %v", lat, hold)
	} else {
		a, err := d.control(s, Message{Type: msgOutage, Latency: int64(lat)})
		if err != nil {
			r.Err = err.Error()
			return
		}
		from = a.T
		sleepCtx(ctx, hold)
		b, err := d.control(s, Message{Type: msgOutage})
		to = Mono()
		if err != nil {
			r.Err = err.Error()
		} else {
			to = b.T
		}
		r.Detail = fmt.Sprintf("store-call latency %v for %v", lat, hold)
	}
	w := Window{Index: s.index, From: from, To: to, Cause: "latency"}
	d.mu.Lock()
	d.tl.Degraded = append(d.tl.Degraded, w)
	d.mu.Unlock()
	d.record("degraded", w)
}

func (d *driver) faultRestart(ctx context.Context, r *FaultRecord, s *slot) {
	if d.spec.engine != nil {
		d.faultRestartEngine(ctx, r, s)
		return
	}
	from := Mono()
	if d.spec.kind == kindPostgres {
		d.pgMu.Lock()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := terminateBackends(cctx, d.pg, d.appName(s.index))
		cancel()
		d.pgMu.Unlock()
		if err != nil {
			r.Err = err.Error()
			return
		}
		r.Detail = fmt.Sprintf("pg_terminate_backend ended %d backends", n)
	} else {
		if _, err := d.control(s, Message{Type: msgReopen}); err != nil {
			r.Err = err.Error()
			return
		}
		r.Detail = "closed and reopened the store handle"
	}
	// The instance reconnects within a check interval or a heartbeat retry.
	w := Window{Index: s.index, From: from, To: Mono() + int64(d.cfg.Timing.Check), Cause: "store-restart"}
	d.mu.Lock()
	d.tl.Degraded = append(d.tl.Degraded, w)
	d.mu.Unlock()
	d.record("degraded", w)
}

func (d *driver) faultClock(ctx context.Context, r *FaultRecord, s *slot, off, hold time.Duration) {
	a, err := d.control(s, Message{Type: msgClock, Offset: int64(off)})
	if err != nil {
		r.Err = err.Error()
		return
	}
	sleepCtx(ctx, hold)
	if _, err := d.control(s, Message{Type: msgClock}); err != nil {
		r.Err = err.Error()
		return
	}
	r.Detail = fmt.Sprintf("wall clock %+v for %v (instance saw %s)", off, hold, a.Wall)
}

func (d *driver) faultDisable(ctx context.Context, r *FaultRecord, lock string, hold time.Duration) {
	c := ControlWindow{Lock: lock}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c.DisableCalled = Mono()
	ch, err := retryUnavailable(cctx, func(ctx context.Context) (store.ControlChange, error) {
		return d.st.Disable(ctx, lock, "chaos fault", "masterjob-chaos")
	})
	c.DisableReturned = Mono()
	if err != nil {
		r.Err = "disable: " + err.Error()
		return
	}
	c.Token = ch.State.Token
	sleepCtx(ctx, hold)
	ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ecancel()
	c.EnableCalled = Mono()
	_, err = retryUnavailable(ectx, func(ctx context.Context) (store.ControlChange, error) {
		return d.st.Enable(ctx, lock, "masterjob-chaos")
	})
	c.EnableReturned = Mono()
	if err != nil {
		r.Err = "enable: " + err.Error()
		c.EnableReturned = 0
	}
	d.mu.Lock()
	d.tl.Controls = append(d.tl.Controls, c)
	d.mu.Unlock()
	d.record("control", c)
	r.Detail = fmt.Sprintf("disabled for %v (revoked token %d, held=%v)", hold, c.Token, ch.State.Held())
}
