//go:build !linux

package sqlitelock

// Writer reports no holder: naming it needs Linux's /proc.
func Writer(dbPath string) (Holder, bool) { return Holder{}, false }
