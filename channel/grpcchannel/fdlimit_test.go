//go:build unix

package grpcchannel_test

import (
	"testing"

	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// The default cap on connections leaves a reserve of max(256, 5 %) of the
// file descriptors, half of them in a process allowed 512 or fewer, and is
// what DefaultServerLimits gives for this process's limit.
func TestConnectionCapForFDLimit(t *testing.T) {
	for nofile, want := range map[uint64]int{
		20000:   19000,
		1024:    768,
		4096:    3840,
		10000:   9500,
		1048576: 996148,
		512:     256,
		300:     150,
		1:       1,
		0:       1,
		1 << 62: 2040109465, // clamped to MaxInt32 first
	} {
		if got := grpcchannel.ConnectionCapForFDLimit(nofile); got != want {
			t.Errorf("ConnectionCapForFDLimit(%d) = %d, want %d", nofile, got, want)
		}
	}
	n, ok := grpcchannel.FDLimit()
	if !ok {
		t.Fatal("FDLimit() found no limit on a Unix system")
	}
	if got, want := grpcchannel.DefaultServerLimits().MaxConnections, grpcchannel.ConnectionCapForFDLimit(n); got != want {
		t.Errorf("DefaultServerLimits().MaxConnections = %d, want %d (fd limit %d)", got, want, n)
	}
}
