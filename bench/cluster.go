//go:build linux

package bench

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/bench/internal/probe"
	"github.com/masterjob/masterjob/internal/trace"
)

// Timing is the timing of the runners; a zero field is left to the
// defaults (no flag).
type Timing struct {
	Tolerance, Heartbeat, Check, InitDelay time.Duration
	// InitDelaySet passes --init-delay even when InitDelay is zero.
	InitDelaySet bool
}

// LeaseTiming is the timing used for a lease (tolerance) d: heartbeat d/3
// (the defaults' ratio), safety margin d/4 (the default), a check interval
// of 30s (so that a follower that takes over in about the lease shows it
// woke at the lease's expiry, not at a check), no init delay.
func LeaseTiming(d time.Duration) Timing {
	return Timing{Tolerance: d, Heartbeat: d / 3, Check: 30 * time.Second, InitDelaySet: true}
}

func (t Timing) flags() []string {
	var f []string
	add := func(name string, d time.Duration) {
		if d > 0 {
			f = append(f, "--"+name, d.String())
		}
	}
	add("tolerance", t.Tolerance)
	add("heartbeat-interval", t.Heartbeat)
	add("check-master-interval", t.Check)
	if t.InitDelay > 0 || t.InitDelaySet {
		f = append(f, "--init-delay", t.InitDelay.String())
	}
	return f
}

// String describes the timing for reports.
func (t Timing) String() string {
	if t == (Timing{}) {
		return "defaults (heartbeat 8s, lease 24s, check 30s)"
	}
	var parts []string
	if t.Tolerance > 0 {
		parts = append(parts, "lease "+t.Tolerance.String())
	}
	if t.Heartbeat > 0 {
		parts = append(parts, "heartbeat "+t.Heartbeat.Round(time.Millisecond).String())
	}
	if t.Check > 0 {
		parts = append(parts, "check "+t.Check.String())
	}
	return strings.Join(parts, ", ")
}

// Binaries are the programs a process scenario runs.
type Binaries struct {
	// Masterjob is the masterjob command (go build ./cmd/masterjob).
	Masterjob string
	// Child is the instrumented child (go build ./bench/cmd/masterjob-bench-child).
	Child string
	// Election is etcd's election as a runner (go build
	// ./bench/cmd/masterjob-bench-etcd-election): the baseline on etcd.
	Election string
}

// Start is the start of a child, with a watch on its exit.
type Start struct {
	probe.Event
	exit *probe.ExitWatch
}

// Runner is one `masterjob run` process.
type Runner struct {
	Pid  int
	cmd  *exec.Cmd
	done chan struct{} // closed once the process was waited for
	log  string
}

// Exited reports whether the runner has exited.
func (r *Runner) Exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the runner to exit.
func (r *Runner) Wait(timeout time.Duration) error {
	select {
	case <-r.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("runner %d did not exit within %v (log %s)", r.Pid, timeout, r.log)
	}
}

// Cluster is a set of runners of one lock on one store, whose children
// report to it.
type Cluster struct {
	bin    Binaries
	store  string
	lock   string
	timing Timing
	dir    string
	extra  []string // more flags for every runner
	// traceFile, when set, is where runners write their trace marks.
	traceFile string

	ln *probe.Listener
	// masterFile holds the pid of the master's child (probe.EnvMasterFile).
	masterFile string
	starts     chan Start
	terms      chan probe.Event
	readWG     sync.WaitGroup

	mu      sync.Mutex
	runners map[int]*Runner
	n       int
}

// NewCluster prepares a cluster; it starts no runner.
func NewCluster(bin Binaries, storeURL, lock string, timing Timing, dir string) (*Cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ln, err := probe.Listen(filepath.Join(dir, "ev.sock"))
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		bin: bin, store: storeURL, lock: lock, timing: timing, dir: dir, ln: ln,
		masterFile: filepath.Join(dir, "master.pid"),
		starts:     make(chan Start, 256),
		terms:      make(chan probe.Event, 256),
		runners:    map[int]*Runner{},
	}
	c.readWG.Add(1)
	go c.read()
	return c, nil
}

// read turns datagrams into events; a start gets its exit watch at once,
// while the child surely exists.
func (c *Cluster) read() {
	defer c.readWG.Done()
	for {
		ev, err := c.ln.Read()
		if err != nil {
			return
		}
		switch ev.Kind {
		case probe.KindStart:
			w, err := probe.WatchExit(ev.Pid)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: watch child %d: %v\n", ev.Pid, err)
				continue
			}
			c.starts <- Start{Event: ev, exit: w}
		case probe.KindTerm:
			select {
			case c.terms <- ev:
			default: // nobody reads terms in most scenarios
			}
		}
	}
}

// SetMaster names the master's child to the children that start next
// (probe.Event.Prev).
func (c *Cluster) SetMaster(pid int) error {
	tmp := c.masterFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.masterFile)
}

// runnerEnv is this process's environment without masterjob settings a
// developer's shell might hold, plus the socket of the children.
func (c *Cluster) runnerEnv() []string {
	drop := []string{"MASTERJOB_", "INIT_DELAY=", "CHECK_MASTER_INTERVAL=", "MASTER_JOB_"}
	var env []string
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(drop, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			env = append(env, kv)
		}
	}
	env = append(env, probe.EnvSocket+"="+c.ln.Path(), probe.EnvMasterFile+"="+c.masterFile)
	if c.traceFile != "" {
		env = append(env, trace.EnvFile+"="+c.traceFile)
	}
	return env
}

// StartRunner starts one more runner.
func (c *Cluster) StartRunner() (*Runner, error) {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	args := []string{"run", "--lock", c.lock, "--store", c.store, "--log-format", "json"}
	args = append(args, c.timing.flags()...)
	args = append(args, c.extra...)
	args = append(args, "--", c.bin.Child)
	logPath := filepath.Join(c.dir, fmt.Sprintf("runner-%03d.log", n))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.bin.Masterjob, args...)
	cmd.Env = c.runnerEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C meant for the benchmark does not
	// reach the runners, which the benchmark stops itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	r := &Runner{Pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	c.mu.Lock()
	c.runners[r.Pid] = r
	c.mu.Unlock()
	return r, nil
}

// Runner returns the runner with pid, or nil.
func (c *Cluster) Runner(pid int) *Runner {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runners[pid]
}

// NextStart waits up to timeout for the next child start. It fails at once,
// with the last error a runner logged, when every runner has exited (a
// configuration the store refuses, say): no child can start then.
func (c *Cluster) NextStart(timeout time.Duration) (Start, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-c.starts:
			return s, nil
		case <-t.C:
			return Start{}, fmt.Errorf("no child started within %v", timeout)
		case <-tick.C:
			if r := c.allExited(); r != nil {
				select {
				case s := <-c.starts: // reported just before
					return s, nil
				default:
				}
				return Start{}, fmt.Errorf("no child started: every runner exited; runner %d logged: %s", r.Pid, lastError(r.log))
			}
		}
	}
}

// allExited returns a runner when there is at least one and all have
// exited, else nil.
func (c *Cluster) allExited() *Runner {
	c.mu.Lock()
	defer c.mu.Unlock()
	var any *Runner
	for _, r := range c.runners {
		if !r.Exited() {
			return nil
		}
		any = r
	}
	return any
}

// lastError returns the last line of the log at path that logs an error
// (else its last line), from its last 8 KiB, or a note that it could not
// be read.
func lastError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	b = b[max(0, len(b)-8192):]
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `"level":"ERROR"`) {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}

// LogTails returns the last n lines of each runner's log, for an error
// that must say what the runners did: the benchmark's directory is often
// gone (a test's temporary directory) by the time anyone reads it.
func (c *Cluster) LogTails(n int) string {
	c.mu.Lock()
	runners := slices.Collect(maps.Values(c.runners))
	c.mu.Unlock()
	slices.SortFunc(runners, func(a, b *Runner) int { return a.Pid - b.Pid })
	var sb strings.Builder
	for _, r := range runners {
		b, err := os.ReadFile(r.log)
		if err != nil {
			fmt.Fprintf(&sb, "\n--- runner %d: %v", r.Pid, err)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fmt.Fprintf(&sb, "\n--- runner %d (exited %v), last %d lines:\n%s", r.Pid, r.Exited(), min(n, len(lines)),
			strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return sb.String()
}

// PendingStarts returns the starts received and not yet taken.
func (c *Cluster) PendingStarts() []Start {
	var out []Start
	for {
		select {
		case s := <-c.starts:
			out = append(out, s)
		default:
			return out
		}
	}
}

// Signal sends sig to the runner.
func (r *Runner) Signal(sig syscall.Signal) error {
	return syscall.Kill(r.Pid, sig)
}

// Close stops every runner (SIGTERM, then SIGKILL after 10s) and the
// listener. It returns an error naming runners that had to be killed.
func (c *Cluster) Close() error {
	c.mu.Lock()
	runners := make([]*Runner, 0, len(c.runners))
	for _, r := range c.runners {
		runners = append(runners, r)
	}
	c.mu.Unlock()
	for _, r := range runners {
		if !r.Exited() {
			_ = syscall.Kill(r.Pid, syscall.SIGCONT) // in case a scenario left it stopped
			_ = r.Signal(syscall.SIGTERM)
		}
	}
	var errs []error
	for _, r := range runners {
		if err := r.Wait(10 * time.Second); err != nil {
			_ = r.Signal(syscall.SIGKILL)
			<-r.done
			errs = append(errs, err)
		}
	}
	_ = c.ln.Close()
	c.readWG.Wait()
	for _, s := range c.PendingStarts() {
		s.exit.Close()
	}
	return errors.Join(errs...)
}
