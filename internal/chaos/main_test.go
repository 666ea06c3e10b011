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
	if os.Getenv(EnvInstance) != "" && len(os.Args) > 1 && isSubcommand(os.Args[1]) {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
