package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

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

// applyResult is the FSM's response to one entry, handed to the Apply that
// wrote it: the errors of the ops that failed, exactly as state.Apply returned
// them, so errors.Is(err, state.ErrExists) works for the caller. It crosses no
// process boundary today (raft hands the leader's FSM response to the leader's
// future); forwarding will have to encode it.
type applyResult struct {
	errs []error
}

// snapshotHeader starts every snapshot this code writes; the state's JSON
// follows.
const snapshotHeader = "exchange-state v1\n"

// fsm is the raft FSM: Memory's twin, with raft calling Apply. raft calls
// Apply, Snapshot and Restore from one goroutine (its FSM goroutine), never
// concurrently; View and Subscribe come from any goroutine.
type fsm struct {
	log *slog.Logger

	mu   sync.RWMutex // protects s, subs and next; Apply and Restore hold it while notifying
	s    *state.State
	subs map[int]func([]state.Event)
	next int
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

func newFSM(log *slog.Logger) *fsm {
	return &fsm{log: log, s: state.NewState(), subs: map[int]func([]state.Event){}}
}

// Apply implements raft.FSM: it applies the ops of one entry in order (every
// op is attempted, like state.Memory), notifies the subscribers with the
// entry's events, and returns an *applyResult.
func (f *fsm) Apply(l *raft.Log) any {
	ops, err := decodeEntry(l.Data)
	if err != nil {
		f.log.Error("cluster: rejecting log entry", "index", l.Index, "err", err)
		return &applyResult{errs: []error{fmt.Errorf("log index %d: %w", l.Index, err)}}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var evs []state.Event
	var errs []error
	for _, op := range ops {
		e, err := f.s.Apply(op)
		evs = append(evs, e...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(evs) > 0 {
		for _, fn := range f.subs {
			fn(evs)
		}
	}
	return &applyResult{errs: errs}
}

// Snapshot implements raft.FSM: it encodes the state under the read lock;
// the bytes are written to disk later, outside the lock, by Persist.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	b, err := f.s.Marshal()
	f.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
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
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s = s
	for _, fn := range f.subs {
		fn([]state.Event{{Kind: state.StateRestored}})
	}
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
func (f *fsm) view(fn func(*state.State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.s)
}

// subscribe registers fn; the returned function removes it.
func (f *fsm) subscribe(fn func([]state.Event)) (cancel func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	f.subs[id] = fn
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, id)
	}
}

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
