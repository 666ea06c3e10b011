//go:build !linux

package cpuprio

// Lower does nothing outside Linux.
func Lower() {}
