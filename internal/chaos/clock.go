//go:build linux

package chaos

import (
	"time"

	"golang.org/x/sys/unix"
)

// Mono returns the host's CLOCK_MONOTONIC in nanoseconds. Every process on
// the host reads the same clock, so readings taken by the driver and by
// different instances compare directly; it never jumps with the wall clock.
func Mono() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC exists on every Linux kernel Go supports.
		panic("chaos: clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return ts.Nano()
}

// dur formats a monotonic difference for reports.
func dur(ns int64) time.Duration { return time.Duration(ns) }
