//go:build linux

package chaos

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the instance (or runner, or runner's child) when the driver
// re-executes the test binary (EnvInstance is set), and otherwise the tests, checking that no goroutine
// of the driver outlives them.
func TestMain(m *testing.M) {
	if os.Getenv(EnvInstance) != "" && os.Getenv(envRaceOnPurpose) != "" {
		raceOnPurpose()
	}
	RunIfInstance()
	goleak.VerifyTestMain(m)
}

// envRaceOnPurpose, set for a run, has each of its processes commit a data
// race at its start (TestRaceInAnInstanceIsAViolation).
const envRaceOnPurpose = "MJCHAOS_TEST_RACE_ON_PURPOSE"

// raceOnPurpose writes one variable from two goroutines, unordered: a data
// race for a binary built with -race to report.
func raceOnPurpose() {
	var x int
	done := make(chan struct{})
	go func() {
		x = 1
		close(done)
	}()
	x = 2
	<-done
	_ = x
}
