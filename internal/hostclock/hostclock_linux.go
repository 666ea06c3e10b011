//go:build linux

package hostclock

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// bootOffset returns CLOCK_BOOTTIME - CLOCK_MONOTONIC in nanoseconds.
func bootOffset() (int64, bool) {
	var mono, boot unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil {
		return 0, false
	}
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil {
		return 0, false
	}
	return boot.Nano() - mono.Nano(), true
}

// Boottime returns CLOCK_BOOTTIME in nanoseconds: time since boot,
// including time suspended, the same in every process of the host. ok is
// false where the clock cannot be read.
func Boottime() (ns int64, ok bool) {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0, false
	}
	return ts.Nano(), true
}

// bootIDPath is where Linux publishes the boot id.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID returns the host's boot id, a random UUID drawn at each boot
// (Linux /proc/sys/kernel/random/boot_id), or "" where it cannot be read.
// Boottime readings compare only under the same boot id.
func BootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
