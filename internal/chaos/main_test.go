//go:build linux

package chaos

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the instance (or runner, or runner's child) when the driver
// re-executes the test binary (EnvInstance is set), and otherwise the tests, checking that no goroutine
// of the driver outlives them.
func TestMain(m *testing.M) {
	RunIfInstance()
	goleak.VerifyTestMain(m)
}
