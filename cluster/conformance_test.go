package cluster_test

import (
	"testing"

	"github.com/exchangekit/exchange/cluster/clustertest"
)

// TestConformance runs the cluster seam's suite on a single raft node: the
// twin of standalone.Cluster.
func TestConformance(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) clustertest.Cluster {
		return open(t, testConfig(t, t.TempDir()))
	})
}
