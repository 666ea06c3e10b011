//go:build !linux

package hostclock

func bootOffset() (int64, bool) { return 0, false }

// Boottime is not available outside Linux: ok is false.
func Boottime() (ns int64, ok bool) { return 0, false }

// BootID is not available outside Linux: it returns "".
func BootID() string { return "" }
