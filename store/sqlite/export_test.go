package sqlite

import "time"

// WithClocks replaces the clocks a Store reads: the wall clock, and
// CLOCK_BOOTTIME (nanoseconds, ok false where unavailable) with the id of
// the boot it counts from. For tests only.
func WithClocks(wall func() time.Time, boottime func() (int64, bool), bootID string) Option {
	return func(o *options) { o.clock = clock{wall: wall, boottime: boottime, bootID: bootID} }
}
