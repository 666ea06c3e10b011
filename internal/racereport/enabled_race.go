//go:build race

package racereport

// Enabled reports whether this binary, and so every child process that
// re-executes it, is built with the race detector.
const Enabled = true
