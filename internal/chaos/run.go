//go:build linux

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Run runs one chaos run: it starts cfg.Instances instance processes on the
// store, injects cfg.Faults faults, shuts everything down, checks the
// timeline and returns the report. An error means the run itself could not
// be carried out (bad configuration, store unreachable); broken promises
// are in Report.Violations. Run kills every process it started and drops
// the tables or schema it created before it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	if len(cfg.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
		cfg.Command = []string{exe}
	}
	spec, _ := parseStoreURL(cfg.StoreURL)
	runID := newRunID()
	d := &driver{
		cfg: cfg, spec: spec, runID: runID, ns: namespace(runID), dir: cfg.Dir,
		sink: NewSink(), open: map[mkey]*Mastership{},
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	began := time.Now()
	if err := d.setup(ctx); err != nil {
		d.cleanup(cfg.Dir == "")
		return nil, fmt.Errorf("chaos: setup: %w", err)
	}
	d.logf("run %s: %s, %d instances, %d locks, %d faults, seed %d, work dir %s",
		runID, redactURL(cfg.StoreURL), cfg.Instances, cfg.Locks, cfg.Faults, cfg.Seed, d.dir)
	rep, err := d.run(ctx)
	keep := cfg.Keep || cfg.Dir != "" || err != nil || (rep != nil && len(rep.Violations) > 0)
	d.cleanup(!keep)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w (work dir %s)", err, d.dir)
	}
	rep.Duration = time.Since(began)
	if keep {
		rep.Dir = d.dir
	}
	return rep, nil
}

func (d *driver) run(ctx context.Context) (*Report, error) {
	cfg := d.cfg
	for _, s := range d.slots {
		if err := d.start(s); err != nil {
			return nil, err
		}
	}
	var from int64
	for _, s := range d.slots {
		t, err := d.waitReady(ctx, s, 30*time.Second)
		if err != nil {
			return nil, err
		}
		from = max(from, t)
	}
	d.mu.Lock()
	d.tl.From = from
	d.mu.Unlock()
	d.logf("all %d instances ready; injecting faults", cfg.Instances)

	sc := &scheduler{d: d, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		busy: map[int]bool{}, lockBusy: map[string]bool{}}
	sc.run(ctx)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run interrupted after %d faults: %w", len(d.faults), err)
	}
	d.logf("faults done; settling for %v", cfg.Settle)
	sleepCtx(ctx, cfg.Settle)
	d.mu.Lock()
	d.tl.To = Mono()
	d.stopping = true
	d.mu.Unlock()

	d.shutdown()
	d.bg.Wait()
	d.checkLeftovers()
	d.checkRaceReports()

	d.mu.Lock()
	// A process that did not run for a while (its own pause detector saw a
	// gap: the host starved it) was not healthy meanwhile.
	for _, w := range d.tl.Resumed {
		d.tl.Down = append(d.tl.Down, Window{Index: w.Index, From: w.From, To: w.To, Cause: "stalled"})
	}
	d.tl.Instances = cfg.Instances
	for k := range cfg.Locks {
		d.tl.Locks = append(d.tl.Locks, lockName(k))
	}
	for _, ms := range d.open { // cannot happen: every process was reaped
		d.tl.Problems = append(d.tl.Problems, Violation{Kind: VHarness, Lock: ms.Lock,
			Detail: fmt.Sprintf("mastership of instance %d gen %d token %d never closed", ms.Index, ms.Gen, ms.Token)})
	}
	d.tl.Writes = d.sink.Log()
	if cfg.Runner {
		wills, err := readWills(d.willsPath())
		if err != nil {
			d.tl.Problems = append(d.tl.Problems, Violation{Kind: VHarness, Detail: "reading the last wills' records: " + err.Error()})
		}
		d.tl.Wills = wills
	}
	tl := d.tl
	writeJSONLines(filepath.Join(d.dir, "sink.jsonl"), tl.Writes)
	writeJSONLines(filepath.Join(d.dir, "masterships.jsonl"), tl.Masterships)
	faults := append([]FaultRecord(nil), d.faults...)
	d.mu.Unlock()

	f := Check(&tl, Limits{
		Heartbeat: cfg.Timing.Heartbeat, Tolerance: cfg.Timing.Tolerance, Check: cfg.Timing.Check, GapBound: cfg.gapBound(),
		StopGrace: cfg.StopGrace, DisableSlack: cfg.DisableSlack, LossSlack: cfg.LossSlack,
	})
	for _, v := range f.Violations {
		d.record("violation", v)
	}
	return newReport(cfg, d.runID, &tl, faults, f), nil
}

// shutdown asks every instance to stop, waits for them, and kills any that
// does not exit.
func (d *driver) shutdown() {
	for _, s := range d.slots {
		s.mu.Lock()
		s.expected = true
		s.mu.Unlock()
		if _, err := d.control(s, Message{Type: msgShutdown}); err != nil {
			d.logf("instance %d: shutdown: %v", s.index, err)
		}
	}
	limit := time.After(d.cfg.Timing.Tolerance + 10*time.Second)
	for _, s := range d.slots {
		s.mu.Lock()
		exited, pid := s.exited, s.pid
		s.mu.Unlock()
		select {
		case <-exited:
		case <-limit:
			d.problem(VLeak, "", "instance %d (pid %d) did not exit after shutdown; killing it", s.index, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
	}
}

// checkLeftovers looks for leases still held in the store and processes of
// this run still alive after every instance exited.
func (d *driver) checkLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var names []string
	for k := range d.cfg.Locks {
		names = append(names, lockName(k))
	}
	states, err := d.st.Locks(ctx, names...)
	if err != nil {
		d.problem(VHarness, "", "reading the locks after shutdown: %v", err)
	}
	type ended struct{ pid, index int } // an instance shut down at the end
	var last []ended
	for _, s := range d.slots {
		s.mu.Lock()
		last = append(last, ended{s.pid, s.index})
		s.mu.Unlock()
	}
	for _, s := range states {
		// Only an instance shut down at the end had to release: one killed
		// earlier leaves its lease to expire, which a store restart can
		// postpone (etcd renews every lease when it restarts).
		i := slices.IndexFunc(last, func(e ended) bool { return heldBy(s.Holder, e.pid) })
		if !s.Held() || i < 0 {
			continue
		}
		if d.failingAtShutdown(last[i].index) {
			// Its store calls were failing as it shut down: its release
			// failed too, and the lease expires instead, as promised.
			d.mu.Lock()
			d.tl.LeftToExpire++
			d.mu.Unlock()
			continue
		}
		d.problem(VLeak, s.Lock, "lease of token %d still held by %s (%v left) after every instance shut down (not released)", s.Token, s.Holder, s.TTL)
	}
	for _, p := range findProcesses(envRun, d.runID) {
		d.problem(VLeak, "", "process %d (%s) of this run is still alive after shutdown; killing it", p.pid, p.cmd)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	// A runner's child ends its mastership when its connection closes.
	done := make(chan struct{})
	go func() { d.children.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.problem(VHarness, "", "runner children's connections still open 5s after shutdown")
	}
}

// proc is a process found by findProcesses.
type proc struct {
	pid int
	cmd string // its command line, for reports
}

// findProcesses returns the live processes (other than this one) whose
// environment has key=value.
func findProcesses(key, value string) []proc {
	entries, _ := os.ReadDir("/proc")
	tag := []byte(key + "=" + value)
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, tag) {
				// A zombie has no environment; a live process does.
				cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				out = append(out, proc{pid: pid, cmd: strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))})
				break
			}
		}
	}
	return out
}

// writeJSONLines writes one JSON document per element, best effort (the
// files are evidence for a kept work directory).
func writeJSONLines[T any](path string, items []T) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, it := range items {
		_ = enc.Encode(it)
	}
	_ = w.Flush()
}

// errUsage marks command-line errors.
var errUsage = errors.New("usage")

// failingAtShutdown reports whether instance i's own store calls were
// failing (or its store unreachable or degraded by a fault) when the run
// ended, until the instance exited.
func (d *driver) failingAtShutdown(i int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ws := range [][]Window{d.tl.Unreachable, d.tl.Down, d.tl.Degraded} {
		for _, w := range ws {
			if w.Index == i && w.To >= d.tl.To {
				return true
			}
		}
	}
	return false
}

// heldBy reports whether holder, an instance id, is that of process pid:
// the ids of the harness's instances ("i1-g2-PID") and of runners
// ("HOST-PID-RANDOM") carry the pid as a field between dashes.
func heldBy(holder string, pid int) bool {
	return slices.Contains(strings.Split(holder, "-"), strconv.Itoa(pid))
}
