//go:build linux && race

package chaos

// raceEnabled: this test binary, and so every process of its runs, is
// built with -race.
const raceEnabled = true
