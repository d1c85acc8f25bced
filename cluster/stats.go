package cluster

import "strconv"

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
	// LogWrites counts the raft log's disk writes (each one bbolt
	// transaction, one fsync) since Open, and LogEntries the entries they
	// carried: LogEntries/LogWrites is how well raft groups concurrent
	// Applies.
	LogWrites  uint64 `json:"logWrites"`
	LogEntries uint64 `json:"logEntries"`
	// Members are the servers of the raft configuration.
	Members []Member `json:"members"`
}

// Member is one server of the raft configuration.
type Member struct {
	NodeID  string `json:"nodeId"`
	Address string `json:"address"`
	// Suffrage is "Voter", "Nonvoter" or "Staging".
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// Gossip is the server's state in the membership as this node sees it:
	// "alive", "dead" (failed), "left", or "unknown" (no gossip about it);
	// "alive" for a single node, which has no gossip.
	Gossip string `json:"gossip"`
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
	gossip := func(id string) string { return "alive" }
	if n.members != nil {
		states := map[string]string{}
		for _, m := range n.members.Members() {
			states[m.Meta.NodeID] = m.State.String()
		}
		gossip = func(id string) string {
			if s, ok := states[id]; ok {
				return s
			}
			return "unknown"
		}
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Members = append(st.Members, Member{
				NodeID:   string(s.ID),
				Address:  string(s.Address),
				Suffrage: s.Suffrage.String(),
				Leader:   s.ID == leaderID && leaderID != "",
				Gossip:   gossip(string(s.ID)),
			})
		}
	}
	return st
}

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}
