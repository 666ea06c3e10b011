package masterjob

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
)

// Defaults, as in the seed (oe-master-job-executor).
const (
	DefaultInitDelay              = 1000 * time.Millisecond
	DefaultCheckMasterInterval    = 30000 * time.Millisecond
	DefaultHeartbeatInterval      = 8000 * time.Millisecond
	DefaultMaxHeartbeatRetryCount = 3
	// MaxHeartbeatRetryCountLimit is the largest MaxHeartbeatRetryCount
	// accepted.
	MaxHeartbeatRetryCountLimit = 100
	// The default Tolerance is DefaultToleranceFactor x HeartbeatInterval.
	DefaultToleranceFactor = 3
	// The default SafetyMargin is Tolerance / DefaultSafetyMarginDivisor.
	DefaultSafetyMarginDivisor = 4
)

// Environment variables read by New (seed parity), plus the config file path.
const (
	EnvConfigFile             = "MASTERJOB_CONFIG"
	EnvInitDelay              = "INIT_DELAY"
	EnvCheckMasterInterval    = "CHECK_MASTER_INTERVAL"
	EnvHeartbeatInterval      = "MASTER_JOB_HEARTBEAT_INTERVAL"
	EnvMaxHeartbeatRetryCount = "MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT"
	EnvTolerance              = "MASTER_JOB_TOLERANCE"
)

// Config is the resolved timing of an executor. New builds it from four
// sources, per setting, later winning: defaults, the JSON config file's
// "masterJobExecutor" section, environment variables, options in code.
type Config struct {
	// InitDelay is the delay after Run starts before the first check.
	InitDelay time.Duration
	// CheckMasterInterval is the longest a follower sleeps between checks. It
	// wakes earlier when the current lease expires or the store pushes a
	// release.
	CheckMasterInterval time.Duration
	// HeartbeatInterval is the time between renewals of held leases.
	HeartbeatInterval time.Duration
	// MaxHeartbeatRetryCount is how many times a failed renewal is retried
	// before the next heartbeat; when a heartbeat and all its retries fail,
	// the master demotes itself.
	MaxHeartbeatRetryCount int
	// Tolerance is the lease duration, measured by the store's clock.
	Tolerance time.Duration
	// SafetyMargin is how long before its lease could expire a master stops
	// trusting it: the trust window after a renewal that began at t ends at
	// t + Tolerance - SafetyMargin. The job must be able to stop within the
	// margin.
	SafetyMargin time.Duration
	// ShutdownTimeout bounds how long Run waits for jobs to stop on shutdown
	// before giving up on releasing their leases. Default: Tolerance.
	ShutdownTimeout time.Duration
}

// TrustWindow is Tolerance - SafetyMargin: how long after a renewal began
// the master may go on trusting its lease.
func (c Config) TrustWindow() time.Duration { return c.Tolerance - c.SafetyMargin }

// Option configures an Executor. Options are the fourth and highest-priority
// configuration source.
type Option func(*options)

type options struct {
	configFile    *setting[string]
	lookupEnv     func(string) (string, bool)
	overrides     map[string]setting[time.Duration]
	retryOverride *setting[int]
	label         string // set by Labeled while applying an option
	lock          string // set while applying StartMaster's options

	logger     *slog.Logger
	instanceID string
	info       InstanceInfo
	observer   Observer
	clock      func() time.Time // tests only: replaces hostclock.Now
	balance    *BalanceConfig
}

// setting is a value with the name of the source it came from.
type setting[T any] struct {
	value  T
	source string
}

func (o *options) source(def string) string {
	src := def
	if o.label != "" {
		src = o.label
	}
	if o.lock != "" {
		src += fmt.Sprintf(" of StartMaster(%q)", o.lock)
	}
	return src
}

func (o *options) setDuration(key, def string, d time.Duration) {
	if o.overrides == nil {
		o.overrides = map[string]setting[time.Duration]{}
	}
	o.overrides[key] = setting[time.Duration]{d, o.source(def)}
}

// Labeled applies opt, naming source as its origin in validation errors (for
// example "flag --heartbeat-interval").
func Labeled(source string, opt Option) Option {
	return func(o *options) {
		prev := o.label
		o.label = source
		opt(o)
		o.label = prev
	}
}

// WithConfigFile names the JSON config file whose "masterJobExecutor" section
// is read. Without it, the path in $MASTERJOB_CONFIG is used, if set.
func WithConfigFile(path string) Option {
	return func(o *options) { o.configFile = &setting[string]{path, o.source("option WithConfigFile")} }
}

// WithLookupEnv replaces os.LookupEnv as the source of environment variables
// (for tests, or to ignore the environment: pass a func that returns false).
func WithLookupEnv(lookup func(string) (string, bool)) Option {
	return func(o *options) { o.lookupEnv = lookup }
}

// WithInitDelay sets InitDelay.
func WithInitDelay(d time.Duration) Option {
	return func(o *options) { o.setDuration("initDelay", "option WithInitDelay", d) }
}

// WithCheckMasterInterval sets CheckMasterInterval.
func WithCheckMasterInterval(d time.Duration) Option {
	return func(o *options) { o.setDuration("checkMasterInterval", "option WithCheckMasterInterval", d) }
}

// WithHeartbeatInterval sets HeartbeatInterval.
func WithHeartbeatInterval(d time.Duration) Option {
	return func(o *options) { o.setDuration("heartbeatInterval", "option WithHeartbeatInterval", d) }
}

// WithTolerance sets Tolerance, the lease duration.
func WithTolerance(d time.Duration) Option {
	return func(o *options) { o.setDuration("masterJobTolerance", "option WithTolerance", d) }
}

// WithSafetyMargin sets SafetyMargin.
func WithSafetyMargin(d time.Duration) Option {
	return func(o *options) { o.setDuration("safetyMargin", "option WithSafetyMargin", d) }
}

// WithShutdownTimeout sets ShutdownTimeout.
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.setDuration("shutdownTimeout", "option WithShutdownTimeout", d) }
}

// WithMaxHeartbeatRetryCount sets MaxHeartbeatRetryCount.
func WithMaxHeartbeatRetryCount(n int) Option {
	return func(o *options) {
		o.retryOverride = &setting[int]{n, o.source("option WithMaxHeartbeatRetryCount")}
	}
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithInstanceID sets the instance id. Default: a random id, unique per
// process start. Two executors must never share an id. An id follows the
// rules of lock names (store.ValidateLockName): New refuses an id that is
// empty, longer than 200 bytes or holds control characters.
func WithInstanceID(id string) Option { return func(o *options) { o.instanceID = id } }

// WithInstanceInfo sets the description that status shows for this
// instance. Default: host name and pid.
func WithInstanceInfo(info InstanceInfo) Option { return func(o *options) { o.info = info } }

// WithObserver sets the observer of transitions and renewals (metrics).
func WithObserver(obs Observer) Option { return func(o *options) { o.observer = obs } }

// InstanceInfo describes an instance for status displays.
type InstanceInfo struct {
	Host    string `json:"host,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Address string `json:"address,omitempty"`
	Version string `json:"version,omitempty"`
	// Started is when the executor was created; New sets it when zero.
	Started time.Time `json:"started,omitzero"`
}

// parseInstanceInfo reads a holder's description written by New (JSON); ok
// is false for anything else.
func parseInstanceInfo(s string) (InstanceInfo, bool) {
	var info InstanceInfo
	if s == "" || s[0] != '{' || json.Unmarshal([]byte(s), &info) != nil {
		return InstanceInfo{}, false
	}
	return info, true
}
