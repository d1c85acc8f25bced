package cluster

import (
	"errors"
	"fmt"

	"github.com/exchangekit/exchange/state"
)

var (
	// ErrClosed is returned by operations on a closed Node, and by Applies
	// still waiting when it closed. It is also state.ErrClosed.
	ErrClosed error = state.ClosedError("cluster: node closed")
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

	// ErrDataDirDamaged is wrapped by every *DataDirError: Open found the
	// data directory damaged and refused to start rather than start empty
	// or crash. One of the three sentinels below says what was found.
	ErrDataDirDamaged = errors.New("cluster: damaged data directory")
	// ErrRaftLogLost: raft.db is missing, empty, or ends before what the
	// directory had reached, while the directory shows it held state (its
	// exchange-data.json marker, or snapshots).
	ErrRaftLogLost = errors.New("cluster: raft log lost")
	// ErrRaftLogCorrupt: raft.db is not a readable bbolt file (truncated,
	// overwritten, not bbolt), or an entry in it cannot be read.
	ErrRaftLogCorrupt = errors.New("cluster: raft log corrupt")
	// ErrSnapshotMissing: the raft log was compacted after a snapshot and
	// no readable snapshot covers the entries it no longer holds.
	ErrSnapshotMissing = errors.New("cluster: snapshot missing")
)

// DataDirError is returned by Open when the data directory is damaged. It
// names the damaged file and how to recover, and wraps ErrDataDirDamaged,
// Kind (ErrRaftLogLost, ErrRaftLogCorrupt or ErrSnapshotMissing) and the
// underlying error, if any, for errors.Is and errors.As.
type DataDirError struct {
	// Path is the damaged file or directory.
	Path string
	// Kind is one of the sentinels above; nil for other damage (an
	// unreadable exchange-data.json).
	Kind error
	// Problem says what is wrong, in words; Recovery what to do about it.
	Problem  string
	Recovery string
	// Err is the underlying error, nil when there is none.
	Err error
}

// Error implements error.
func (e *DataDirError) Error() string {
	msg := "cluster: damaged data directory: " + e.Path + ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + ". To recover: " + e.Recovery
}

// Unwrap returns ErrDataDirDamaged, Kind and Err (those that are set).
func (e *DataDirError) Unwrap() []error {
	errs := []error{ErrDataDirDamaged}
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

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
