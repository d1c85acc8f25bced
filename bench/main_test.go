package bench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the tests with a goroutine leak check, or, when started by
// the memory pair as its child process (envIdleClient set), the idle
// clients instead.
func TestMain(m *testing.M) {
	if kind := os.Getenv(envIdleClient); kind != "" {
		os.Exit(idleClientMain(kind))
	}
	goleak.VerifyTestMain(m)
}
