//go:build race

package childproc

// raceEnabled: this test binary, and so the supervisor it runs as, is built
// with -race, which makes every pass over /proc several times slower.
const raceEnabled = true
