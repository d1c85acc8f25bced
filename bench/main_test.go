package bench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the tests with a goroutine leak check, or, when started by
// the memory pair as one of its child processes, the server measured
// (envIdleServer set) or its idle clients (envIdleClient set) instead.
func TestMain(m *testing.M) {
	if kind := os.Getenv(envIdleServer); kind != "" {
		os.Exit(idleServerMain(kind))
	}
	if kind := os.Getenv(envIdleClient); kind != "" {
		os.Exit(idleClientMain(kind))
	}
	goleak.VerifyTestMain(m)
}
