package sqlite

import (
	"strings"
	"time"

	"github.com/masterjob/masterjob/internal/hostclock"
)

// clock is where a Store reads time. Tests replace it (export_test.go).
type clock struct {
	// wall is the wall clock: display only.
	wall func() time.Time
	// boottime reads CLOCK_BOOTTIME in nanoseconds; ok is false where it
	// cannot be read.
	boottime func() (ns int64, ok bool)
	// bootID names the boot that boottime counts from; "" when unknown.
	bootID string
}

func hostClock() clock {
	return clock{wall: time.Now, boottime: hostclock.Boottime, bootID: hostclock.BootID()}
}

// Names of the clocks a lease expiry can be on (the clock column of the
// lease_clock table).
const (
	// clockWall is the wall clock, where CLOCK_BOOTTIME or the boot id
	// cannot be read.
	clockWall = "wall"
	// clockBootPrefix, followed by the boot id, is CLOCK_BOOTTIME in that
	// boot.
	clockBootPrefix = "boot:"
)

// stamp is the time at which a transaction decides.
type stamp struct {
	// wall is the wall clock in milliseconds since the Unix epoch. It is
	// stored and shown (AcquiredAt, ChangedAt, history) and decides only
	// leases written by an older version (see row.remaining).
	wall int64
	// clock names the clock of at: clockBootPrefix + boot id, or clockWall.
	clock string
	// at is the time in milliseconds on clock: lease arithmetic uses it.
	at int64
}

// now reads the clocks. CLOCK_BOOTTIME needs the boot id beside it: without
// it a reading from before a reboot could not be told from one after.
func (c clock) now() stamp {
	st := stamp{wall: c.wall().UnixMilli(), clock: clockWall}
	st.at = st.wall
	if c.bootID != "" {
		if ns, ok := c.boottime(); ok {
			st.clock, st.at = clockBootPrefix+c.bootID, ns/int64(time.Millisecond)
		}
	}
	return st
}

// remaining returns the time left on the row's lease at now, in
// milliseconds (not positive: expired). It does not look at the holder.
//
// The lease's CLOCK_BOOTTIME expiry counts when it belongs to the row's
// current token (leaseToken == token); otherwise the lease was written by
// an older version, which knew only the wall clock, and its wall-clock
// expiry (expires_at) decides, with the old caveat. A lease stamped in
// another boot has expired. A lease on one clock read by a process on
// another (CLOCK_BOOTTIME against the wall-clock fallback; not expected on
// one host) is decided on the wall clock too, as before version 4, rather
// than counted as expired.
func (r *row) remaining(now stamp) int64 {
	if r.leaseToken == r.token && r.leaseToken != 0 {
		return remainingOn(r.clock, r.clockExpires, r.expiresAt, now)
	}
	return r.expiresAt - now.wall
}

// remainingOn returns the time left at now, in milliseconds (not positive:
// expired), before an expiry stamped at expires on clk and at wallExpires
// on the wall clock. The same clock decides when now is on it; a stamp of
// another boot has expired; between CLOCK_BOOTTIME and the wall-clock
// fallback the wall clock decides. Leases, reservations and member
// records all expire this way.
func remainingOn(clk string, expires, wallExpires int64, now stamp) int64 {
	switch {
	case clk == now.clock && now.clock != clockWall:
		return expires - now.at
	case strings.HasPrefix(clk, clockBootPrefix) && strings.HasPrefix(now.clock, clockBootPrefix):
		return min(wallExpires-now.wall, 0) // an earlier boot
	}
	return wallExpires - now.wall
}

// held reports whether the row has an unexpired lease at now.
func (r *row) held(now stamp) bool {
	if r.holder == "" {
		return false
	}
	return r.remaining(now) > 0
}
