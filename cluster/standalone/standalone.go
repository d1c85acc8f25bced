// Package standalone is the one-process twin of the cluster: the replicated
// state in memory (a state.Replica), a node that is always the leader, and
// forwarding that never leaves the process. It is what an embedded
// controller, `exchange controller --in-memory` and most tests run on; the
// raft-backed cluster.Node is its twin, and cluster/clustertest checks both
// with one suite.
package standalone

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// ErrClosed is returned by the methods of a closed Cluster. It is also
// state.ErrClosed.
var ErrClosed error = state.ClosedError("standalone: closed")

// Cluster is a cluster of one node, in memory. It is safe for concurrent
// use. Embed it to wrap one of its methods (tests inject faults that way).
type Cluster struct {
	id  string
	mem *state.Memory

	mu      sync.Mutex
	forward func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error)
	closed  bool

	life context.Context    // ends with Close: ends every leadership term
	end  context.CancelFunc // ends life
}

// New returns a one-node cluster whose node is nodeID; an empty nodeID is the
// host name with a random suffix (the state lives and dies with the process,
// so the id need not be stable).
func New(nodeID string) *Cluster {
	if nodeID == "" {
		nodeID = defaultNodeID()
	}
	life, end := context.WithCancel(context.Background())
	return &Cluster{id: nodeID, mem: state.NewMemory(), life: life, end: end}
}

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// NodeID returns this node's id.
func (c *Cluster) NodeID() string { return c.id }

// Apply applies ops in order and returns one Result per op; see
// state.Memory.Apply. After Close it fails with ErrClosed.
func (c *Cluster) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	return c.mem.Apply(ctx, ops...)
}

// View calls fn with the state.
func (c *Cluster) View(fn func(*state.State)) { c.mem.View(fn) }

// Subscribe calls fn with the events of every Apply, in order.
func (c *Cluster) Subscribe(fn func([]state.Event)) (cancel func()) { return c.mem.Subscribe(fn) }

// Forward delivers cmd to the local handler set by HandleForward when to is
// this node (a cluster of one has no other): the same path a command
// forwarded by another node takes. Any other node is unknown: the error wraps
// state.ErrNodeUnavailable.
func (c *Cluster) Forward(ctx context.Context, to state.NodeID, ch state.ChannelID, cmd *command.Command) (*command.Reply, error) {
	c.mu.Lock()
	h, closed := c.forward, c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return nil, fmt.Errorf("standalone: forward to node %s: %w", to, ErrClosed)
	case string(to) != c.id:
		return nil, fmt.Errorf("standalone: forward to node %s: not a member of this one-node cluster: %w", to, state.ErrNodeUnavailable)
	case h == nil:
		return nil, fmt.Errorf("standalone: forward to node %s: no handler: %w", to, state.ErrNodeUnavailable)
	}
	return h(ctx, ch, cmd)
}

// HandleForward sets the handler Forward delivers to.
func (c *Cluster) HandleForward(h func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error)) {
	c.mu.Lock()
	c.forward = h
	c.mu.Unlock()
}

// WhileLeader calls fn once, at once: a node alone is its leader from the
// start until Close. fn's context ends with ctx or Close. WhileLeader returns
// nil once ctx is done and fn has returned, or ErrClosed after Close.
func (c *Cluster) WhileLeader(ctx context.Context, fn func(ctx context.Context)) error {
	term, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.life, cancel)
	defer stop()
	if c.life.Err() == nil {
		fn(term)
	}
	<-term.Done()
	if c.life.Err() != nil {
		return ErrClosed
	}
	return nil
}

// LeaderContact returns now: a node alone always hears from its leader.
func (c *Cluster) LeaderContact() time.Time { return time.Now() }

// Ready reports whether the node serves: nil until Close.
func (c *Cluster) Ready() error {
	if c.isClosed() {
		return ErrClosed
	}
	return nil
}

// Close ends leadership (WhileLeader returns once fn has) and makes later
// calls fail with ErrClosed. It is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.end()
	return nil
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
