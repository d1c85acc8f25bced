package controller

import (
	"context"
	"time"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// Cluster is the cluster this controller node belongs to, as the controller
// needs it: the one seam between the controller and the replicated state. It
// has two twins, checked by one conformance suite (cluster/clustertest):
// standalone.Cluster (one process, state in memory) and cluster.Node (raft
// on disk, memberlist, node-to-node links); a single node is the degenerate
// case of a cluster, not a different code path.
type Cluster interface {
	// NodeID is this node's id: the NodeID of the channels it registers, and
	// the address other nodes forward its channels' commands to.
	NodeID() string

	// Store is the replicated state as seen from this node (defined once,
	// in package state): Apply applies ops, in order, as one change of the
	// replicated state (through the leader, on a raft cluster) and returns
	// once they are applied on this node, with one state.Result per op
	// (plain data; every op is attempted; the error is for the call as a
	// whole, after which the outcome is unknown, so callers retry ops that
	// are safe to apply twice); View reads this node's replica (reads never
	// leave the node); Subscribe delivers every change of the replica, in
	// order, with the replica locked (fn must not block or call back).
	state.Store

	// Forward sends cmd to channel ch, held by node to, in one hop, and
	// returns its reply, with ctx's deadline carried to that node. Its errors
	// are those of a local send (channel closed, timeout, busy with
	// retry-after, remote handler error, unknown command), or wrap
	// state.ErrNodeUnavailable when the node cannot be reached.
	Forward(ctx context.Context, to state.NodeID, ch state.ChannelID, cmd *command.Command) (*command.Reply, error)
	// HandleForward sets the receiving side of Forward: h delivers a command
	// that another node forwarded to the local channel ch. h never forwards
	// again: one hop, never two. The reply h returns is the cluster's to
	// send on and may be modified there: h must not keep it.
	HandleForward(h func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error))

	// WhileLeader calls fn each time this node becomes the leader, with a
	// context that ends when it stops leading or ctx ends, waits for fn to
	// return, and returns when ctx is done. A standalone node leads from the
	// start. Only the leader runs batches.
	WhileLeader(ctx context.Context, fn func(ctx context.Context)) error
	// LeaderContact returns when this node last heard from the cluster's
	// leader: now when it leads (or stands alone), the zero time when it
	// never has. A node cut off from the leader for longer than
	// Config.IsolationTimeout sends its connectors away (GOOD_BYE with
	// reconnect) so they move to the healthy side.
	LeaderContact() time.Time
}
