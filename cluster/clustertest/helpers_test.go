package clustertest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests. Nothing is ignored,
// but memberlist's Shutdown does not wait for its goroutines (a probe in
// flight waits for its ack timer), which can outlast goleak's own retries:
// the check is retried for up to leakWait, as cluster/membership's is.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := findLeaks(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakWait bounds how long the leak check waits for memberlist's goroutines.
const leakWait = 10 * time.Second

func findLeaks() error {
	deadline := time.Now().Add(leakWait)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}
