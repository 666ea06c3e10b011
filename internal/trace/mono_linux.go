//go:build linux

package trace

import "golang.org/x/sys/unix"

// mono reads CLOCK_MONOTONIC, the clock every process of the host shares.
func mono() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano()
}
