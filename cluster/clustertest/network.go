package clustertest

import (
	"errors"
	"io"
	"sync"
)

// ErrPartitioned is the error of every call the Network cuts: a raft RPC, a
// gossip dial, a link dial, Send or Recv.
var ErrPartitioned = errors.New("clustertest: partitioned")

// Network decides which harness nodes can reach which, for all three paths
// between them: raft RPCs, memberlist gossip and node-to-node links. Each
// path's transport is wrapped (WrapRaft, WrapGossip, WrapLinks) and asks the
// Network on every RPC, packet, dial, Send and Recv, so the three always
// agree on who can reach whom. A cut is symmetric: the wrappers of both
// nodes refuse. Partition also closes the gossip streams and links already
// open across the cut.
//
// A Network starts healed. It is safe for concurrent use.
type Network struct {
	mu    sync.Mutex
	group map[string]int            // node id → partition group; nil when healed
	addrs map[string]string         // an address of a node → its id
	conns map[*trackedConn]struct{} // open connections, closed when cut
}

// trackedConn is an open connection from one node to another.
type trackedConn struct {
	from, to string
	local    string // the dialer's local address (gossip streams), else ""
	c        io.Closer
}

// NewNetwork returns a healed Network.
func NewNetwork() *Network {
	return &Network{addrs: map[string]string{}, conns: map[*trackedConn]struct{}{}}
}

// AddAddr records that addr (host:port: raft, gossip or link address) is
// node id's, so that packets and dials to or from it are attributed to id.
func (n *Network) AddAddr(id string, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		n.addrs[a] = id
	}
}

// idOf returns the node an address belongs to, "" when unknown.
func (n *Network) idOf(addr string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs[addr]
}

// Partition splits the nodes into groups: a node can reach only the nodes of
// its own group. Nodes listed in no group form one more group together. It
// replaces any previous partition.
func (n *Network) Partition(groups ...[]string) {
	g := map[string]int{}
	for i, ids := range groups {
		for _, id := range ids {
			g[id] = i + 1
		}
	}
	n.mu.Lock()
	n.group = g
	var cut []io.Closer
	for tc := range n.conns {
		if n.cutLocked(tc.from, tc.to) {
			cut = append(cut, tc.c)
		}
	}
	n.mu.Unlock()
	for _, c := range cut {
		_ = c.Close()
	}
}

// Isolate cuts node id off from every other node (which still reach each
// other).
func (n *Network) Isolate(id string) { n.Partition([]string{id}) }

// Heal ends the partition: every node reaches every other again.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = nil
}

// Cut reports whether nodes a and b are on different sides of the
// partition. An unknown node ("") is never cut off.
func (n *Network) Cut(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cutLocked(a, b)
}

func (n *Network) cutLocked(a, b string) bool {
	if n.group == nil || a == "" || b == "" || a == b {
		return false
	}
	return n.group[a] != n.group[b] // unlisted nodes are in group 0 together
}

// track records an open connection from → to, closed if a partition cuts
// them apart; the returned function forgets it.
func (n *Network) track(from, to, local string, c io.Closer) (untrack func()) {
	tc := &trackedConn{from: from, to: to, local: local, c: c}
	n.mu.Lock()
	n.conns[tc] = struct{}{}
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		delete(n.conns, tc)
		n.mu.Unlock()
	}
}

// dialerOf returns the node that dialed the connection whose dialing end
// has local address addr ("" when unknown).
func (n *Network) dialerOf(addr string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for tc := range n.conns {
		if tc.local == addr {
			return tc.from
		}
	}
	return ""
}
