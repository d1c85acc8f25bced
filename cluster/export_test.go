package cluster

import (
	"github.com/hashicorp/raft"

	"github.com/exchangekit/exchange/state"
)

// White-box hooks for the black-box tests in package cluster_test.

// RaftOf returns n's raft instance.
func RaftOf(n *Node) *raft.Raft { return n.raft }

// FirstLogIndex returns the first index still in n's raft log (0: empty).
func FirstLogIndex(n *Node) (uint64, error) { return n.logs.FirstIndex() }

// RaftError maps a raft future error as Apply does.
func RaftError(n *Node, err error) error { return n.raftError(err) }

// EncodeEntry and DecodeEntry expose the log entry envelope.
var (
	EncodeEntry = encodeEntry
	DecodeEntry = decodeEntry
)

// ApplyResultError returns the joined op errors of an FSM response.
func ApplyResultError(resp any) error {
	rs, ok := resp.([]state.Result)
	if !ok {
		return nil
	}
	return resultsError(rs)
}
