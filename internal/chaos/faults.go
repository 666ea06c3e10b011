//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/internal/sqlitelock"
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
	FaultTerm    = "sigterm"       // SIGTERM an instance (graceful shutdown), then restart it
	FaultLoss    = "store-loss"    // end a lock's lease in the store behind its holder's back
	// FaultSuspend suspends a runner as a terminal's Ctrl-Z does
	// (SIGTSTP) for longer than the lease, then SIGCONTs it (runner mode
	// only): its command must be stopped with it.
	FaultSuspend = "sigtstp"
	// FaultCombo is a planned stop of a master (disable of its lock, or
	// SIGTERM of its instance) and, while its job stops, a store-side loss
	// of its lease, a cut from the store or a SIGSTOP.
	FaultCombo = "combo"
)

// FaultKinds lists the kinds, in report order.
var FaultKinds = []string{FaultKill, FaultStop, FaultCut, FaultLatency, FaultRestart, FaultClock, FaultDisable,
	FaultTerm, FaultLoss, FaultCombo, FaultSuspend}

// faultWeights sets how often each kind is drawn.
var faultWeights = map[string]int{
	FaultKill: 3, FaultStop: 3, FaultCut: 3, FaultLatency: 2, FaultRestart: 2, FaultClock: 2, FaultDisable: 2,
	FaultTerm: 2, FaultLoss: 2, FaultCombo: 5, FaultSuspend: 2,
}

// applies reports whether fault kind k can be injected in this run. In
// runner mode the instance is the real CLI: faults injected inside an
// instance's store calls (SQLite) or wall clock do not reach it.
func (c *Config) applies(k string) bool {
	if !c.Runner {
		return k != FaultSuspend // an instance is one process: SIGSTOP covers it
	}
	switch k {
	case FaultClock:
		return false
	case FaultCut, FaultLatency, FaultRestart:
		s, err := parseStoreURL(c.StoreURL)
		switch {
		case err != nil:
			return false
		case s.engine != nil: // a proxy per instance; a restart of its own kind
			return k != FaultRestart || s.engine.RunnerRestart
		}
		return s.kind == kindPostgres
	}
	return true
}

// scheduler draws faults from a seeded source and runs them, at most
// Instances-1 instance faults at a time, so that one instance at least is
// not under a fault it was dealt (it may still be restarting), and at most
// one lock fault (disable, store loss, combo) per lock at a time.
type scheduler struct {
	d   *driver
	rng *rand.Rand
	ctx context.Context // the run's: ends faults early when the run is interrupted

	mu       sync.Mutex
	busy     map[int]bool
	lockBusy map[string]bool
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
		for _, k := range FaultKinds {
			if sc.d.cfg.applies(k) {
				kinds = append(kinds, k)
			}
		}
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
	sc.ctx = ctx
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
		fn := sc.plan(kind, &rec)
		if fn == nil {
			continue // no target free now
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

// plan draws the parameters of a fault of kind and picks its target; it
// returns nil when no target is free.
func (sc *scheduler) plan(kind string, rec *FaultRecord) func(*FaultRecord) {
	d := sc.d
	cfg := d.cfg
	switch kind {
	case FaultDisable:
		lock := sc.pickLock(false)
		if lock == "" {
			return nil
		}
		hold := sc.uniform(200*time.Millisecond, 1200*time.Millisecond)
		rec.Target = lock
		return func(r *FaultRecord) {
			defer sc.releaseLock(lock)
			d.faultDisable(sc.ctx, r, lock, hold)
		}
	case FaultLoss:
		lock := sc.pickLock(true)
		if lock == "" {
			return nil
		}
		mode := []string{LossDelete, LossExpire}[sc.rng.IntN(2)]
		rec.Target = lock
		return func(r *FaultRecord) {
			defer sc.releaseLock(lock)
			d.faultLoss(r, lock, mode)
		}
	case FaultCombo:
		return sc.planCombo(rec)
	}
	// In runner mode a SIGKILL of the master is the test of the runner's
	// promise that its child dies with it: aim every one there.
	idx := sc.pickTarget(kind == FaultKill && cfg.Runner)
	if idx < 0 {
		return nil
	}
	s := d.slots[idx]
	rec.Target = fmt.Sprintf("instance %d", idx)
	release := func() { sc.mu.Lock(); delete(sc.busy, idx); sc.mu.Unlock() }
	ctx := sc.ctx
	switch kind {
	case FaultKill:
		delay := sc.uniform(0, 300*time.Millisecond)
		if cfg.Runner && sc.rng.IntN(4) == 0 {
			rec.Variant = variantKillSuccessor
			return func(r *FaultRecord) { defer release(); d.faultKillSuccessor(ctx, sc, r, s, delay) }
		}
		return func(r *FaultRecord) { defer release(); d.faultKill(ctx, r, s, delay) }
	case FaultTerm:
		delay := sc.uniform(0, 300*time.Millisecond)
		return func(r *FaultRecord) { defer release(); d.faultTerm(ctx, r, s, delay) }
	case FaultStop:
		hold := cfg.Timing.Tolerance + sc.uniform(100*time.Millisecond, 800*time.Millisecond)
		return func(r *FaultRecord) { defer release(); d.faultStop(ctx, r, s, hold) }
	case FaultSuspend:
		hold := cfg.Timing.Tolerance + sc.uniform(100*time.Millisecond, 800*time.Millisecond)
		return func(r *FaultRecord) { defer release(); d.faultSuspend(ctx, r, s, hold) }
	case FaultCut:
		mode := []string{CutReset, CutStall}[sc.rng.IntN(2)]
		hold := sc.uniform(200*time.Millisecond, 2000*time.Millisecond)
		return func(r *FaultRecord) { defer release(); d.faultCut(ctx, r, s, mode, hold) }
	case FaultLatency:
		lat := sc.uniform(5*time.Millisecond, 40*time.Millisecond)
		hold := sc.uniform(500*time.Millisecond, 2000*time.Millisecond)
		return func(r *FaultRecord) { defer release(); d.faultLatency(ctx, r, s, lat, hold) }
	case FaultRestart:
		return func(r *FaultRecord) { defer release(); d.faultRestart(ctx, r, s) }
	case FaultClock:
		off := sc.uniform(10*time.Second, time.Hour)
		if sc.rng.IntN(2) == 0 {
			off = -off
		}
		hold := sc.uniform(300*time.Millisecond, 1500*time.Millisecond)
		return func(r *FaultRecord) { defer release(); d.faultClock(ctx, r, s, off, hold) }
	}
	release()
	return nil
}

// pickLock returns a random lock under no lock fault, marking it busy, or
// "". With held, only a lock that has a master running now qualifies.
func (sc *scheduler) pickLock(held bool) string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	var free []string
	running := sc.d.runningLocks()
	for k := range sc.d.cfg.Locks {
		l := lockName(k)
		if !sc.lockBusy[l] && (!held || running[l]) {
			free = append(free, l)
		}
	}
	if len(free) == 0 {
		return ""
	}
	l := free[sc.rng.IntN(len(free))]
	sc.lockBusy[l] = true
	return l
}

func (sc *scheduler) releaseLock(lock string) {
	sc.mu.Lock()
	delete(sc.lockBusy, lock)
	sc.mu.Unlock()
}

// Planned stops and faults of a combo.
const (
	comboDisable = "disable"
	comboTerm    = "sigterm"
	comboLoss    = "store-loss"
	comboCut     = "cut"
	comboPause   = "sigstop"
)

// planCombo picks a running master (preferring one whose job is slow to
// stop, so that the second fault lands while it stops) whose lock and
// instance are under no fault, and draws the planned stop and the fault.
func (sc *scheduler) planCombo(rec *FaultRecord) func(*FaultRecord) {
	d := sc.d
	cfg := d.cfg
	sc.mu.Lock()
	if len(sc.busy) >= cfg.Instances-1 {
		sc.mu.Unlock()
		return nil
	}
	var slow, any []Mastership
	for _, m := range d.runningMasterships() {
		if sc.busy[m.Index] || sc.lockBusy[m.Lock] {
			continue
		}
		any = append(any, m)
		if m.Plan >= int64(cfg.Timing.Tolerance/2) {
			slow = append(slow, m)
		}
	}
	pool := slow
	if len(pool) == 0 {
		pool = any
	}
	if len(pool) == 0 {
		sc.mu.Unlock()
		return nil
	}
	m := pool[sc.rng.IntN(len(pool))]
	sc.busy[m.Index] = true
	sc.lockBusy[m.Lock] = true
	sc.mu.Unlock()

	c := combo{
		lock:  m.Lock,
		first: []string{comboDisable, comboTerm}[sc.rng.IntN(2)],
		// The second fault lands 0 to 2 heartbeats into the stop.
		wait:    sc.uniform(0, 2*cfg.Timing.Heartbeat),
		restart: sc.uniform(0, 300*time.Millisecond),
		hold:    sc.uniform(200*time.Millisecond, 1200*time.Millisecond),
	}
	// A store-side loss is the fault the harness missed: half the combos.
	switch k := sc.rng.IntN(4); {
	case k < 2:
		c.second = comboLoss
	case k == 2 && cfg.applies(FaultCut):
		c.second = comboCut
	default:
		c.second = comboPause
	}
	// A deleted record would take the disable with it: under a disable the
	// loss is an expiry.
	c.lossMode = []string{LossDelete, LossExpire}[sc.rng.IntN(2)]
	if c.first == comboDisable {
		c.lossMode = LossExpire
	}
	c.cutMode = []string{CutReset, CutStall}[sc.rng.IntN(2)]
	c.cutHold = sc.uniform(200*time.Millisecond, 2000*time.Millisecond)
	c.pauseHold = cfg.Timing.Tolerance + sc.uniform(100*time.Millisecond, 800*time.Millisecond)
	rec.Target = fmt.Sprintf("%s on instance %d (token %d)", m.Lock, m.Index, m.Token)
	rec.Variant = c.first + "+" + c.second
	s := d.slots[m.Index]
	return func(r *FaultRecord) {
		defer func() {
			sc.mu.Lock()
			delete(sc.busy, m.Index)
			delete(sc.lockBusy, m.Lock)
			sc.mu.Unlock()
		}()
		d.faultCombo(sc.ctx, r, s, c)
	}
}

// pickTarget returns a random slot that is not under a fault, or -1.
// Half the time (always with master) it picks among the instances that run
// a job, when one is free: a fault on a master is the one that tests a
// handover.
func (sc *scheduler) pickTarget(master bool) int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.busy) >= sc.d.cfg.Instances-1 {
		return -1
	}
	var free, masters []int
	running := map[int]bool{}
	for _, m := range sc.d.runningMasterships() {
		running[m.Index] = true
	}
	for i := range sc.d.cfg.Instances {
		if !sc.busy[i] {
			free = append(free, i)
			if running[i] {
				masters = append(masters, i)
			}
		}
	}
	if len(masters) > 0 && (master || sc.rng.IntN(2) == 0) {
		free = masters
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
	d.restart(ctx, r, s, at, delay, "killed")
}

// variantKillSuccessor is the runner-mode SIGKILL that also kills the
// lock's next master as soon as its command starts.
const variantKillSuccessor = "sigkill+successor"

// faultKillSuccessor SIGKILLs runner s, which runs a lock's command, then
// the runner of that lock's next master the moment the driver hears that
// its command started (its first message; it polls every millisecond for
// up to three leases), when that runner is under no other fault. A runner
// killed in the first milliseconds of its command is the case where its
// supervisor must already hold its last will. Both are then restarted.
func (d *driver) faultKillSuccessor(ctx context.Context, sc *scheduler, r *FaultRecord, s *slot, delay time.Duration) {
	lock, token := "", int64(0)
	for _, m := range d.runningMasterships() {
		if m.Index == s.index {
			lock, token = m.Lock, m.Token
			break
		}
	}
	at, err := d.kill(s)
	if err != nil {
		r.Err = err.Error()
		return
	}
	next, started := -1, int64(0)
	for limit := Mono() + int64(3*d.cfg.Timing.Tolerance); lock != "" && next < 0 && Mono() < limit && ctx.Err() == nil; {
		for _, m := range d.runningMasterships() {
			if m.Lock == lock && m.Token > token && m.Index != s.index && sc.claim(m.Index) {
				next, started = m.Index, m.Start
				break
			}
		}
		if next < 0 {
			time.Sleep(time.Millisecond)
		}
	}
	var at2 int64
	if next >= 0 {
		defer sc.unclaim(next)
		if at2, err = d.kill(d.slots[next]); err != nil {
			r.Err = err.Error()
		}
	}
	d.restart(ctx, r, s, at, delay, "killed")
	switch {
	case next < 0:
		r.Detail = "no next master to kill; " + r.Detail
		return
	case err != nil:
		return
	}
	detail := r.Detail
	d.restart(ctx, r, d.slots[next], at2, 0, "killed")
	r.Detail = fmt.Sprintf("%s; instance %d killed %v after its command's first message: %s", detail, next, dur(at2-started).Round(time.Microsecond), r.Detail)
}

// claim marks slot i as under a fault, if it is free and another slot
// stays free; unclaim frees it.
func (sc *scheduler) claim(i int) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.busy[i] || len(sc.busy) >= sc.d.cfg.Instances-1 {
		return false
	}
	sc.busy[i] = true
	return true
}

func (sc *scheduler) unclaim(i int) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	delete(sc.busy, i)
}

// faultTerm shuts an instance down gracefully (SIGTERM, which the instance,
// like any application, turns into the end of Run), waits for it to exit,
// and restarts it.
func (d *driver) faultTerm(ctx context.Context, r *FaultRecord, s *slot, delay time.Duration) {
	at, err := d.terminate(s)
	if err != nil {
		r.Err = err.Error()
		return
	}
	took := d.waitExit(s, at)
	d.restart(ctx, r, s, at, delay, "sigterm")
	r.Detail = fmt.Sprintf("exited %v after SIGTERM; %s", took, r.Detail)
}

// restart starts slot s again after delay and records it as down from at
// until it is ready.
func (d *driver) restart(ctx context.Context, r *FaultRecord, s *slot, at int64, delay time.Duration, cause string) {
	sleepCtx(ctx, delay)
	ready := Mono()
	defer func() { d.down(Window{Index: s.index, From: at, To: ready, Cause: cause}) }()
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

// terminate sends SIGTERM to slot s: its exit is expected.
func (d *driver) terminate(s *slot) (int64, error) {
	s.mu.Lock()
	pid := s.pid
	s.expected = true
	s.terminated = true
	s.mu.Unlock()
	at := Mono()
	return at, syscall.Kill(pid, syscall.SIGTERM)
}

// waitExit waits for the instance SIGTERMed at at to exit. One that does
// not exit within its shutdown timeout and a lease is reported and
// killed.
func (d *driver) waitExit(s *slot, at int64) time.Duration {
	s.mu.Lock()
	pid, exited := s.pid, s.exited
	s.mu.Unlock()
	limit := d.cfg.Timing.ShutdownTimeout + d.cfg.Timing.Tolerance + 5*time.Second
	select {
	case <-exited:
	case <-time.After(limit):
		d.problem(VCrash, "", "instance %d (pid %d) did not exit within %v of SIGTERM; killing it", s.index, pid, limit)
		_ = syscall.Kill(pid, syscall.SIGCONT)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
	return dur(Mono() - at)
}

func (d *driver) faultStop(ctx context.Context, r *FaultRecord, s *slot, hold time.Duration) {
	detail, err := d.pause(ctx, s, hold)
	r.Detail = detail
	if err != nil {
		r.Err = err.Error()
	}
}

// pause SIGSTOPs slot s's process for hold, then SIGCONTs it, and records
// the window.
func (d *driver) pause(ctx context.Context, s *slot, hold time.Duration) (string, error) {
	w, lockHeld, err := d.stopFor(ctx, s, syscall.SIGSTOP, "stop", hold)
	if w.Index < 0 {
		return "", err
	}
	d.mu.Lock()
	d.tl.Stopped = append(d.tl.Stopped, w)
	d.mu.Unlock()
	detail := fmt.Sprintf("stopped %v", dur(w.To-w.From))
	if lockHeld {
		// Every instance's store calls waited for the paused writer: the
		// store was unavailable to all of them.
		detail += "; it held SQLite's write lock, blocking every instance's store calls"
		d.mu.Lock()
		d.tl.StoreBlocked = append(d.tl.StoreBlocked, w)
		d.mu.Unlock()
		if d.cfg.StrictSQLiteLock {
			d.problem(VPausedWriter, "", "instance %d was SIGSTOPped from %s to %s holding SQLite's write lock: every instance's store calls blocked for %v",
				s.index, ts(w.From), ts(w.To), dur(w.To-w.From))
		}
		for _, o := range d.slots {
			if o != s {
				d.down(Window{Index: o.index, From: w.From, To: w.To, Cause: "store-locked"})
			}
		}
	}
	return detail, err
}

// faultSuspend suspends slot s's runner as a terminal's Ctrl-Z does
// (SIGTSTP), waits hold, and SIGCONTs it. The runner stops its command
// with itself, and must not stay stopped holding SQLite's write lock
// (VSuspendedWriter); its command must not run beside the next master's
// (checkOverlaps).
func (d *driver) faultSuspend(ctx context.Context, r *FaultRecord, s *slot, hold time.Duration) {
	w, lockHeld, err := d.stopFor(ctx, s, syscall.SIGTSTP, "suspend", hold)
	if err != nil {
		r.Err = err.Error()
	}
	if w.Index < 0 {
		return
	}
	d.mu.Lock()
	d.tl.Suspended = append(d.tl.Suspended, w)
	d.mu.Unlock()
	r.Detail = fmt.Sprintf("suspended %v", dur(w.To-w.From))
	if lockHeld {
		d.problem(VSuspendedWriter, "", "instance %d was suspended (SIGTSTP) from %s to %s holding SQLite's write lock",
			s.index, ts(w.From), ts(w.To))
	}
}

// stopFor sends sig (SIGSTOP, or a runner's SIGTSTP) to slot s's process,
// waits hold, notes whether the process then holds SQLite's write lock (a
// lock it holds after a while stopped, it has held since it stopped), and
// SIGCONTs it. It returns the window, recorded as down with cause; its
// Index is -1 when the signal could not be sent.
func (d *driver) stopFor(ctx context.Context, s *slot, sig syscall.Signal, cause string, hold time.Duration) (w Window, lockHeld bool, err error) {
	s.mu.Lock()
	pid := s.pid
	s.mu.Unlock()
	from := Mono()
	if err := syscall.Kill(pid, sig); err != nil {
		return Window{Index: -1}, false, err
	}
	sleepCtx(ctx, hold)
	if d.spec.kind == kindSQLite {
		h, ok := sqlitelock.Writer(d.spec.path)
		lockHeld = ok && h.PID == pid
	}
	err = syscall.Kill(pid, syscall.SIGCONT)
	w = Window{Index: s.index, From: from, To: Mono(), Cause: cause}
	d.down(w)
	return w, lockHeld, err
}

func (d *driver) faultCut(ctx context.Context, r *FaultRecord, s *slot, mode string, hold time.Duration) {
	detail, err := d.cut(ctx, s, mode, hold)
	r.Detail = detail
	if err != nil {
		r.Err = err.Error()
	}
}

// cut cuts slot s from the store for hold and records the window. An
// instance that exits meanwhile (SIGTERM) ends the cut early without error.
func (d *driver) cut(ctx context.Context, s *slot, mode string, hold time.Duration) (string, error) {
	var from, to int64
	var detail string
	if d.spec.proxied() {
		p := d.proxies[s.index]
		p.Cut(mode)
		from = Mono()
		sleepCtx(ctx, hold)
		to = Mono()
		p.Restore()
		detail = fmt.Sprintf("proxy %s for %v", mode, hold)
	} else {
		// No network between an instance and its SQLite file: fail or hang
		// every store call of the instance instead.
		smode := map[string]string{CutReset: "fail", CutStall: "hang"}[mode]
		a, err := d.control(s, Message{Type: msgOutage, Mode: smode})
		if errors.Is(err, errExited) {
			return "instance exited before the cut", nil
		}
		if err != nil {
			return "", err
		}
		from = a.T
		sleepCtx(ctx, hold)
		b, err := d.control(s, Message{Type: msgOutage})
		to = Mono()
		switch {
		case errors.Is(err, errExited):
		case err != nil:
			return "", err
		default:
			to = b.T
		}
		detail = fmt.Sprintf("store outage (%s) for %v", smode, hold)
	}
	d.down(Window{Index: s.index, From: from, To: to, Cause: "cut"})
	return detail, nil
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
	var from int64
	if d.spec.kind == kindPostgres {
		d.storeMu.Lock()
		from = Mono() // the window starts with the restart, not with a wait behind a loss
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := terminateBackends(cctx, d.pg, d.appName(s.index))
		cancel()
		d.storeMu.Unlock()
		if err != nil {
			r.Err = err.Error()
			return
		}
		r.Detail = fmt.Sprintf("pg_terminate_backend ended %d backends", n)
	} else {
		from = Mono()
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
	c, ch, err := d.disable(ctx, lock)
	if err != nil {
		r.Err = err.Error()
		return
	}
	sleepCtx(ctx, hold)
	if err := d.enable(&c); err != nil {
		r.Err = err.Error()
	}
	r.Detail = fmt.Sprintf("disabled for %v (revoked token %d, held=%v)", hold, c.Token, ch.State.Held())
}

// disable disables lock through the store.
func (d *driver) disable(ctx context.Context, lock string) (ControlWindow, store.ControlChange, error) {
	c := ControlWindow{Lock: lock}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c.DisableCalled = Mono()
	ch, err := retryUnavailable(cctx, func(ctx context.Context) (store.ControlChange, error) {
		return d.st.Disable(ctx, lock, "chaos fault", "masterjob-chaos")
	})
	c.DisableReturned = Mono()
	if err != nil {
		return c, ch, fmt.Errorf("disable: %w", err)
	}
	c.Token = ch.State.Token
	return c, ch, nil
}

// enable enables c's lock again and records the control window.
func (d *driver) enable(c *ControlWindow) error {
	ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ecancel()
	c.EnableCalled = Mono()
	_, err := retryUnavailable(ectx, func(ctx context.Context) (store.ControlChange, error) {
		return d.st.Enable(ctx, c.Lock, "masterjob-chaos")
	})
	c.EnableReturned = Mono()
	if err != nil {
		c.EnableReturned = 0
		err = fmt.Errorf("enable: %w", err)
	}
	d.mu.Lock()
	d.tl.Controls = append(d.tl.Controls, *c)
	d.mu.Unlock()
	d.record("control", *c)
	return err
}

func (d *driver) faultLoss(r *FaultRecord, lock, mode string) {
	l, err := d.storeLoss(lock, mode)
	if err != nil {
		r.Err = err.Error()
		return
	}
	r.Detail = l.describe()
}

// storeLoss ends lock's current lease in the store behind its holder's
// back, as an operator or a failover to a replica that missed the last
// renewals would (see endLease), and records it.
func (d *driver) storeLoss(lock, mode string) (StoreLoss, error) {
	// d.pg, and no store-restart meanwhile. Called, and the call's
	// deadline, start once the mutex is held: a wait behind a restart is
	// no part of the loss, and a Called before it would excuse, as lost in
	// the store (lostInStore), what a holder did while its lease still
	// stood.
	d.storeMu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := StoreLoss{Lock: lock, Mode: mode}
	l.Called = Mono()
	var err error
	if d.spec.engine != nil {
		l.Token, l.Holder, err = d.spec.endLease(ctx, d.ns, lock, mode)
	} else {
		l.Token, l.Holder, err = endLease(ctx, d.spec.kind, d.pg, d.lossDB, d.ns, lock, mode)
	}
	d.storeMu.Unlock()
	l.Returned = Mono()
	if err != nil {
		return l, fmt.Errorf("store-side loss (%s) of %s: %w", mode, lock, err)
	}
	d.mu.Lock()
	d.tl.Losses = append(d.tl.Losses, l)
	d.mu.Unlock()
	d.record("loss", l)
	return l, nil
}

// combo is the plan of one combination fault (see planCombo).
type combo struct {
	lock          string
	first, second string
	wait          time.Duration // from the planned stop to the fault
	restart       time.Duration // sigterm: from the exit to the restart
	hold          time.Duration // disable: how long the lock stays disabled
	lossMode      string
	cutMode       string
	cutHold       time.Duration
	pauseHold     time.Duration
}

// faultCombo stops a master in a planned way (disable of its lock or
// SIGTERM of its instance) and, while its job stops, ends its lease in the
// store, cuts it from the store or SIGSTOPs it; then enables the lock or
// restarts the instance.
func (d *driver) faultCombo(ctx context.Context, r *FaultRecord, s *slot, c combo) {
	var details []string
	var cw ControlWindow
	var termAt int64
	began := Mono()
	switch c.first {
	case comboDisable:
		var err error
		if cw, _, err = d.disable(ctx, c.lock); err != nil {
			r.Err = err.Error()
			return
		}
		details = append(details, fmt.Sprintf("disabled %s (revoked token %d)", c.lock, cw.Token))
	case comboTerm:
		var err error
		if termAt, err = d.terminate(s); err != nil {
			r.Err = err.Error()
			return
		}
		details = append(details, "SIGTERM")
	}
	sleepCtx(ctx, c.wait)
	details = append(details, fmt.Sprintf("after %v", c.wait))
	var err error
	switch c.second {
	case comboLoss:
		var l StoreLoss
		if l, err = d.storeLoss(c.lock, c.lossMode); err == nil {
			details = append(details, l.describe())
		}
	case comboCut:
		var det string
		det, err = d.cut(ctx, s, c.cutMode, c.cutHold)
		details = append(details, det)
	case comboPause:
		var det string
		det, err = d.pause(ctx, s, c.pauseHold)
		if errors.Is(err, syscall.ESRCH) {
			det, err = "instance exited before the SIGSTOP", nil
		}
		details = append(details, det)
	}
	if err != nil {
		r.Err = err.Error()
	}
	switch c.first {
	case comboDisable:
		sleepCtx(ctx, c.hold-dur(Mono()-began))
		if err := d.enable(&cw); err != nil && r.Err == "" {
			r.Err = err.Error()
		}
		details = append(details, "enabled")
	case comboTerm:
		took := d.waitExit(s, termAt)
		details = append(details, fmt.Sprintf("exited %v after SIGTERM", took))
		d.restart(ctx, r, s, termAt, c.restart, "sigterm")
		details = append(details, r.Detail)
	}
	r.Detail = strings.Join(details, "; ")
}
