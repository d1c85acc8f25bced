package cluster_test

import (
	"testing"

	"github.com/exchangekit/exchange/cluster/clustertest"
)

// TestConformance runs the cluster seam's suite on a single raft node, the
// twin of standalone.Cluster, and on a follower of a three-node cluster,
// whose applies go through the leader and whose forwards cross a link.
func TestConformance(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		clustertest.Run(t, func(t *testing.T) []clustertest.Cluster {
			return []clustertest.Cluster{open(t, testConfig(t, t.TempDir()))}
		})
	})
	t.Run("three", func(t *testing.T) {
		clustertest.Run(t, func(t *testing.T) []clustertest.Cluster {
			h := clustertest.NewHarness(t, 3, testLogger(t))
			var out []clustertest.Cluster
			for _, m := range h.Followers() {
				out = append(out, m.Node())
			}
			return append(out, h.Leader().Node())
		})
	})
}
