package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exchangekit/exchange/state"
)

// entryVersion is the version of the log entry envelope written by this code.
// A node meeting an entry of a version it does not know rejects it (every op
// fails with ErrBadEntry) instead of guessing, the same way on every node; so
// upgrade every node before writing a new version.
const entryVersion = 1

// entry is the envelope of one raft log entry: the ops of one Apply call.
type entry struct {
	V   int        `json:"v"`
	Ops []state.Op `json:"ops"`
}

func encodeEntry(ops []state.Op) ([]byte, error) {
	b, err := json.Marshal(entry{V: entryVersion, Ops: ops})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode ops: %w", err)
	}
	return b, nil
}

func decodeEntry(b []byte) ([]state.Op, error) {
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEntry, err)
	}
	if e.V != entryVersion {
		return nil, fmt.Errorf("%w: envelope version %d, this node knows %d", ErrBadEntry, e.V, entryVersion)
	}
	return e.Ops, nil
}

// The FSM's response to one entry, handed to the Apply that wrote it, is a
// []state.Result: one per op of the entry, plain data that forwarding can
// encode. An entry this node cannot decode gets a single Result, from
// badEntryResult, whatever the number of ops it held.

// badEntryOp is the OpError.Op of the Result of an undecodable entry.
const badEntryOp = "entry"

func badEntryResult(err error) []state.Result {
	return []state.Result{{Err: &state.OpError{Code: state.CodeInvalid, Op: badEntryOp, Message: err.Error()}}}
}

// resultsError joins the failures of rs, as state.ResultsErr does, except
// that the failure of an undecodable entry also matches ErrBadEntry.
func resultsError(rs []state.Result) error {
	var errs []error
	for _, r := range rs {
		switch {
		case r.Err == nil:
		case r.Err.Op == badEntryOp:
			errs = append(errs, &badEntryError{r.Err})
		default:
			errs = append(errs, r.Err)
		}
	}
	return errors.Join(errs...)
}

// badEntryError is the failure of an undecodable entry: its text is the
// OpError's, and it matches both the OpError's sentinels and ErrBadEntry.
type badEntryError struct{ err *state.OpError }

func (e *badEntryError) Error() string   { return e.err.Error() }
func (e *badEntryError) Unwrap() []error { return []error{e.err, ErrBadEntry} }

// snapshotHeader starts every snapshot this code writes; the state's JSON
// follows.
const snapshotHeader = "exchange-state v1\n"

// fsm is the raft FSM: Memory's twin, a state.Replica with raft calling Apply.
// raft calls Apply, Snapshot and Restore from one goroutine (its FSM
// goroutine), never concurrently; View and Subscribe come from any goroutine.
type fsm struct {
	log *slog.Logger
	r   *state.Replica

	amu      sync.Mutex    // protects applied, advanced, restored
	applied  uint64        // index of the last entry applied
	advanced chan struct{} // closed and replaced when applied grows or a snapshot is restored
	restored bool          // a snapshot was restored: applied may lag raft's own index
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

func newFSM(log *slog.Logger) *fsm {
	return &fsm{log: log, r: state.NewReplica(), advanced: make(chan struct{})}
}

// Apply implements raft.FSM: it applies the ops of one entry in order (every
// op is attempted, like state.Memory), notifies the subscribers with the
// entry's events, and returns the ops' []state.Result.
func (f *fsm) Apply(l *raft.Log) any {
	ops, err := decodeEntry(l.Data)
	if err != nil {
		f.log.Error("cluster: rejecting log entry", "index", l.Index, "err", err)
		defer f.markApplied(l.Index, false)
		return badEntryResult(fmt.Errorf("log index %d: %w", l.Index, err))
	}
	defer f.markApplied(l.Index, false)
	return f.r.Apply(ops)
}

// markApplied records that the entry at index is applied (or that a snapshot
// was restored) and wakes the waiters.
func (f *fsm) markApplied(index uint64, restored bool) {
	f.amu.Lock()
	defer f.amu.Unlock()
	f.applied = max(f.applied, index)
	f.restored = f.restored || restored
	close(f.advanced)
	f.advanced = make(chan struct{})
}

// progress returns the index of the last entry applied to the replica, and
// whether a snapshot was restored (whose index the FSM is not told).
func (f *fsm) progress() (applied uint64, restored bool) {
	f.amu.Lock()
	defer f.amu.Unlock()
	return f.applied, f.restored
}

// waitApplied returns once the entry at index is applied to this replica,
// or ctx ends. raftApplied is raft's own applied index, which covers a
// restored snapshot (whose index the FSM is not told).
func (f *fsm) waitApplied(ctx context.Context, index uint64, raftApplied func() uint64) error {
	for {
		f.amu.Lock()
		done := f.applied >= index || (f.restored && raftApplied() >= index)
		wait, restored := f.advanced, f.restored
		f.amu.Unlock()
		if done {
			return nil
		}
		var poll <-chan time.Time
		if restored { // raft's index moves right after a restore, without a wake-up
			t := time.NewTimer(5 * time.Millisecond)
			defer t.Stop()
			poll = t.C
		}
		select {
		case <-wait:
		case <-poll:
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting for entry %d to be applied on this node: %w", index, ctx.Err())
		}
	}
}

// Snapshot implements raft.FSM: it encodes the state under the read lock;
// the bytes are written to disk later, outside the lock, by Persist.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	b, err := f.r.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return &fsmSnapshot{data: b}, nil
}

// Restore implements raft.FSM: it replaces the state with the snapshot's and
// tells the subscribers (one state.StateRestored event) to resync.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("cluster: restore: read snapshot: %w", err)
	}
	s, err := decodeSnapshot(b)
	if err != nil {
		return err
	}
	f.r.Restore(s)
	f.markApplied(0, true)
	return nil
}

func decodeSnapshot(b []byte) (*state.State, error) {
	body, ok := bytes.CutPrefix(b, []byte(snapshotHeader))
	if !ok {
		return nil, errors.New("cluster: restore: not an exchange state snapshot (bad header)")
	}
	s, err := state.Unmarshal(body)
	if err != nil {
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	return s, nil
}

// view calls fn with the state under the read lock.
func (f *fsm) view(fn func(*state.State)) { f.r.View(fn) }

// subscribe registers fn; the returned function removes it.
func (f *fsm) subscribe(fn func([]state.Event)) (cancel func()) { return f.r.Subscribe(fn) }

// fsmSnapshot is a state encoded by fsm.Snapshot.
type fsmSnapshot struct {
	data []byte
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	_, err := io.WriteString(sink, snapshotHeader)
	if err == nil {
		_, err = sink.Write(s.data)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	return nil
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}
