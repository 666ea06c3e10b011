//go:build !race

package childproc

// raceEnabled: see race_on_test.go.
const raceEnabled = false
