// Package cluster keeps Exchange's replicated state (package state: the
// channel registry, the primary of each target with its epoch, the batches)
// durable and, later, replicated across controller nodes, with
// hashicorp/raft. A Node is the raft-backed twin of state.Memory: the
// controller consumes either through the same three methods, Apply, View and
// Subscribe, with the same contracts.
//
// Today a Node runs a single-voter raft cluster: the full raft machinery
// (log, snapshots, elections, TCP transport) with one member. That is the
// exact code path a multi-node cluster uses; see "Multi-node" below.
//
// # Usage
//
//  1. cfg := cluster.DefaultConfig(); set DataDir, RaftAddr (and NodeID, or
//     let the data directory remember one).
//  2. n, err := cluster.Open(ctx, cfg): opens the directory, bootstraps a
//     one-voter cluster on first start, and returns once the node leads and
//     its state has caught up with the whole log (1-2 HeartbeatTimeouts:
//     about 225 ms with the default 150 ms).
//  3. n.Subscribe(fn), n.View(fn) to read; n.Apply(ctx, ops...) to change
//     the state. Each Apply is one raft log entry holding all its ops.
//  4. n.Close(): waits for pending Applies, stops raft, closes the files.
//     Close loses nothing: the next Open finds every acknowledged Apply.
//
// # Durability
//
// An Apply that returned nil is on disk: raft appended its entry to the log
// in bbolt, which fsyncs every write transaction, before it committed and
// applied the entry, and Apply waits for that. The state survives Close,
// kill -9 and power loss (as far as the disk honours fsync), and so do the
// primaries' epochs: fencing tokens never go backwards across restarts. An Apply that returned a ctx error (or
// ErrLeadershipLost) may or may not have been applied.
//
// Concurrent Applies are grouped: while the leader writes one group to disk
// the next queues up, and goes to disk in one write (up to
// Config.MaxAppendEntries entries). On the shared 2-core reference machine
// (BenchmarkApply): 1.5-2.8k Applies/s one at a time, 20-38k/s from 256
// goroutines (about 50 entries per fsync), depending on the load. Put many
// ops in one Apply, or Apply concurrently; never Apply one at a time on a
// hot path.
//
// # Data directory
//
//	DataDir/
//	  node-id                 the node id this directory belongs to
//	  exchange-data.json      marker: the directory holds raft state (format,
//	                          node id, created-at, applied index at last
//	                          Open/Close)
//	  raft.db                 bbolt (raft-boltdb/v2): the raft log and the
//	                          stable store (current term, last vote)
//	  snapshots/<term>-<index>-<ms>/
//	    meta.json             raft's snapshot metadata (index, term, servers)
//	    state.bin             "exchange-state v1\n" + the state's JSON
//
// raft snapshots the state every SnapshotThreshold entries (checked every
// SnapshotInterval), keeps RetainSnapshots snapshots and TrailingLogs
// entries after the newest. Open restores the newest snapshot, then replays
// the log after it: the state is the same as replaying every op from the
// start (the tests check exactly that). A second process opening the same
// directory fails after a second (bbolt's file lock); opening it with
// another node id fails with ErrNodeIDMismatch.
//
// Open never starts a damaged directory as a new, empty node, and never lets
// raft or bbolt panic on one: before raft sees the directory it checks that
// raft.db is whole (meta pages, length, a read of every page and bbolt's
// consistency check), that it holds state when exchange-data.json or a
// snapshot says it did, that the log reaches back to the newest readable
// snapshot and every entry after it reads, and that log and snapshots reach
// the applied index the marker recorded. A failed check is a *DataDirError
// (errors.Is ErrDataDirDamaged and one of ErrRaftLogLost, ErrRaftLogCorrupt,
// ErrSnapshotMissing) naming the file and the recovery; see
// docs/operations.md. The checks read raft.db once more than raft does.
//
// Each log entry is a versioned JSON envelope {"v":1,"ops":[...]} of
// state.Op values. A node that meets an envelope version it does not know
// rejects the entry (ErrBadEntry) without applying any of it, the same way
// on every node, so the states cannot diverge: upgrade every node before
// any node writes a new version.
//
// # Events
//
// Subscribers are called on raft's FSM goroutine with the events of each
// applied entry, in log order, on every node, with the state locked: they
// must be fast and must not block or call into the Node. When a snapshot
// replaces the state while the node runs (a follower catching up from the
// leader's snapshot, an operator restore), they get one state.StateRestored
// event and should rebuild what they derive from the state with View.
//
// # Goroutines
//
// raft runs its own goroutines (main loop, FSM, snapshots, transport
// listener and connections); Close stops them with raft's Shutdown and waits.
// Apply, Snapshot and Open's barrier wait for their raft future on one
// goroutine each (raft futures cannot be waited on with a ctx); the caller
// returns when its ctx ends, the goroutine when raft answers, and Close waits
// for those goroutines before shutting raft down, because raft leaves
// futures queued at shutdown unanswered.
//
// # Multi-node
//
// A later change adds, without changing this API: hashicorp/memberlist for
// membership (the leader turns memberlist joins and deaths into raft
// AddVoter/RemoveServer), forwarding of Apply from followers to the leader
// over the node-to-node gRPC connection (NotLeaderError names the leader; the
// FSM's response is already plain data, []state.Result, ready to be encoded),
// and a follower-side Open that waits until it has caught up with the
// leader's commit index instead of for leadership. The raft configuration
// already carries each node's advertised address, updated when a node comes
// back on a new one (RaftAdvertiseAddr).
package cluster
