package cluster

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by operations on a closed Node, and by Applies
	// still waiting when it closed.
	ErrClosed = errors.New("cluster: node closed")
	// ErrNotLeader is wrapped by NotLeaderError: the node is not the raft
	// leader, so it cannot apply (forwarding to the leader comes with the
	// multi-node cluster).
	ErrNotLeader = errors.New("cluster: not the raft leader")
	// ErrLeadershipLost is returned by an Apply whose entry was appended to
	// the log but whose node lost leadership before the entry committed: the
	// outcome is unknown, the entry may still commit under the next leader.
	ErrLeadershipLost = errors.New("cluster: leadership lost, outcome unknown")
	// ErrBadEntry reports a raft log entry this node cannot decode (an
	// unknown envelope version, or corrupt JSON). Every node rejects it the
	// same way, so the state stays identical.
	ErrBadEntry = errors.New("cluster: undecodable log entry")
	// ErrNodeIDMismatch is returned by Open when the data directory belongs
	// to another node id.
	ErrNodeIDMismatch = errors.New("cluster: data directory belongs to another node")
	// ErrInvalidConfig is wrapped by Config.Validate errors.
	ErrInvalidConfig = errors.New("cluster: invalid config")
)

// NotLeaderError is returned by Apply on a node that is not the raft leader.
// It wraps ErrNotLeader and names the leader when one is known, so that a
// caller (later: the forwarding layer) can send the ops there.
type NotLeaderError struct {
	// LeaderID and LeaderAddress are the current leader's node id and raft
	// address, empty when no leader is known (an election is under way).
	LeaderID      string
	LeaderAddress string
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "cluster: not the raft leader (no leader known)"
	}
	return fmt.Sprintf("cluster: not the raft leader (leader is %s at %s)", e.LeaderID, e.LeaderAddress)
}

// Unwrap returns ErrNotLeader.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
