//go:build !linux

package trace

import "time"

// mono falls back to this process's monotonic clock: marks of several
// processes do not compare.
func mono() int64 { return int64(time.Since(since)) }

// since is the process's time reference for the fallback clock.
var since = time.Now()
