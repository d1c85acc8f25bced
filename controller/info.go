package controller

import "time"

// ChannelInfo describes one registered channel, for the management API and
// listeners. Registry fields come from the replicated state (the same on every
// node); the live fields (LastHealthyAt, InFlight) are known only to the node
// holding the channel and are zero elsewhere (Local false).
type ChannelInfo struct {
	ID           string            `json:"id"`
	TargetID     string            `json:"targetId"`
	ConnectorID  string            `json:"connectorId"`
	NodeID       string            `json:"node"`
	Active       bool              `json:"active"`
	Primary      bool              `json:"primary"`
	Epoch        uint64            `json:"epoch"`
	RegisteredAt time.Time         `json:"registeredAt"`
	Metadata     map[string]string `json:"metadata,omitempty"`

	Local         bool      `json:"local"`
	LastHealthyAt time.Time `json:"lastHealthyAt,omitzero"`
	InFlight      int       `json:"inFlight"`
	RemoteAddr    string    `json:"remoteAddr,omitempty"`
}

// TargetInfo describes a target: its channels (oldest first) and its primary.
type TargetInfo struct {
	ID        string        `json:"id"`
	PrimaryID string        `json:"primaryChannelId,omitempty"`
	Epoch     uint64        `json:"epoch"`
	Channels  []ChannelInfo `json:"channels"`
}

// ClusterInfo describes the cluster as this node sees it.
type ClusterInfo struct {
	NodeID   string       `json:"nodeId"`
	LeaderID string       `json:"leaderId"`
	State    string       `json:"state"` // this node's raft state: "Leader", "Follower", … ("Leader" when standalone)
	Members  []MemberInfo `json:"members"`

	// Raft figures of this node (zero when standalone): the current term,
	// the last index known committed, the last index applied to this
	// node's replica, and when it last heard from the leader (zero on the
	// leader, and on a node that never heard from one).
	Term         uint64    `json:"term"`
	CommitIndex  uint64    `json:"commitIndex"`
	AppliedIndex uint64    `json:"appliedIndex"`
	LastContact  time.Time `json:"lastContact,omitzero"`
}

// MemberInfo is one node of the cluster.
type MemberInfo struct {
	NodeID  string `json:"nodeId"`
	Address string `json:"address"` // gossip address ("" when the node does not gossip: a single node)
	State   string `json:"state"`   // gossip state: "alive", "dead", "left"; "unknown" for a raft server the gossip does not know
	Leader  bool   `json:"leader"`

	// Suffrage is the node's place in the raft configuration: "voter",
	// "nonvoter", "staging", or "none" (not in it).
	Suffrage    string `json:"suffrage"`
	RaftAddress string `json:"raftAddress"`
	GRPCAddress string `json:"grpcAddress"`
}

// EventKind names a listener event.
type EventKind string

// Listener event kinds.
const (
	EventChannelRegistered   EventKind = "channel_registered"
	EventChannelUnregistered EventKind = "channel_unregistered"
	EventPrimaryElected      EventKind = "primary_elected"
	EventPrimaryEvicted      EventKind = "primary_evicted"
	// EventIsolated: this node lost contact with the cluster's leader for
	// longer than Config.IsolationTimeout and sent its connectors away;
	// EventRejoined: it hears the leader again and accepts connectors.
	EventIsolated EventKind = "node_isolated"
	EventRejoined EventKind = "node_rejoined"
	// EventChannelMoved: rebalancing asked this node's channel to reconnect
	// elsewhere (a node joined and this one held more than its share).
	EventChannelMoved EventKind = "channel_moved"
)

// Event is delivered to listeners (Config.OnEvent) on every node, in order.
type Event struct {
	Kind      EventKind
	TargetID  string
	ChannelID string
	NodeID    string
	Epoch     uint64
}
