package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/exchangekit/exchange/state"
)

// ErrBadSnapshot is returned by Restore for data that is not a snapshot this
// code can read (see docs/decisions/0017-backup-and-restore.md).
var ErrBadSnapshot = errors.New("cluster: not a valid exchange state snapshot")

// CheckSnapshot reports whether data is a snapshot Restore can read: nil,
// or an error wrapping ErrBadSnapshot.
func CheckSnapshot(data []byte) error {
	if _, err := decodeSnapshot(data); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return nil
}

// SnapshotMeta describes a snapshot of the replicated state.
type SnapshotMeta struct {
	// ID is raft's snapshot id.
	ID string
	// Index and Term are the raft index and term the snapshot covers.
	Index uint64
	Term  uint64
	// Size is the size of the snapshot data, in bytes.
	Size int64
	// NodeID is the node that took (or restored) the snapshot; Leader
	// whether it led at the time. A follower's snapshot is of its own
	// replica, as of Index: it may lag the leader's by the entries the
	// follower had not applied yet.
	NodeID string
	Leader bool
}

// OpenSnapshot takes a snapshot of this node's replica now (raft's user
// snapshot, which also compacts the log) and opens it: the reader yields
// the FSM's snapshot format, a header line "exchange-state v1\n" and the
// state's JSON, which Restore reads back. The caller must close it. It works
// on any node; a follower's snapshot is of its replica (SnapshotMeta).
//
// When nothing was applied since the last snapshot (raft refuses to take a
// new one), an empty entry is applied first, through the leader.
func (n *Node) OpenSnapshot(ctx context.Context) (SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := n.openSnapshot(ctx)
	if err != nil && (errors.Is(err, raft.ErrNothingNewToSnapshot) || strings.Contains(err.Error(), "wait until the configuration entry")) {
		// See Snapshot: an empty entry moves the FSM past the last snapshot
		// (or the configuration entry raft waits for).
		if aerr := state.Err(n.Apply(ctx, state.Op{})); aerr == nil || errors.Is(aerr, state.ErrInvalid) {
			meta, rc, err = n.openSnapshot(ctx)
		}
	}
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	return meta, rc, nil
}

// openSnapshot is one attempt of OpenSnapshot.
func (n *Node) openSnapshot(ctx context.Context) (SnapshotMeta, io.ReadCloser, error) {
	type opened struct {
		meta *raft.SnapshotMeta
		rc   io.ReadCloser
		err  error
	}
	done := make(chan opened, 1)
	leader := n.Leader()
	if !n.goFuture(func() {
		f := n.raft.Snapshot()
		if err := f.Error(); err != nil {
			done <- opened{err: err}
			return
		}
		meta, rc, err := f.Open()
		done <- opened{meta: meta, rc: rc, err: err}
	}) {
		return SnapshotMeta{}, nil, ErrClosed
	}
	select {
	case o := <-done:
		if o.err != nil {
			return SnapshotMeta{}, nil, n.raftError(o.err)
		}
		return SnapshotMeta{ID: o.meta.ID, Index: o.meta.Index, Term: o.meta.Term, Size: o.meta.Size,
			NodeID: n.id, Leader: leader}, o.rc, nil
	case <-ctx.Done():
		// The snapshot may still be opened: close it once it is.
		n.goFuture(func() {
			if o := <-done; o.rc != nil {
				_ = o.rc.Close()
			}
		})
		return SnapshotMeta{}, nil, ctx.Err()
	}
}

// SnapshotTo writes a snapshot of this node's replica to w (see
// OpenSnapshot) and returns its description.
func (n *Node) SnapshotTo(ctx context.Context, w io.Writer) (SnapshotMeta, error) {
	meta, rc, err := n.OpenSnapshot(ctx)
	if err != nil {
		return SnapshotMeta{}, err
	}
	defer rc.Close()
	written, err := io.Copy(w, rc)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("cluster: write snapshot: %w", err)
	}
	if written != meta.Size {
		return SnapshotMeta{}, fmt.Errorf("cluster: write snapshot: wrote %d of %d bytes", written, meta.Size)
	}
	return meta, nil
}

// Restore replaces the cluster's durable state with the snapshot read from r
// (data written by SnapshotTo): on the leader (elsewhere it fails with a
// *NotLeaderError), through raft's user restore, which installs it as a new
// snapshot and sends it to every follower. It returns once the restore is
// committed, with the description of the snapshot raft made of it. The
// caller bounds what r yields: Restore reads it whole, and checks it before
// raft sees it.
//
// What is restored (docs/decisions/0017-backup-and-restore.md): the
// snapshot's batches; the channel registry and the primaries stay those of
// the running cluster (channels are live connections, never in a backup);
// the registration sequence and the epoch counter become the larger of the
// snapshot's and the cluster's, so fencing tokens never go back. Into a
// fresh node, the result is the snapshot's state without its (dead) channels.
//
// Applies on this node wait while Restore reads the current state and hands
// the result to raft; Applies raft had not committed yet fail with raft's
// ErrAbortedByRestore.
func (n *Node) Restore(ctx context.Context, r io.Reader) (SnapshotMeta, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("cluster: restore: read snapshot: %w", err)
	}
	if err := CheckSnapshot(b); err != nil {
		return SnapshotMeta{}, err
	}
	for attempt := 0; ; attempt++ {
		meta, err := n.restore(ctx, b)
		if err != nil && attempt == 0 && strings.Contains(err.Error(), "wait until the configuration entry") {
			// As in Snapshot: raft restores only once the latest
			// configuration entry is applied; an empty entry gets it there.
			if aerr := state.Err(n.Apply(ctx, state.Op{})); aerr == nil || errors.Is(aerr, state.ErrInvalid) {
				continue
			}
		}
		if err != nil {
			return SnapshotMeta{}, fmt.Errorf("cluster: restore: %w", err)
		}
		return meta, nil
	}
}

// restore is one attempt of Restore of b, a checked snapshot.
func (n *Node) restore(ctx context.Context, b []byte) (SnapshotMeta, error) {
	if n.raft.State() != raft.Leader {
		return SnapshotMeta{}, n.notLeader()
	}
	// Hold every Apply of this node (the leader's, and those followers
	// forward to it) while the current state is read and replaced, so that
	// nothing acknowledged in between is lost and no epoch is handed out
	// twice. Another leader could only write in a later term: checked
	// below.
	n.restoreGate.Lock()
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			n.restoreGate.Unlock()
		}
	}
	defer unlock()
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return SnapshotMeta{}, n.notLeader()
	}
	var (
		cur  []byte
		verr error
	)
	n.View(func(s *state.State) { cur, verr = s.Marshal() })
	if verr != nil {
		return SnapshotMeta{}, fmt.Errorf("encode the current state: %w", verr)
	}
	current, err := state.Unmarshal(cur)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("decode the current state: %w", err)
	}
	snap, err := decodeSnapshot(b)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	body, err := restoredState(snap, current).Marshal()
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("encode the restored state: %w", err)
	}
	data := append([]byte(snapshotHeader), body...)
	if _, err := decodeSnapshot(data); err != nil { // raft panics on a snapshot the FSM refuses
		return SnapshotMeta{}, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	rmeta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(data))}
	timeout := enqueueTimeout(ctx, n.cfg.ApplyTimeout)
	done := make(chan error, 1)
	unlocked = true // the goroutine unlocks once raft has answered
	if !n.goFuture(func() {
		defer n.restoreGate.Unlock()
		done <- n.raft.Restore(rmeta, bytes.NewReader(data), timeout)
	}) {
		n.restoreGate.Unlock()
		return SnapshotMeta{}, ErrClosed
	}
	select {
	case err := <-done:
		if err != nil {
			return SnapshotMeta{}, n.raftError(err)
		}
	case <-ctx.Done():
		return SnapshotMeta{}, fmt.Errorf("waiting for raft (the restore may still happen): %w", ctx.Err())
	}
	if now := n.raft.CurrentTerm(); now != term {
		n.log.Warn("cluster: leadership changed during a restore: check the epochs", "term", term, "now", now)
	}
	rs := n.raft.Stats()
	return SnapshotMeta{Index: parseUint(rs["last_snapshot_index"]), Term: parseUint(rs["last_snapshot_term"]),
		Size: int64(len(data)), NodeID: n.id, Leader: true}, nil
}

// restoredState is the state a restore of snap into a cluster whose state is
// cur installs: snap's batches, cur's registry and primaries (live
// connections are not part of a backup), and the larger of each counter, so
// that registration sequences and primary epochs never go back. snap is
// modified.
func restoredState(snap, cur *state.State) *state.State {
	snap.Channels, snap.Primaries = cur.Channels, cur.Primaries
	snap.Seq = max(snap.Seq, cur.Seq)
	snap.Epoch = max(snap.Epoch, cur.Epoch)
	return snap
}
