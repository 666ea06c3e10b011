//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/bench/internal/probe"
)

// Names of the series the process scenarios report.
const (
	SeriesFailover     = "SIGKILL of the master's runner → next child starts"
	SeriesOverFloor    = "failover − lease (the floor)"
	SeriesAfterExpiry  = "lease expiry in the store → next child starts"
	SeriesHandoff      = "SIGTERM of the master's runner → next child starts"
	SeriesHandoffStop  = "SIGTERM → old child exited"
	SeriesHandoffGap   = "old child exited → next child starts"
	SeriesDisable      = "Disable returned → child exited"
	SeriesEnable       = "Enable returned → a child starts"
	SeriesSigcont      = "SIGCONT → old child exited"
	SeriesStopTakeover = "SIGSTOP → other runner's child starts"
	SeriesExec         = "exec of the child → its first instruction (no masterjob)"
	SeriesDisableCall  = "Disable call (store round trip)"
)

// Scenarios of the two crash failovers.
const (
	ScenarioCrash     = "crash failover"
	ScenarioTreeCrash = "crash failover, whole tree"
)

// CrashFailover SIGKILLs the master's runner trials times, on a cluster of
// three runners with lease (tolerance) lease, and measures until the next
// child starts. A new runner replaces each killed one. masterjob's runner
// leaves a last will to its command's supervisor, which releases the lease
// once the command is gone: TreeCrashFailover measures the lease's expiry.
func (e *Env) CrashFailover(ctx context.Context, lease time.Duration, trials int) (*Result, error) {
	return e.crashFailover(ctx, lease, trials, false)
}

// TreeCrashFailover is CrashFailover with the master's runner and every
// process it started killed at once (the runner is stopped first, so that
// it sees nothing die): what the death of its host looks like to the store,
// and to the other runners. The next master waits for the lease's expiry.
func (e *Env) TreeCrashFailover(ctx context.Context, lease time.Duration, trials int) (*Result, error) {
	return e.crashFailover(ctx, lease, trials, true)
}

func (e *Env) crashFailover(ctx context.Context, lease time.Duration, trials int, tree bool) (*Result, error) {
	timing := LeaseTiming(lease)
	name, scenario := "failover-", ScenarioCrash
	if tree {
		name, scenario = "treefailover-", ScenarioTreeCrash
	}
	s, err := e.startSession(ctx, name+lease.String(), timing, 3)
	if err != nil {
		return nil, err
	}
	defer s.close()
	host := markHost()
	res := &Result{Store: e.Backend.Kind, Scenario: scenario, Timing: timing.String(), Lease: lease}
	var failover, afterExpiry []time.Duration
	for i := range trials {
		m, err := s.settledMaster(ctx)
		if err != nil {
			return nil, err
		}
		t0 := probe.Mono()
		if tree {
			err = killTree(m.Pid)
		} else {
			err = m.Signal(syscall.SIGKILL)
		}
		if err != nil {
			return nil, err
		}
		if err := m.Wait(5 * time.Second); err != nil {
			return nil, err
		}
		// The dead runner's lease: its expiry is the floor of any failover.
		var expires time.Time
		if s.st == nil || isEtcd(e.Backend.Kind) {
			// etcd's election has no store view of the lease; etcd's store
			// knows another instance's expiry only to the second.
		} else if states, err := s.st.Locks(ctx, s.lock); err == nil && len(states) == 1 && states[0].Token == s.cur.Token {
			expires = states[0].ExpiresAt
		}
		next, _, err := s.takeOver(2*lease+10*time.Second, false)
		if err != nil {
			return nil, fmt.Errorf("crash failover trial %d: %w", i+1, err)
		}
		failover = append(failover, next.Mono-t0)
		if !tree && e.Backend.Kind != EtcdElection && willReleased(m.log, 3*time.Second) {
			res.Wills++
		}
		if s.c.traceFile != "" {
			steps, err := handoffSteps(s.c.traceFile, s.lock, m.Pid, t0, next.Mono)
			if err != nil {
				return nil, fmt.Errorf("crash failover trial %d: trace: %w", i+1, err)
			}
			res.addSteps(steps)
		}
		if !expires.IsZero() {
			afterExpiry = append(afterExpiry, next.RealTime().Sub(expires))
		}
		e.logf("  %s failover %d/%d: %v", e.Backend.Kind, i+1, trials, (next.Mono - t0).Round(time.Millisecond))
		s.advance(next)
		if _, err := s.c.StartRunner(); err != nil {
			return nil, err
		}
	}
	res.Trials, res.Host = trials, host.since()
	if !tree && e.Backend.Kind != EtcdElection {
		res.Notes = append(res.Notes, fmt.Sprintf("the killed runner's last will released its lease in %d of %d trials", res.Wills, trials))
	}
	res.add(SeriesFailover, failover)
	res.add(SeriesOverFloor, shift(failover, lease))
	res.add(SeriesAfterExpiry, afterExpiry)
	return res, nil
}

// Handoff SIGTERMs the master's runner trials times, on a cluster of three
// runners, and measures until the next child starts.
func (e *Env) Handoff(ctx context.Context, lease time.Duration, trials int) (*Result, error) {
	timing := LeaseTiming(lease)
	s, err := e.startSession(ctx, "handoff-"+lease.String(), timing, 3)
	if err != nil {
		return nil, err
	}
	defer s.close()
	host := markHost()
	res := &Result{Store: e.Backend.Kind, Scenario: "graceful handoff", Timing: timing.String(), Lease: lease}
	var handoff, stop, gap []time.Duration
	for i := range trials {
		m, err := s.settledMaster(ctx)
		if err != nil {
			return nil, err
		}
		t0 := probe.Mono()
		if err := m.Signal(syscall.SIGTERM); err != nil {
			return nil, err
		}
		next, gone, err := s.takeOver(2*lease+10*time.Second, false)
		if err != nil {
			return nil, fmt.Errorf("handoff trial %d: %w", i+1, err)
		}
		if next.Mono < t0 {
			return nil, fmt.Errorf("handoff trial %d: child %d started %v before the SIGTERM: the mastership moved with no fault (logs in %s)",
				i+1, next.Pid, t0-next.Mono, s.c.dir)
		}
		if err := m.Wait(10 * time.Second); err != nil {
			return nil, err
		}
		if code := m.cmd.ProcessState.ExitCode(); code != 0 {
			return nil, fmt.Errorf("handoff trial %d: runner exited with %d after SIGTERM (log %s)", i+1, code, m.log)
		}
		handoff = append(handoff, next.Mono-t0)
		stop = append(stop, gone-t0)
		gap = append(gap, next.Mono-gone)
		if s.c.traceFile != "" {
			steps, err := handoffSteps(s.c.traceFile, s.lock, m.Pid, t0, next.Mono)
			if err != nil {
				return nil, fmt.Errorf("handoff trial %d: trace: %w", i+1, err)
			}
			res.addSteps(steps)
		}
		e.logf("  %s handoff %d/%d: %v", e.Backend.Kind, i+1, trials, (next.Mono - t0).Round(time.Microsecond))
		s.advance(next)
		if _, err := s.c.StartRunner(); err != nil {
			return nil, err
		}
	}
	res.Trials, res.Host = trials, host.since()
	res.add(SeriesHandoff, handoff)
	res.add(SeriesHandoffStop, stop)
	res.add(SeriesHandoffGap, gap)
	return res, nil
}

// Control disables the lock through the store API and measures until the
// master's child exits, then enables it and measures until a child starts,
// trials times, on a cluster of three runners with timing.
func (e *Env) Control(ctx context.Context, timing Timing, trials int) (*Result, error) {
	s, err := e.startSession(ctx, "control", timing, 3)
	if err != nil {
		return nil, err
	}
	defer s.close()
	host := markHost()
	res := &Result{Store: e.Backend.Kind, Scenario: "disable / enable", Timing: timing.String(), Lease: timing.Tolerance}
	var disable, enable, call []time.Duration
	for i := range trials {
		s.settle(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c0 := probe.Mono()
		if _, err := s.st.Disable(ctx, s.lock, "benchmark", "masterjob-bench"); err != nil {
			return nil, err
		}
		t0 := probe.Mono()
		gone, err := s.cur.exit.Wait(timing.Heartbeat + timing.Tolerance + 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("control trial %d: the child still runs after disable (logs in %s)", i+1, s.c.dir)
		}
		// Let the master release, and every follower see the disabled lock:
		// a follower that last saw the lease sleeps until it expires, then
		// checks, sees the lock disabled and sleeps a check interval. Enable
		// is measured from that steady state, at a random phase of the
		// followers' check interval (without a push, that phase is what
		// enable waits for).
		sleep(ctx, timing.Tolerance+500*time.Millisecond+rand.N(max(timing.Check, time.Millisecond)))
		if extra := s.c.PendingStarts(); len(extra) > 0 {
			return nil, fmt.Errorf("control trial %d: a child (token %d) started while the lock was disabled", i+1, extra[0].Token)
		}
		if _, err := s.st.Enable(ctx, s.lock, "masterjob-bench"); err != nil {
			return nil, err
		}
		t1 := probe.Mono()
		next, err := s.c.NextStart(timing.Check + timing.Tolerance + 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("control trial %d: after enable: %w (logs in %s)", i+1, err, s.c.dir)
		}
		if next.Token <= s.cur.Token {
			return nil, fmt.Errorf("control trial %d: token %d after enable, not above %d", i+1, next.Token, s.cur.Token)
		}
		call = append(call, t0-c0)
		disable = append(disable, gone-t0)
		enable = append(enable, next.Mono-t1)
		e.logf("  %s disable %d/%d: %v, enable: %v", e.Backend.Kind, i+1, trials,
			(gone - t0).Round(time.Microsecond), (next.Mono - t1).Round(time.Microsecond))
		s.advance(next)
	}
	res.Trials, res.Host = trials, host.since()
	res.add(SeriesDisable, disable)
	res.add(SeriesEnable, enable)
	res.add(SeriesDisableCall, call)
	return res, nil
}

// SigStop freezes the master's runner and its child's process group with
// SIGSTOP for pause (longer than the lease), waits for the other runner to
// take over, sends SIGCONT, and measures until the old child is gone,
// trials times, on a cluster of two runners.
//
// The resumed runner stays, as a follower: the next trial freezes the new
// master and the resumed one must take over within the lease. Before commit
// 360fd32 a demoted master did not check again for a whole check interval
// (loop_bench_regression_test.go in the root package), and this failed at
// the second trial. With replace, the resumed runner is replaced by a fresh
// one instead.
func (e *Env) SigStop(ctx context.Context, lease, pause time.Duration, trials int, replace bool) (*Result, error) {
	timing := LeaseTiming(lease)
	s, err := e.startSession(ctx, "sigstop-"+lease.String(), timing, 2)
	if err != nil {
		return nil, err
	}
	defer s.close()
	host := markHost()
	res := &Result{Store: e.Backend.Kind, Scenario: "SIGSTOP / SIGCONT of the master", Timing: timing.String() + ", paused " + pause.String(), Lease: lease}
	if replace {
		res.Notes = append(res.Notes, "the resumed runner is replaced by a fresh follower after each trial")
	}
	var stopped, takeover []time.Duration
	inWrite := 0 // trials that froze the runner inside an SQLite write
	for i := 0; i < trials; i++ {
		m, err := s.settledMaster(ctx)
		if err != nil {
			return nil, err
		}
		old := s.cur
		tStop := probe.Mono()
		_ = m.Signal(syscall.SIGSTOP)
		_ = syscall.Kill(-old.Pid, syscall.SIGSTOP)
		if s.frozenInWrite(m, 2*lease+time.Second) {
			// SQLite's write lock is held by the frozen runner: no
			// instance can write, so none can take over, until it
			// resumes (store/sqlite's package doc). Not a sample of
			// the scenario: resume it and freeze again.
			_ = m.Signal(syscall.SIGCONT)
			_ = syscall.Kill(-old.Pid, syscall.SIGCONT)
			inWrite++
			e.logf("  %s sigstop %d/%d: the runner froze inside a write; resumed, trial repeated", e.Backend.Kind, i+1, trials)
			if inWrite > 3*trials {
				return nil, fmt.Errorf("sigstop: the runner froze inside an SQLite write %d times", inWrite)
			}
			// Frozen for longer than the lease, the resumed runner has
			// lost it: it stops its child, and the other takes over.
			if _, err := old.exit.Wait(2*lease + 5*time.Second); err == nil {
				next, err := s.c.NextStart(2*lease + 10*time.Second)
				if err != nil {
					return nil, fmt.Errorf("sigstop trial %d: after a freeze inside a write: %w (logs in %s)%s", i+1, err, s.c.dir, s.c.LogTails(30))
				}
				s.advance(next)
			}
			i--
			continue
		}
		next, _, err := s.takeOver(2*lease+10*time.Second, true)
		if err != nil {
			_ = m.Signal(syscall.SIGCONT)
			_ = syscall.Kill(-old.Pid, syscall.SIGCONT)
			return nil, fmt.Errorf("sigstop trial %d: %w", i+1, err)
		}
		if left := tStop + pause - probe.Mono(); left > 0 {
			sleep(ctx, left)
		}
		t0 := probe.Mono()
		_ = m.Signal(syscall.SIGCONT)
		_ = syscall.Kill(-old.Pid, syscall.SIGCONT)
		gone, err := old.exit.Wait(10 * time.Second)
		if err != nil {
			return nil, fmt.Errorf("sigstop trial %d: the old child %d still runs 10s after SIGCONT (log %s)", i+1, old.Pid, m.log)
		}
		stopped = append(stopped, gone-t0)
		takeover = append(takeover, next.Mono-tStop)
		e.logf("  %s sigstop %d/%d: gone %v after SIGCONT", e.Backend.Kind, i+1, trials, (gone - t0).Round(time.Microsecond))
		s.advance(next)
		if m.Exited() {
			return nil, fmt.Errorf("sigstop trial %d: the runner exited after SIGCONT (log %s)", i+1, m.log)
		}
		if replace {
			if err := m.Signal(syscall.SIGTERM); err != nil {
				return nil, err
			}
			if err := m.Wait(10 * time.Second); err != nil {
				return nil, err
			}
			if _, err := s.c.StartRunner(); err != nil {
				return nil, err
			}
		}
	}
	if inWrite > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d freezes landed inside an SQLite write (the runner held the database's write lock) and were repeated", inWrite))
	}
	res.Trials, res.Host = trials, host.since()
	res.add(SeriesSigcont, stopped)
	res.add(SeriesStopTakeover, takeover)
	return res, nil
}

// ExecBaseline starts the child directly (no runner) trials times and
// measures from just before the fork until its first instruction: the part
// of every "until the next child starts" figure that is process creation.
func (e *Env) ExecBaseline(ctx context.Context, trials int) (*Result, error) {
	dir := filepath.Join(e.Dir, "exec-"+randomHex(3))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ln, err := probe.Listen(filepath.Join(dir, "ev.sock"))
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	host := markHost()
	var samples []time.Duration
	for range trials {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cmd := exec.Command(e.Bin.Child)
		cmd.Env = append(os.Environ(), probe.EnvSocket+"="+ln.Path())
		t0 := probe.Mono()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		ev, err := ln.ReadTimeout(10 * time.Second)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if err != nil {
			return nil, err
		}
		samples = append(samples, ev.Mono-t0)
		if _, err := ln.ReadTimeout(10 * time.Second); err != nil { // its term report
			return nil, err
		}
	}
	res := &Result{Store: "-", Scenario: "exec baseline", Timing: "-", Trials: trials, Host: host.since()}
	res.add(SeriesExec, samples)
	return res, nil
}

// Usage is the CPU and memory of one process over a window.
type Usage struct {
	Role   string        `json:"role"`
	Window time.Duration `json:"window"`
	// CPU is the time the process's threads ran during the window, from
	// /proc/PID/task/*/schedstat (nanoseconds).
	CPU time.Duration `json:"cpu"`
	// Ticks is utime+stime (from /proc/PID/stat) used during the window:
	// the same, counted in 10 ms clock ticks by sampling, so too coarse
	// for a process that runs a few microseconds at a time.
	Ticks time.Duration `json:"ticks"`
	// RSS and HWM are VmRSS and VmHWM (/proc/PID/status) at the end, in KiB.
	RSS int64 `json:"rssKiB"`
	HWM int64 `json:"hwmKiB"`
	// Anon is RssAnon: the part of RSS that is the process's own (heap,
	// stacks, the runtime's data), where the rest (RssFile) is mostly the
	// program's pages, which every process running the same binary shares
	// (its other runners, its supervisors) and which the page cache keeps
	// once per host.
	Anon int64 `json:"anonKiB"`
}

// CPUPercent is CPU as a percentage of one core over the window.
func (u Usage) CPUPercent() float64 { return 100 * u.CPU.Seconds() / u.Window.Seconds() }

// IdleResult is the idle cost of runners on one store.
type IdleResult struct {
	Store  string   `json:"store"`
	Timing string   `json:"timing"`
	Usage  []Usage  `json:"usage"`
	Host   HostLoad `json:"host"`
}

// Idle runs a master and a follower with the default timings and measures
// the CPU time and memory of each runner process (not its child) over window,
// after a warm-up that covers their first election.
func (e *Env) Idle(ctx context.Context, window time.Duration) (*IdleResult, error) {
	s, err := e.startSession(ctx, "idle", Timing{}, 2)
	if err != nil {
		return nil, err
	}
	defer s.close()
	sleep(ctx, 3*time.Second) // the follower's init delay (1s) and first check
	master, err := s.master()
	if err != nil {
		return nil, err
	}
	var follower *Runner
	s.c.mu.Lock()
	for _, r := range s.c.runners {
		if r != master {
			follower = r
		}
	}
	s.c.mu.Unlock()
	procs := []struct {
		role string
		r    *Runner
	}{{"master", master}, {"follower", follower}}
	before := make([]time.Duration, len(procs))
	beforeTicks := make([]time.Duration, len(procs))
	for i, p := range procs {
		if before[i], err = schedCPU(p.r.Pid); err != nil {
			return nil, err
		}
		if beforeTicks[i], err = procCPU(p.r.Pid); err != nil {
			return nil, err
		}
	}
	e.logf("  %s idle: measuring for %v", e.Backend.Kind, window)
	host := markHost()
	sleep(ctx, window)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res := &IdleResult{Store: e.Backend.Kind, Timing: Timing{}.String(), Host: host.since()}
	for i, p := range procs {
		after, err := schedCPU(p.r.Pid)
		if err != nil {
			return nil, err
		}
		afterTicks, err := procCPU(p.r.Pid)
		if err != nil {
			return nil, err
		}
		mem, err := procMem(p.r.Pid)
		if err != nil {
			return nil, err
		}
		res.Usage = append(res.Usage, Usage{Role: p.role, Window: window, CPU: after - before[i],
			Ticks: afterTicks - beforeTicks[i], RSS: mem["VmRSS"], HWM: mem["VmHWM"], Anon: mem["RssAnon"]})
	}
	if extra := s.c.PendingStarts(); len(extra) > 0 {
		return nil, fmt.Errorf("idle: the mastership changed during the window")
	}
	return res, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns utime+stime of pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the comm: state(0) ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime(11) stime(12).
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// schedCPU returns the time on CPU of pid's live threads: the sum of the
// first field of /proc/PID/task/*/schedstat.
func schedCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad %s/%s/schedstat", dir, t.Name())
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// procMem returns the sizes /proc/PID/status gives in kB (VmRSS, VmHWM,
// RssAnon, ...), in KiB, by name.
func procMem(pid int) (map[string]int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		if num, ok := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok {
			if n, err := strconv.ParseInt(num, 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out, sc.Err()
}

// killTree SIGKILLs pid and all its descendants, with pid stopped first so
// that it cannot act on its children's deaths.
func killTree(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	for _, d := range descendants(pid) {
		_ = syscall.Kill(d, syscall.SIGKILL)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

// descendants returns the processes below pid, read from /proc.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, en := range entries {
		p, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + en.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		out = append(out, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return out
}

// willReleased reports whether the runner log at path shows, within wait,
// that its last will released the lease (cli/lastwill.go's message).
func willReleased(path string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte("the runner died; released its lease")) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
