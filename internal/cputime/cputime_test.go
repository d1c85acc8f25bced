//go:build unix

package cputime_test

import (
	"testing"
	"time"

	"github.com/exchangekit/exchange/internal/cputime"
)

// TestSelfCountsWork spins until the process has used at least 20 ms of CPU
// by its own count: Self must move with work (bounded by a 10 s deadline).
func TestSelfCountsWork(t *testing.T) {
	start := cputime.Self()
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for cputime.Self()-start < 20*time.Millisecond {
		for i := range 1_000_000 {
			x += i
		}
		if time.Now().After(deadline) {
			t.Fatalf("Self moved %v in 10 s of spinning, want ≥ 20ms", cputime.Self()-start)
		}
	}
	_ = x
}
