package sqlite

import "time"

// WithClocks replaces the clocks a Store reads: the wall clock, and
// CLOCK_BOOTTIME (nanoseconds, ok false where unavailable) with the id of
// the boot it counts from. For tests only.
func WithClocks(wall func() time.Time, boottime func() (int64, bool), bootID string) Option {
	return func(o *options) { o.clock = clock{wall: wall, boottime: boottime, bootID: bootID} }
}

// WithSafetyPoll sets how often a subscription that watches the file polls
// all the same (default notifySafetyPoll). For tests only.
func WithSafetyPoll(d time.Duration) Option {
	return func(o *options) { o.safetyPoll = d }
}

// WithoutWatch makes subscriptions poll at WithNotifyPoll, as where the
// file cannot be watched. For tests only.
func WithoutWatch() Option {
	return func(o *options) { o.noWatch = true }
}

// NotifyWakes returns how many times s's subscriptions have woken to look
// at the file.
func NotifyWakes(s *Store) int64 { return s.notifyWakes.Load() }
