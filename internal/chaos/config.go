//go:build linux

package chaos

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Timing is the executor configuration every instance runs with: short, so
// that a run covers many elections.
type Timing struct {
	// Heartbeat is masterjob's HeartbeatInterval.
	Heartbeat time.Duration
	// Tolerance is the lease duration.
	Tolerance time.Duration
	// Check is CheckMasterInterval.
	Check time.Duration
	// InitDelay is InitDelay.
	InitDelay time.Duration
	// WriteEvery is how often a master writes to the fenced sink.
	WriteEvery time.Duration
	// ShutdownTimeout is the executor's (or runner's) ShutdownTimeout.
	// Default: SlowStopMax + 2 x Tolerance + 1s, so that a slow job can
	// finish its stop within it even when a combo SIGSTOPs its instance
	// (for up to a lease + 800ms) while it stops: Run then rightly returns
	// ErrShutdownTimeout, which the harness counts as a crash.
	ShutdownTimeout time.Duration
}

// DefaultTiming is the timing of a run unless configured otherwise.
var DefaultTiming = Timing{
	Heartbeat:  100 * time.Millisecond,
	Tolerance:  600 * time.Millisecond,
	Check:      300 * time.Millisecond,
	InitDelay:  0,
	WriteEvery: 20 * time.Millisecond,
}

// Config describes one chaos run. The zero value of each field means its
// default (see the Default* values and Driver.Run).
type Config struct {
	// StoreURL names the store: sqlite:PATH or postgres://USER@HOST:PORT/DB.
	// The run creates its own tables (SQLite: a table prefix) or schema
	// (PostgreSQL) and drops them at the end; nothing else is touched.
	StoreURL string
	// Instances is the number of instance processes (default 4, at least 2).
	Instances int
	// Locks is the number of lock names every instance follows (default 3).
	Locks int
	// Faults is the number of faults to inject (default 100).
	Faults int
	// Seed seeds the fault schedule. The seed fixes the random choices, not
	// the timing of the processes, so two runs with one seed differ.
	Seed uint64
	// FaultGap is the mean time between the starts of two faults (default
	// 250ms); each gap is drawn uniformly from [FaultGap/2, 3*FaultGap/2].
	FaultGap time.Duration
	// Kinds restricts the faults to these kinds (see FaultKinds); empty
	// means every kind.
	Kinds []string
	// Timing is the executor configuration of the instances.
	Timing Timing

	// SlowStop is the fraction of masterships whose job is slow to stop:
	// once told to stop it goes on (writing to the sink) for a random time
	// up to SlowStopMax, bounded only by what the executor tells it
	// (masterjob.StopDeadline, and for half of them masterjob.StopReason;
	// in runner mode the child ignores SIGTERM and the runner kills it).
	// 0 means the default (0.5); a negative value means none.
	SlowStop float64
	// SlowStopMax bounds the stop time of a slow job (default 1.5 x
	// Tolerance: past the lease).
	SlowStopMax time.Duration

	// Runner runs each instance as a real `masterjob run` runner (package
	// cli, in the instance process) whose child command is a process that
	// reports to the driver, instead of an Executor with in-process jobs.
	// Runner mode follows one lock (Locks must be 1); the faults that act
	// inside an instance (SQLite outages, latency and reopen, clock jumps)
	// do not apply to it.
	Runner bool
	// DirectChild, in runner mode, makes the child command the reporting
	// process itself. By default it runs under "sh -c 'CHILD & wait'", as
	// the README's quick start does, so that the process that must die with
	// the runner is a grandchild.
	DirectChild bool

	// Margin is added to Tolerance + Check to bound a gap with no master
	// while the lock is enabled and an instance is healthy (default 500ms).
	Margin time.Duration
	// StopGrace bounds how long a SIGSTOPped master's job may run after
	// SIGCONT when its lease passed meanwhile (default 100ms).
	StopGrace time.Duration
	// DisableSlack is added to one heartbeat to bound how long a healthy
	// master's job runs after Disable returns (default 100ms).
	DisableSlack time.Duration
	// LossSlack is added to one heartbeat to bound how long a job runs
	// after its instance learned that its lease is lost (a renewal refused,
	// the trust window closed) or after a store-side loss of its lease
	// returned (default 100ms).
	LossSlack time.Duration
	// StrictSQLiteLock makes a SIGSTOP that catches an instance holding
	// SQLite's write lock a violation (VPausedWriter). By default it counts
	// as a store outage for every instance for the length of the pause (see
	// docs/chaos.md), and is reported in the summary.
	StrictSQLiteLock bool
	// Settle is how long the run goes on without faults at the end, so
	// that every lock is seen to recover (default 2s).
	Settle time.Duration
	// MaxDuration bounds the whole run (default: generous, from Faults and
	// FaultGap).
	MaxDuration time.Duration

	// Command is the program (and arguments) that Main runs in: the driver
	// appends the subcommand ("instance", "runner", "child") and its flags.
	// Default: this executable.
	Command []string
	// Dir is the work directory (socket, logs, event log). Default: a new
	// temporary directory, removed after a run without violations unless
	// Keep is set.
	Dir string
	// Keep keeps the work directory.
	Keep bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Defaults.
const (
	DefaultInstances    = 4
	DefaultLocks        = 3
	DefaultFaults       = 100
	DefaultFaultGap     = 250 * time.Millisecond
	DefaultMargin       = 500 * time.Millisecond
	DefaultStopGrace    = 100 * time.Millisecond
	DefaultDisableSlack = 100 * time.Millisecond
	DefaultLossSlack    = 100 * time.Millisecond
	DefaultSlowStop     = 0.5
	DefaultSettle       = 2 * time.Second
)

func (c *Config) applyDefaults() {
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	if c.Instances == 0 {
		c.Instances = DefaultInstances
	}
	if c.Locks == 0 {
		c.Locks = DefaultLocks
	}
	if c.Faults == 0 {
		c.Faults = DefaultFaults
	}
	def(&c.FaultGap, DefaultFaultGap)
	def(&c.Timing.Heartbeat, DefaultTiming.Heartbeat)
	def(&c.Timing.Tolerance, DefaultTiming.Tolerance)
	def(&c.Timing.Check, DefaultTiming.Check)
	def(&c.Timing.WriteEvery, DefaultTiming.WriteEvery)
	def(&c.Margin, DefaultMargin)
	def(&c.StopGrace, DefaultStopGrace)
	def(&c.DisableSlack, DefaultDisableSlack)
	def(&c.LossSlack, DefaultLossSlack)
	switch {
	case c.SlowStop == 0:
		c.SlowStop = DefaultSlowStop
	case c.SlowStop < 0:
		c.SlowStop = 0
	}
	def(&c.SlowStopMax, c.Timing.Tolerance*3/2)
	def(&c.Timing.ShutdownTimeout, c.SlowStopMax+2*c.Timing.Tolerance+time.Second)
	def(&c.Settle, DefaultSettle)
	// Each fault lasts at most a few seconds and at most Instances-1 run at
	// once; a run needs about Faults*FaultGap plus start-up and settling.
	def(&c.MaxDuration, time.Duration(c.Faults)*c.FaultGap*4+2*time.Minute)
	if c.Log == nil {
		c.Log = io.Discard
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.StoreURL == "" {
		errs = append(errs, errors.New("store URL is required"))
	} else if s, err := parseStoreURL(c.StoreURL); err != nil {
		errs = append(errs, err)
	} else if c.Runner && s.engine != nil && s.engine.RunnerURL == nil {
		errs = append(errs, fmt.Errorf("runner mode: the %s engine does not give a runner's store URL (Engine.RunnerURL)", s.engine.Scheme))
	}
	if c.Instances < 2 {
		errs = append(errs, fmt.Errorf("instances %d: need at least 2", c.Instances))
	}
	if c.Locks < 1 || c.Locks > 1000 {
		errs = append(errs, fmt.Errorf("locks %d: need 1 to 1000", c.Locks))
	}
	if c.Faults < 0 {
		errs = append(errs, fmt.Errorf("faults %d: must not be negative", c.Faults))
	}
	if c.SlowStop > 1 {
		errs = append(errs, fmt.Errorf("slow stop %v: must be a fraction, at most 1", c.SlowStop))
	}
	if c.Runner && c.Locks != 1 {
		errs = append(errs, fmt.Errorf("locks %d: runner mode follows one lock (a runner runs one command)", c.Locks))
	}
	if c.Timing.Heartbeat >= c.Timing.Tolerance {
		errs = append(errs, fmt.Errorf("heartbeat %v must be shorter than tolerance %v", c.Timing.Heartbeat, c.Timing.Tolerance))
	}
	for name, d := range map[string]time.Duration{
		"fault gap": c.FaultGap, "check": c.Timing.Check, "write every": c.Timing.WriteEvery,
		"margin": c.Margin, "stop grace": c.StopGrace, "disable slack": c.DisableSlack,
		"loss slack": c.LossSlack, "slow stop max": c.SlowStopMax, "shutdown timeout": c.Timing.ShutdownTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", name, d))
		}
	}
	for _, k := range c.Kinds {
		switch {
		case faultWeights[k] == 0:
			errs = append(errs, fmt.Errorf("fault kind %q: want one of %v", k, FaultKinds))
		case c.Runner && !c.applies(k):
			errs = append(errs, fmt.Errorf("fault kind %q: does not apply in runner mode on this store", k))
		}
	}
	if c.Timing.InitDelay < 0 {
		errs = append(errs, fmt.Errorf("init delay %v: must not be negative", c.Timing.InitDelay))
	}
	return errors.Join(errs...)
}

// gapBound is the longest a lock may stay without a master while it is
// enabled and an instance is healthy.
func (c *Config) gapBound() time.Duration { return c.Timing.Tolerance + c.Timing.Check + c.Margin }
