//go:build linux

package chaos

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the instance when the driver re-executes the test binary
// (EnvInstance is set), and otherwise the tests, checking that no goroutine
// of the driver outlives them.
func TestMain(m *testing.M) {
	if os.Getenv(EnvInstance) != "" && len(os.Args) > 1 && os.Args[1] == "instance" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
