package masterjob

import (
	"context"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Executor elects this instance master of the locks registered with
// StartMaster and runs their jobs while it is. Create it with New, register
// jobs, then call Run.
type Executor struct {
	st  store.Store
	cfg Config
	// TODO(core): implementation
}

// New returns an executor on st. Its configuration is resolved from
// defaults, the config file, the environment and opts (see Config); an
// invalid value is reported as an error wrapping ErrInvalidConfig that names
// the setting and its source.
func New(st store.Store, opts ...Option) (*Executor, error) { panic("todo") }

// Config returns the resolved configuration.
func (e *Executor) Config() Config { return e.cfg }

// InstanceID returns this instance's id.
func (e *Executor) InstanceID() string { panic("todo") }

// StartMaster registers job under lock. It may be called before or while
// Run runs. The lock name must pass store.ValidateLockName.
func (e *Executor) StartMaster(lock string, job Job) error { panic("todo") }

// Run elects and runs jobs until ctx is done, then stops every running job
// (cancel its context, wait for it to return), releases its lease, and
// returns nil. Store outages are survived: Run retries with backoff and never
// returns because of them.
func (e *Executor) Run(ctx context.Context) error { panic("todo") }

// Masters returns the leases this instance holds now.
func (e *Executor) Masters() []Lease { panic("todo") }

// Locks returns the store's state of the given locks, or of all known locks.
func (e *Executor) Locks(ctx context.Context, locks ...string) ([]store.LockState, error) {
	return e.st.Locks(ctx, locks...)
}

// StopDeadline returns the time (on this process's monotonic clock) by which
// the job that owns ctx must have stopped: after it, the lease may be
// another instance's. ok is false for a context not created by an executor.
func StopDeadline(ctx context.Context) (deadline time.Time, ok bool) { return stopDeadline(ctx) }

func stopDeadline(ctx context.Context) (time.Time, bool) { panic("todo") }
