package cluster_test

import (
	"context"
	"testing"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// TestConformance runs the cluster seam's suite on a single raft node, the
// twin of standalone.Cluster, and on a follower of a three-node cluster,
// whose applies go through the leader and whose forwards cross a link; and
// again on three nodes whose links deliver forwarded commands through
// HandleForwardAsync (asyncNode).
func TestConformance(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		clustertest.Run(t, func(t *testing.T) []clustertest.Cluster {
			return []clustertest.Cluster{open(t, testConfig(t, t.TempDir()))}
		})
	})
	three := func(wrap func(*cluster.Node) clustertest.Cluster) func(t *testing.T) {
		return func(t *testing.T) {
			clustertest.Run(t, func(t *testing.T) []clustertest.Cluster {
				h := clustertest.NewHarness(t, 3, testLogger(t))
				var out []clustertest.Cluster
				for _, m := range h.Followers() {
					out = append(out, wrap(m.Node()))
				}
				return append(out, wrap(h.Leader().Node()))
			})
		}
	}
	t.Run("three", three(func(n *cluster.Node) clustertest.Cluster { return n }))
	t.Run("three-async", three(func(n *cluster.Node) clustertest.Cluster { return asyncNode{n} }))
}

// asyncNode is a Node whose HandleForward sets its handler for both of the
// Node's receiving sides: HandleForward's, and HandleForwardAsync's, which
// the links use (the latter runs it on a goroutine of its own, within the
// command's Timeout, and gives done what it returns). So the suite's
// forwards cross the links' asynchronous path, as a controller's do.
type asyncNode struct{ *cluster.Node }

func (a asyncNode) HandleForward(h func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error)) {
	a.Node.HandleForward(h)
	a.Node.HandleForwardAsync(func(ctx context.Context, ch state.ChannelID, cmd *command.Command, done func(*command.Reply, error)) {
		go func() {
			if cmd.Timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, cmd.Timeout)
				defer cancel()
			}
			done(h(ctx, ch, cmd))
		}()
	})
}
