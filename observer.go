package masterjob

import "time"

// TransitionKind names a change of mastership on this instance.
type TransitionKind string

// Transition kinds.
const (
	// Acquired: this instance became master (its job is about to start).
	Acquired TransitionKind = "acquired"
	// Released: this instance stopped its job and released the lease
	// (shutdown, disable, hand-off, or the job returned). It is reported
	// once the store's release has returned, whether it committed or
	// failed (then the lease expires instead): what an observer does on
	// it, such as the audit recorder's append, does not reach the store
	// beside the hand-off.
	Released TransitionKind = "released"
	// Lost: the store said the lease is no longer this instance's.
	Lost TransitionKind = "lost"
	// Demoted: this instance stopped trusting its lease because it could not
	// renew it in time.
	Demoted TransitionKind = "demoted"
)

// Transition is one change of mastership on this instance.
type Transition struct {
	Lock     string
	Kind     TransitionKind
	Token    int64
	Instance string
	// Reason is the cause (one of the Err* reasons) for Released, Lost and
	// Demoted; nil for Acquired.
	Reason error
	// Successor, for a Released hand-off, is the instance the lease was
	// released to ("" for any).
	Successor string
	// For Acquired: the lease this one replaced, when it had expired
	// instead of being released (a takeover after a crash, hang or
	// partition of its holder).
	Takeover   bool
	PrevHolder string
	PrevToken  int64
}

// Observer receives events for metrics and audit. Methods are called from
// the executor's goroutine and must not block. Embed NopObserver to
// implement only some methods.
type Observer interface {
	// Transition reports a change of mastership.
	Transition(t Transition)
	// Renewal reports one batched renewal round trip: how long it took, how
	// many leases it carried and its error (nil on success).
	Renewal(took time.Duration, leases int, err error)
	// Check reports one batched check (acquisition attempt) round trip.
	Check(took time.Duration, locks int, err error)
	// LeaseTTL reports, after each successful renewal, the time left until
	// the lease of lock would expire in the store.
	LeaseTTL(lock string, ttl time.Duration)
}

// NopObserver ignores every event.
type NopObserver struct{}

// Transition implements Observer.
func (NopObserver) Transition(Transition) {}

// Renewal implements Observer.
func (NopObserver) Renewal(time.Duration, int, error) {}

// Check implements Observer.
func (NopObserver) Check(time.Duration, int, error) {}

// LeaseTTL implements Observer.
func (NopObserver) LeaseTTL(string, time.Duration) {}

// Observers returns an Observer that passes every event to each of obs in
// turn (for example metrics and an audit recorder).
func Observers(obs ...Observer) Observer { return multiObserver(obs) }

type multiObserver []Observer

// LeaderChanged implements LeaderObserver: it passes l to each observer
// that implements it.
func (m multiObserver) LeaderChanged(l Leader) {
	for _, o := range m {
		if lo, ok := o.(LeaderObserver); ok {
			lo.LeaderChanged(l)
		}
	}
}

func (m multiObserver) Transition(t Transition) {
	for _, o := range m {
		o.Transition(t)
	}
}

func (m multiObserver) Renewal(took time.Duration, leases int, err error) {
	for _, o := range m {
		o.Renewal(took, leases, err)
	}
}

func (m multiObserver) Check(took time.Duration, locks int, err error) {
	for _, o := range m {
		o.Check(took, locks, err)
	}
}

func (m multiObserver) LeaseTTL(lock string, ttl time.Duration) {
	for _, o := range m {
		o.LeaseTTL(lock, ttl)
	}
}
