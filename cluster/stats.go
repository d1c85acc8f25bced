package cluster

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exchangekit/exchange/cluster/membership"
)

// Stats describes a node and its raft cluster as this node sees it, for the
// management API (GET /exchange/cluster) and operators.
type Stats struct {
	NodeID   string `json:"nodeId"`
	RaftAddr string `json:"raftAddr"`
	// State is this node's raft state: "Leader", "Follower", "Candidate"
	// or "Shutdown".
	State         string `json:"state"`
	LeaderID      string `json:"leaderId"`
	LeaderAddress string `json:"leaderAddress"`
	Term          uint64 `json:"term"`
	// LastIndex is the last index in the log; CommitIndex the last one known
	// committed; AppliedIndex the last one applied to this node's state;
	// LastSnapshotIndex the index of the newest snapshot (0: none).
	LastIndex         uint64 `json:"lastIndex"`
	CommitIndex       uint64 `json:"commitIndex"`
	AppliedIndex      uint64 `json:"appliedIndex"`
	LastSnapshotIndex uint64 `json:"lastSnapshotIndex"`
	// LastContact is when this node last heard from the leader: zero on the
	// leader itself and on a node that never heard from one.
	LastContact time.Time `json:"lastContact,omitzero"`
	// LogWrites counts the raft log's disk writes (each one bbolt
	// transaction, one fsync) since Open, and LogEntries the entries they
	// carried: LogEntries/LogWrites is how well raft groups concurrent
	// Applies.
	LogWrites  uint64 `json:"logWrites"`
	LogEntries uint64 `json:"logEntries"`
	// Members are the servers of the raft configuration and the nodes the
	// gossip knows, one entry per node id, sorted by it.
	Members []Member `json:"members"`
}

// Member is one node of the cluster: a server of the raft configuration, a
// node the gossip knows, or both.
type Member struct {
	NodeID string `json:"nodeId"`
	// Address is the node's raft address, from the raft configuration, else
	// from its gossiped metadata.
	Address string `json:"address"`
	// Suffrage is "Voter", "Nonvoter" or "Staging"; "" when the node is not
	// in the raft configuration (a node the gossip knows that the leader has
	// not added yet, or one it removed).
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// GossipAddr is the node's gossip address, GossipState its state there
	// ("alive", "dead", "left"), and GRPCAddr its gossiped gRPC address:
	// all empty for a node the gossip does not know, and on a node that does
	// not gossip (a single node).
	GossipAddr  string `json:"gossipAddr,omitempty"`
	GossipState string `json:"gossipState,omitempty"`
	GRPCAddr    string `json:"grpcAddr,omitempty"`
}

// Stats returns the node's current figures. It does not block on raft.
func (n *Node) Stats() Stats {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	rs := n.raft.Stats()
	st := Stats{
		NodeID:            n.id,
		RaftAddr:          string(n.trans.LocalAddr()),
		State:             n.raft.State().String(),
		LeaderID:          string(leaderID),
		LeaderAddress:     string(leaderAddr),
		Term:              n.raft.CurrentTerm(),
		LastIndex:         n.raft.LastIndex(),
		CommitIndex:       parseUint(rs["commit_index"]),
		AppliedIndex:      n.raft.AppliedIndex(),
		LastSnapshotIndex: parseUint(rs["last_snapshot_index"]),
		LogWrites:         n.logs.writes.Load(),
		LogEntries:        n.logs.entries.Load(),
	}
	if n.raft.State() != raft.Leader {
		st.LastContact = n.raft.LastContact()
	}
	var servers []raft.Server
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		servers = f.Configuration().Servers
	}
	var gossip []membership.Member
	if n.members != nil {
		gossip = n.members.Members()
	}
	st.Members = mergeMembers(string(leaderID), servers, gossip)
	return st
}

// mergeMembers joins the raft configuration and the gossip's members by node
// id, sorted by it.
func mergeMembers(leader string, servers []raft.Server, gossip []membership.Member) []Member {
	byID := map[string]*Member{}
	var order []string
	get := func(id string) *Member {
		m, ok := byID[id]
		if !ok {
			m = &Member{NodeID: id, Leader: id == leader && leader != ""}
			byID[id] = m
			order = append(order, id)
		}
		return m
	}
	for _, s := range servers {
		m := get(string(s.ID))
		m.Address, m.Suffrage = string(s.Address), s.Suffrage.String()
	}
	for _, g := range gossip {
		if g.Meta.NodeID == "" {
			continue
		}
		m := get(g.Meta.NodeID)
		m.GossipAddr, m.GossipState, m.GRPCAddr = g.Addr, g.State.String(), g.Meta.GRPCAddr
		if m.Address == "" {
			m.Address = g.Meta.RaftAddr
		}
	}
	out := make([]Member, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}
