package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Damaged data directories (docs/decisions/0013). Open checks the directory
// before raft sees it, because raft and bbolt handle damage badly: a missing
// or empty raft.db looks like a new node (raft bootstraps an empty one), a
// damaged one panics inside bbolt, and a log compacted past its missing
// snapshot panics raft with "log not found". Each check below turns one of
// those into a *DataDirError naming the file and the recovery.

const (
	// markerFile records that the directory holds raft state: written when
	// the node bootstraps (or first opens a directory that predates it), and
	// updated with the applied index on every Open and Close.
	markerFile = "exchange-data.json"
	// markerFormat is the version of markerFile (and of the directory
	// layout) this code writes and reads.
	markerFormat = 1
	// snapshotsDir is where raft's FileSnapshotStore keeps snapshots.
	snapshotsDir = "snapshots"
)

// dataMarker is the content of markerFile.
type dataMarker struct {
	// Format is markerFormat when written.
	Format int `json:"format"`
	// NodeID is the node id the directory belongs to (node-id decides;
	// this copy is for people reading the file).
	NodeID string `json:"nodeId"`
	// CreatedAt is when the node bootstrapped (or the marker was first
	// written, for a directory that predates it).
	CreatedAt time.Time `json:"createdAt"`
	// AppliedIndex is a lower bound of the raft index this node had applied:
	// the log and the snapshots must reach at least this far. Applied
	// entries are committed, and raft never removes a committed entry
	// (only compacts it into a snapshot), so this holds on a follower too.
	AppliedIndex uint64 `json:"appliedIndex"`
}

// recoveryAdvice is the recovery a *DataDirError suggests for dir.
func recoveryAdvice(dir string) string {
	return fmt.Sprintf("stop the node and restore the whole directory %[1]s from a backup; "+
		"or, to start this node empty on purpose (its channel registry and batches are lost; connectors register again), "+
		"move the directory aside (mv %[1]s %[1]s.damaged) and start again. "+
		`See "Damaged data directory" in docs/operations.md`, dir)
}

// readMarker returns dir's marker, nil when it has none.
func readMarker(dir string) (*dataMarker, error) {
	path := filepath.Join(dir, markerFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	var m dataMarker
	if err := json.Unmarshal(b, &m); err != nil || m.Format < 1 {
		if err == nil {
			err = errors.New("no format version")
		}
		return nil, &DataDirError{
			Path: path, Problem: "unreadable data directory marker", Err: err,
			Recovery: fmt.Sprintf("if %s is intact, delete %s (Open writes it again); otherwise %s",
				filepath.Join(dir, raftDBFile), path, recoveryAdvice(dir)),
		}
	}
	if m.Format > markerFormat {
		return nil, fmt.Errorf("cluster: %s has format %d; this version of Exchange reads format %d: run a newer version",
			path, m.Format, markerFormat)
	}
	return &m, nil
}

// writeMarker stores m in dir, durably.
func writeMarker(dir string, m dataMarker) error {
	m.Format = markerFormat
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("cluster: encode %s: %w", markerFile, err)
	}
	if err := writeFileSync(filepath.Join(dir, markerFile), append(b, '\n')); err != nil {
		return fmt.Errorf("cluster: write %s: %w", markerFile, err)
	}
	return nil
}

// heldState says why dir must hold raft state, "" when nothing says so (a
// new directory, or one whose marker and snapshots are both gone).
func heldState(dir string, m *dataMarker, snaps []*raft.SnapshotMeta) string {
	var why []string
	if m != nil {
		why = append(why, fmt.Sprintf("%s says node %q bootstrapped it on %s and had applied index %d",
			filepath.Join(dir, markerFile), m.NodeID, m.CreatedAt.Format(time.RFC3339), m.AppliedIndex))
	}
	if len(snaps) > 0 {
		why = append(why, fmt.Sprintf("%s holds a snapshot up to index %d",
			filepath.Join(dir, snapshotsDir), snaps[0].Index))
	}
	return strings.Join(why, ", and ")
}

// checkRaftFile checks raft.db at path before raft-boltdb opens it (and
// before it would create a missing one), and reports whether it holds
// raft-boltdb's buckets: false means a new directory. held is heldState's
// answer.
func checkRaftFile(path, held, recovery string) (bool, error) {
	lost := func(problem string) error {
		return &DataDirError{Path: path, Kind: ErrRaftLogLost, Recovery: recovery, Problem: problem + ", but " + held}
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if held != "" {
			return false, lost("the raft log is missing")
		}
		return false, nil // a new directory
	case err != nil:
		return false, fmt.Errorf("cluster: open raft log %s: %w", path, err)
	case fi.Size() == 0:
		if held != "" {
			return false, lost("the raft log is empty (0 bytes)")
		}
		return false, nil // created, never written: bbolt initialises it
	}
	buckets, err := checkBoltFile(path, boltLockTimeout, recovery)
	if err != nil {
		return false, err
	}
	if !buckets && held != "" {
		return false, lost("the raft log has no raft data in it")
	}
	return buckets, nil
}

// inspectRaftState opens raft.db in dir read-only and runs checkRaftState
// on it. raft.db must have passed checkRaftFile with its buckets present.
func inspectRaftState(dir string, snaps raft.SnapshotStore, list []*raft.SnapshotMeta, m *dataMarker,
	held, recovery string) (bool, error) {
	path := filepath.Join(dir, raftDBFile)
	var ro *raftboltdb.BoltStore
	err := protect(func() error {
		var err error
		ro, err = raftboltdb.New(raftboltdb.Options{Path: path,
			BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: boltLockTimeout}})
		return err
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return false, fmt.Errorf("cluster: open raft log %s: locked by another process for %v: %w", path, boltLockTimeout, err)
	}
	if err != nil {
		return false, &DataDirError{Path: path, Kind: ErrRaftLogCorrupt, Recovery: recovery,
			Problem: "cannot open the raft log", Err: err}
	}
	existing, err := checkRaftState(dir, ro, ro, snaps, list, m, held, recovery)
	if cerr := ro.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cluster: close raft log %s after checking it: %w", path, cerr)
	}
	return existing, err
}

// checkRaftState checks the raft state of an open data directory, as raft
// is about to load it, and reports whether there is any (false: bootstrap).
// It refuses a log that holds no state when held says there was some, a
// log compacted past the newest readable snapshot, an unreadable entry, and
// a log and snapshots that end before the marker's applied index.
func checkRaftState(dir string, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore,
	list []*raft.SnapshotMeta, m *dataMarker, held, recovery string) (bool, error) {
	dbPath := filepath.Join(dir, raftDBFile)
	snapPath := filepath.Join(dir, snapshotsDir)
	var exists bool
	err := protect(func() error {
		var err error
		// Whether raft.db alone holds state; raft would also count the
		// snapshots, and start from one with no term and no log.
		exists, err = raft.HasExistingState(logs, stable, raft.NewDiscardSnapshotStore())
		return err
	})
	if err != nil {
		return false, &DataDirError{Path: dbPath, Kind: ErrRaftLogCorrupt, Recovery: recovery,
			Problem: "cannot read the raft state", Err: err}
	}
	if !exists {
		if held != "" {
			return false, &DataDirError{Path: dbPath, Kind: ErrRaftLogLost, Recovery: recovery,
				Problem: "the raft log holds no raft state, but " + held}
		}
		return false, nil
	}

	// raft restores the newest snapshot it can open (Open verifies its
	// checksum), then reads every log entry after it.
	var base uint64
	var bad []string
	for _, s := range list {
		_, rc, err := snaps.Open(s.ID)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", s.ID, err))
			continue
		}
		_ = rc.Close()
		base = s.Index
		break
	}
	var first, last uint64
	err = protect(func() error {
		var err error
		if first, err = logs.FirstIndex(); err != nil {
			return err
		}
		last, err = logs.LastIndex()
		return err
	})
	if err != nil {
		return false, &DataDirError{Path: dbPath, Kind: ErrRaftLogCorrupt, Recovery: recovery,
			Problem: "cannot read the raft log's bounds", Err: err}
	}
	snapshots := fmt.Sprintf("the newest readable snapshot in %s ends at index %d", snapPath, base)
	if base == 0 {
		snapshots = "there is no readable snapshot in " + snapPath
	}
	if len(bad) > 0 {
		snapshots += " (unreadable: " + strings.Join(bad, "; ") + ")"
	}
	switch {
	case last == 0 && base == 0:
		return false, &DataDirError{Path: snapPath, Kind: ErrSnapshotMissing, Recovery: recovery,
			Problem: fmt.Sprintf("the raft log in %s is empty (compacted into a snapshot) and %s", dbPath, snapshots)}
	case last > base && first > base+1:
		return false, &DataDirError{Path: snapPath, Kind: ErrSnapshotMissing, Recovery: recovery,
			Problem: fmt.Sprintf("the raft log in %s starts at index %d (entries before it were compacted into a snapshot), but %s",
				dbPath, first, snapshots)}
	}
	err = protect(func() error {
		var l raft.Log
		for i := base + 1; i <= last; i++ {
			if err := logs.GetLog(i, &l); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			// bbolt has no checksums on data pages, and a damaged entry
			// the FSM cannot decode is rejected as ErrBadEntry: silent
			// loss. Every envelope version is JSON (fsm.go), so an
			// entry that is not JSON was damaged here, not written so.
			if l.Type == raft.LogCommand && !json.Valid(l.Data) {
				return fmt.Errorf("entry %d: not a JSON log entry envelope: its bytes were damaged on disk", i)
			}
		}
		return nil
	})
	if err != nil {
		return false, &DataDirError{Path: dbPath, Kind: ErrRaftLogCorrupt, Recovery: recovery,
			Problem: "a raft log entry cannot be read", Err: err}
	}
	if reached := max(last, base); m != nil && m.AppliedIndex > reached {
		return false, &DataDirError{Path: dbPath, Kind: ErrRaftLogLost, Recovery: recovery,
			Problem: fmt.Sprintf("the raft log and snapshots end at index %d, but this node had applied index %d (%s): "+
				"raft.db was replaced by an older copy or lost entries", reached, m.AppliedIndex, filepath.Join(dir, markerFile))}
	}
	return true, nil
}
