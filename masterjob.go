package masterjob

import (
	"context"
	"errors"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration error reported by New.
	ErrInvalidConfig = errors.New("masterjob: invalid configuration")
	// ErrDuplicateLock is returned by StartMaster for a lock name already
	// registered on this executor.
	ErrDuplicateLock = errors.New("masterjob: lock already registered")
	// ErrClosed is returned by StartMaster and Run after Run has returned.
	ErrClosed = errors.New("masterjob: executor closed")
	// ErrAlreadyRunning is returned by a second concurrent call of Run.
	ErrAlreadyRunning = errors.New("masterjob: executor already running")
	// ErrShutdownTimeout is returned by Run when jobs did not stop within the
	// shutdown timeout; their leases are left to expire instead of being
	// released.
	ErrShutdownTimeout = errors.New("masterjob: jobs did not stop within the shutdown timeout")
)

// Reasons a mastership ends. The job's context is cancelled with one of these
// as its cause (see context.Cause).
var (
	// ErrLeaseLost: the store reports that this instance no longer holds the
	// lease (it expired and another instance took it, or its record was
	// changed behind the executor's back).
	ErrLeaseLost = errors.New("masterjob: lease lost")
	// ErrTrustWindowPassed: no renewal succeeded in time, so the instance
	// demoted itself before its lease could expire in the store. The lease
	// may still be valid for the remaining safety margin.
	ErrTrustWindowPassed = errors.New("masterjob: lease not renewed within the trust window")
	// ErrLeaseExpired: the executor woke up (after a pause such as SIGSTOP or
	// a long GC) to find that the lease has already expired in the store's
	// terms: another master may be running, so the job must stop at once.
	ErrLeaseExpired = errors.New("masterjob: lease expired before the instance noticed")
	// ErrDisabled: an operator disabled the lock.
	ErrDisabled = errors.New("masterjob: lock disabled")
	// ErrShutdown: the executor is shutting down (Run's context is done).
	ErrShutdown = errors.New("masterjob: executor shutting down")
	// ErrJobReturned: the job's Run returned before its context was cancelled;
	// the executor releases the lease and goes on following the lock.
	ErrJobReturned = errors.New("masterjob: job returned")
	// ErrHandoff: the mastership is handed over to another instance (an
	// operator's hand-off, or balancing): the executor stops the job, then
	// gives the lease to the successor in its release (store.Transfers;
	// not for balancing) or releases it reserved for the successor.
	ErrHandoff = errors.New("masterjob: handed off to another instance")
)

// Lease is what a job knows of its mastership.
type Lease struct {
	// Lock is the lock name.
	Lock string
	// Token is the fencing token of this mastership: strictly greater than
	// every token issued before for this lock. Pass it to downstream systems
	// so that they can refuse writes from a stale master.
	Token int64
	// Instance is the id of the executor that holds the lease.
	Instance string
}

// Job is work that runs only on the master of a lock.
//
// Run is called once per mastership, after the acquisition committed. Its
// context is cancelled, with one of the Err* reasons above as its cause, when
// this instance stops being master. Run must return promptly after that:
// the executor keeps the lease only until its trust window ends.
//
// If Run returns before its context is cancelled, the executor releases the
// lease and keeps following the lock (it may be elected again later). A
// returned error is logged.
type Job interface {
	Run(ctx context.Context, lease Lease) error
}

// JobFunc adapts a function that runs until its context is cancelled.
type JobFunc func(ctx context.Context, lease Lease) error

// Run calls f.
func (f JobFunc) Run(ctx context.Context, lease Lease) error { return f(ctx, lease) }

// StartStop adapts a job in the shape of the seed's masterJob: start is
// called once when this instance becomes master and may return at once,
// leaving goroutines or timers running (they should watch ctx, which is
// cancelled when mastership ends). stop, which may be nil, is called once
// when mastership ends, and only if start returned nil. Its context carries
// the same cause and is cancelled when the stop grace runs out.
func StartStop(start, stop func(ctx context.Context, lease Lease) error) Job {
	return startStopJob{start: start, stop: stop}
}

type startStopJob struct {
	start, stop func(ctx context.Context, lease Lease) error
}

func (j startStopJob) Run(ctx context.Context, lease Lease) error {
	if err := j.start(ctx, lease); err != nil {
		return err
	}
	<-ctx.Done()
	if j.stop == nil {
		return nil
	}
	stopCtx := context.WithValue(context.WithoutCancel(ctx), stopReasonKey{}, context.Cause(ctx))
	stopCtx, cancel := context.WithCancelCause(stopCtx)
	defer cancel(nil)
	if c := clockOf(ctx); c != nil {
		var cd context.CancelFunc
		stopCtx, cd = context.WithDeadline(stopCtx, c.deadline())
		defer cd()
		// A loss while stopping (the store refused a renewal, the trust
		// window closed) ends the grace at once.
		go func() {
			select {
			case <-c.lost:
				cancel(c.lossCause())
			case <-stopCtx.Done():
			}
		}()
	}
	return j.stop(stopCtx, lease)
}

type stopReasonKey struct{}

// StopReason returns why the mastership behind ctx ended: one of ErrShutdown,
// ErrDisabled, ErrHandoff, ErrLeaseLost, ErrTrustWindowPassed,
// ErrLeaseExpired or ErrJobReturned. It accepts the job's context (where it equals
// context.Cause once the context is cancelled) and the context passed to a
// StartStop job's stop function. It returns nil while the mastership lasts.
//
// A loss wins over a planned stop: when the lease is lost (ErrLeaseLost,
// ErrTrustWindowPassed, ErrLeaseExpired) while the job is already stopping
// for a planned reason (ErrShutdown, ErrDisabled, ErrJobReturned), StopReason
// reports the loss from then on, although context.Cause keeps the planned
// reason; another instance may be master already, so the job must stop at
// once (StopDeadline has moved to now).
func StopReason(ctx context.Context) error {
	if c := clockOf(ctx); c != nil {
		if err := c.lossCause(); err != nil {
			return err
		}
	}
	if err, ok := ctx.Value(stopReasonKey{}).(error); ok {
		return err
	}
	if ctx.Err() == nil {
		return nil
	}
	return context.Cause(ctx)
}
