package membership

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// MetaMaxSize is the largest encoded Meta memberlist carries (its
// MetaMaxSize).
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is what a node tells the others about itself through memberlist's node
// metadata: who it is and where its raft and gRPC endpoints are. It is
// gossiped with every alive message, so it is kept small: encoded, it must fit
// MetaMaxSize bytes.
type Meta struct {
	// NodeID is the node's stable identity, also its memberlist name and its
	// raft server id.
	NodeID string
	// RaftAddr is the advertised address of the node's raft transport.
	RaftAddr string
	// GRPCAddr is the advertised address of the node's gRPC server
	// (connectors and node-to-node forwarding).
	GRPCAddr string
	// Incarnation distinguishes runs of one node: a new value per process
	// start, so a restarted node is told apart from the run that failed even
	// when the failure and the rejoin were coalesced into one event.
	Incarnation string
	// Version is the node's protocol version (for rolling upgrades).
	Version int
}

// wireMeta is Meta's compact JSON form.
type wireMeta struct {
	NodeID      string `json:"id"`
	RaftAddr    string `json:"raft,omitempty"`
	GRPCAddr    string `json:"grpc,omitempty"`
	Incarnation string `json:"inc,omitempty"`
	Version     int    `json:"v,omitempty"`
	// Leaving is set by Leave just before memberlist's leave message, so
	// that the others can tell a graceful leave from a failure: memberlist
	// v0.6.0 does not fill in memberlist.Node.State, so its leave
	// notification looks the same for both.
	Leaving bool `json:"bye,omitempty"`
}

// encodeMeta encodes m, failing with ErrMetaTooLarge when it does not fit
// (with room for the leaving flag).
func encodeMeta(m Meta) ([]byte, error) {
	w := wireMeta{NodeID: m.NodeID, RaftAddr: m.RaftAddr, GRPCAddr: m.GRPCAddr, Incarnation: m.Incarnation, Version: m.Version, Leaving: true}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("membership: encode meta: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, the limit is %d (node %q)", ErrMetaTooLarge, len(b), MetaMaxSize, m.NodeID)
	}
	w.Leaving = false
	return json.Marshal(w)
}

// encodeLeaving encodes m with the leaving flag; m fits (encodeMeta checked).
func encodeLeaving(m Meta) []byte {
	b, _ := json.Marshal(wireMeta{NodeID: m.NodeID, RaftAddr: m.RaftAddr, GRPCAddr: m.GRPCAddr, Incarnation: m.Incarnation, Version: m.Version, Leaving: true})
	return b
}

// decodeMeta decodes a node's metadata and its leaving flag.
func decodeMeta(b []byte) (Meta, bool, error) {
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, false, fmt.Errorf("membership: decode meta: %w", err)
	}
	return Meta{NodeID: w.NodeID, RaftAddr: w.RaftAddr, GRPCAddr: w.GRPCAddr, Incarnation: w.Incarnation, Version: w.Version}, w.Leaving, nil
}
