package cluster

import (
	"os"

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

// BoltHighWater returns the page size of the bbolt file at path and the byte
// its pages reach (its high-water mark), as Open's check reads them.
func BoltHighWater(path string) (pageSize int, end int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	m, err := readBoltMeta(f, fi.Size())
	if err != nil {
		return 0, 0, err
	}
	return int(m.pageSize), int64(m.pgid) * int64(m.pageSize), nil
}

// OverrideTimings is the merge of ClusterConfig.GossipTimings over the
// membership defaults.
var OverrideTimings = overrideTimings
