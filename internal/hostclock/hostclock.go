// Package hostclock reads the clocks that lease arithmetic needs and that
// Go's time package does not expose.
//
// Go's monotonic clock (the reading inside time.Now) is CLOCK_MONOTONIC on
// Linux: it never steps, but it stops while the host is suspended, so a
// trust window measured on it stays open across a suspend during which the
// lease expired in the store. CLOCK_BOOTTIME is the same clock plus the time
// spent suspended; every process on the host reads the same value, and it
// restarts from zero at each boot, which the boot id tells apart.
//
// Now returns time.Now moved forward by the time the host spent suspended
// since this process started, so that deadlines computed and compared with
// it (Before, Sub, Add keep working on the monotonic reading) count suspend
// time. Where CLOCK_BOOTTIME does not exist, Now is time.Now.
package hostclock

import (
	"sync"
	"sync/atomic"
	"time"
)

// suspendQuantum is the smallest growth of the suspend offset that Now
// counts: the two clocks are read one after the other, so tiny differences
// are read noise, not suspend.
const suspendQuantum = time.Millisecond

// base is BOOTTIME-MONOTONIC at the first reading; maxOffset the largest
// offset growth seen, so that Suspended never goes back.
var (
	baseOnce  sync.Once
	base      int64
	maxOffset atomic.Int64
)

// Suspended returns how long the host has been suspended since this process
// first asked, in whole milliseconds; 0 where the host cannot tell. It
// never decreases.
func Suspended() time.Duration {
	off, ok := bootOffset()
	if !ok {
		return 0
	}
	baseOnce.Do(func() { base = off })
	grown := time.Duration(off - base)
	grown -= grown % suspendQuantum
	for {
		cur := maxOffset.Load()
		if int64(grown) <= cur {
			return time.Duration(cur)
		}
		if maxOffset.CompareAndSwap(cur, int64(grown)) {
			return grown
		}
	}
}

// Now returns time.Now plus Suspended: a time whose monotonic reading
// advances while the host is suspended. Compare and subtract such times
// only with each other, never with plain time.Now readings.
func Now() time.Time {
	return time.Now().Add(Suspended())
}

// FromNow converts t, a time from Now, into plain time.Now terms (for
// time.Until and timers, which run on the monotonic clock).
func FromNow(t time.Time) time.Time {
	return t.Add(-Suspended())
}
