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

	// Margin is added to Tolerance + Check to bound a gap with no master
	// while the lock is enabled and an instance is healthy (default 500ms).
	Margin time.Duration
	// StopGrace bounds how long a SIGSTOPped master's job may run after
	// SIGCONT when its lease passed meanwhile (default 100ms).
	StopGrace time.Duration
	// DisableSlack is added to one heartbeat to bound how long a healthy
	// master's job runs after Disable returns (default 100ms).
	DisableSlack time.Duration
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

	// Command starts an instance: the program and the arguments before the
	// instance's flags. Default: this executable with "instance".
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
	} else if _, err := parseStoreURL(c.StoreURL); err != nil {
		errs = append(errs, err)
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
	if c.Timing.Heartbeat >= c.Timing.Tolerance {
		errs = append(errs, fmt.Errorf("heartbeat %v must be shorter than tolerance %v", c.Timing.Heartbeat, c.Timing.Tolerance))
	}
	for name, d := range map[string]time.Duration{
		"fault gap": c.FaultGap, "check": c.Timing.Check, "write every": c.Timing.WriteEvery,
		"margin": c.Margin, "stop grace": c.StopGrace, "disable slack": c.DisableSlack,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", name, d))
		}
	}
	for _, k := range c.Kinds {
		if faultWeights[k] == 0 {
			errs = append(errs, fmt.Errorf("fault kind %q: want one of %v", k, FaultKinds))
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
