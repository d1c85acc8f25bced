package cluster_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/state"
)

// The damaged-data-directory tests (docs/decisions/0013): each damages the
// directory of a node that held state, then checks that Open refuses it with
// a *cluster.DataDirError naming the damaged file and the recovery, instead
// of panicking or starting an empty node.

// populate opens a node on cfg, applies enough state to spread raft.db over
// a few dozen pages, and closes it. It returns the state.
func populate(t *testing.T, cfg cluster.Config) *state.State {
	t.Helper()
	n, err := cluster.Open(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	defer closeNode(t, n)
	ctx := testCtx(t)
	for i := range 20 {
		var ops []state.Op
		for j := range 40 {
			ops = append(ops, register(fmt.Sprintf("c%d-%d", i, j), fmt.Sprintf("t%d", j%5)))
		}
		if err := state.Err(n.Apply(ctx, ops...)); err != nil {
			t.Fatalf("Apply() = %v", err)
		}
	}
	return snapshotOf(t, n)
}

// wantDamaged opens cfg twice (a refusal must not change the directory so
// that the next Open succeeds) and checks both refuse with kind, naming
// file, and leave raft.db byte for byte as it was (or still missing).
func wantDamaged(t *testing.T, cfg cluster.Config, kind error, file string) {
	t.Helper()
	db := filepath.Join(cfg.DataDir, "raft.db")
	before, berr := os.ReadFile(db)
	defer func() {
		after, aerr := os.ReadFile(db)
		if (berr == nil) != (aerr == nil) || !bytes.Equal(before, after) {
			t.Errorf("a refused Open changed raft.db: before %d bytes (%v), after %d bytes (%v)", len(before), berr, len(after), aerr)
		}
	}()
	for range 2 {
		n, err := cluster.Open(testCtx(t), cfg)
		if err == nil {
			empty := true
			n.View(func(s *state.State) { empty = len(s.Channels) == 0 })
			_ = n.Close()
			t.Fatalf("Open() of a damaged data dir = nil error (empty state: %t), want %v", empty, kind)
		}
		t.Logf("Open() = %v", err)
		if !errors.Is(err, cluster.ErrDataDirDamaged) || !errors.Is(err, kind) {
			t.Fatalf("Open() = %v, want errors.Is ErrDataDirDamaged and %v", err, kind)
		}
		var de *cluster.DataDirError
		if !errors.As(err, &de) || de.Path != file {
			t.Fatalf("Open() = %#v, want a *cluster.DataDirError with Path %s", err, file)
		}
		msg := err.Error()
		if !strings.Contains(msg, file) || !strings.Contains(msg, "To recover") || !strings.Contains(msg, "docs/operations.md") {
			t.Fatalf("Open() message %q does not name %s and the recovery", msg, file)
		}
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// scribble overwrites [from, to) of path with seeded random bytes.
func scribble(t *testing.T, path string, from, to int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(42, uint64(from)))
	b := make([]byte, to-from)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(b, from); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedRaftDB(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, db string)
		kind   error
	}{
		{"Deleted", func(t *testing.T, db string) {
			if err := os.Remove(db); err != nil {
				t.Fatal(err)
			}
		}, cluster.ErrRaftLogLost},
		{"ReplacedByEmptyBoltFile", func(t *testing.T, db string) {
			// A valid bbolt file without raft-boltdb's buckets.
			if err := os.Remove(db); err != nil {
				t.Fatal(err)
			}
			b, err := bbolt.Open(db, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}, cluster.ErrRaftLogLost},
		{"TruncatedToZero", func(t *testing.T, db string) { truncate(t, db, 0) }, cluster.ErrRaftLogLost},
		{"TruncatedToHalf", func(t *testing.T, db string) {
			fi, err := os.Stat(db)
			if err != nil {
				t.Fatal(err)
			}
			_, end, err := cluster.BoltHighWater(db)
			if err != nil {
				t.Fatal(err)
			}
			if end <= fi.Size()/2 {
				t.Fatalf("raft.db: %d bytes, pages reach %d: half the file would cut no page; populate more", fi.Size(), end)
			}
			truncate(t, db, fi.Size()/2)
		}, cluster.ErrRaftLogCorrupt},
		{"TruncatedInsideMetaPages", func(t *testing.T, db string) { truncate(t, db, 100) }, cluster.ErrRaftLogCorrupt},
		{"ScribbledDataPages", func(t *testing.T, db string) {
			ps, end, err := cluster.BoltHighWater(db)
			if err != nil {
				t.Fatal(err)
			}
			scribble(t, db, 2*int64(ps), end)
		}, cluster.ErrRaftLogCorrupt},
		{"ScribbledMetaPages", func(t *testing.T, db string) {
			ps, _, err := cluster.BoltHighWater(db)
			if err != nil {
				t.Fatal(err)
			}
			scribble(t, db, 0, 2*int64(ps))
		}, cluster.ErrRaftLogCorrupt},
		{"DamagedEntryPayload", func(t *testing.T, db string) {
			// Bytes inside a log entry's value: bbolt has no checksums
			// on data pages and raft's msgpack framing still decodes,
			// but the FSM would reject the entry (ErrBadEntry) and
			// silently lose its ops. Every copy of the channel id (bbolt
			// may keep old copies in free pages) gets a NUL byte, which
			// JSON does not allow in a string.
			b, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			needle := []byte(`"c7-7"`)
			if bytes.Count(b, needle) == 0 {
				t.Fatalf("%s not found in raft.db", needle)
			}
			b = bytes.ReplaceAll(b, needle, []byte("\"c7\x007\""))
			if err := os.WriteFile(db, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, cluster.ErrRaftLogCorrupt},
		{"ScribbledOnePagePerTen", func(t *testing.T, db string) {
			ps, end, err := cluster.BoltHighWater(db)
			if err != nil {
				t.Fatal(err)
			}
			for off := 2 * int64(ps); off < end; off += 10 * int64(ps) {
				scribble(t, db, off, off+int64(ps))
			}
		}, cluster.ErrRaftLogCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			populate(t, cfg)
			db := filepath.Join(dir, "raft.db")
			tt.damage(t, db)
			wantDamaged(t, cfg, tt.kind, db)
		})
	}
}

// TestRaftDBReplacedByOlderCopy restores raft.db from a copy taken before
// the last Applies: the node would silently lose them.
func TestRaftDBReplacedByOlderCopy(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := open(t, cfg)
	applyEach(t, n, churn("a", 5))
	closeNode(t, n)
	db := filepath.Join(dir, "raft.db")
	old, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	n = open(t, cfg)
	applyEach(t, n, churn("b", 5))
	closeNode(t, n)
	if err := os.WriteFile(db, old, 0o600); err != nil {
		t.Fatal(err)
	}
	wantDamaged(t, cfg, cluster.ErrRaftLogLost, db)
}

// compacted opens a node whose log keeps trailing entries after a snapshot,
// applies, snapshots (compacting the log past index 1) and closes.
func compacted(t *testing.T, cfg cluster.Config) {
	t.Helper()
	n := open(t, cfg)
	applyEach(t, n, churn("a", 30))
	if err := n.Snapshot(testCtx(t)); err != nil {
		t.Fatalf("Snapshot() = %v", err)
	}
	applyEach(t, n, churn("b", 3))
	first, err := cluster.FirstLogIndex(n)
	if err != nil || first <= 1 {
		t.Fatalf("FirstLogIndex() = %d, %v; want the log compacted", first, err)
	}
	closeNode(t, n)
}

func TestMissingSnapshot(t *testing.T) {
	t.Run("SnapshotsDeleted", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(t, dir)
		cfg.SnapshotThreshold, cfg.TrailingLogs = 16, 4
		compacted(t, cfg)
		snaps := filepath.Join(dir, "snapshots")
		if err := os.RemoveAll(snaps); err != nil {
			t.Fatal(err)
		}
		wantDamaged(t, cfg, cluster.ErrSnapshotMissing, snaps)
	})
	t.Run("WholeLogCompacted", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(t, dir)
		cfg.TrailingLogs = 0
		n := open(t, cfg)
		applyEach(t, n, churn("a", 10))
		if err := n.Snapshot(testCtx(t)); err != nil {
			t.Fatalf("Snapshot() = %v", err)
		}
		closeNode(t, n)
		snaps := filepath.Join(dir, "snapshots")
		if err := os.RemoveAll(snaps); err != nil {
			t.Fatal(err)
		}
		wantDamaged(t, cfg, cluster.ErrSnapshotMissing, snaps)
	})
	t.Run("SnapshotCorrupt", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(t, dir)
		cfg.SnapshotThreshold, cfg.TrailingLogs = 16, 4
		compacted(t, cfg)
		snaps := filepath.Join(dir, "snapshots")
		states, err := filepath.Glob(filepath.Join(snaps, "*", "state.bin"))
		if err != nil || len(states) != 1 {
			t.Fatalf("snapshots: %v, %v; want one", states, err)
		}
		fi, err := os.Stat(states[0])
		if err != nil {
			t.Fatal(err)
		}
		scribble(t, states[0], fi.Size()/2, fi.Size()/2+8)
		wantDamaged(t, cfg, cluster.ErrSnapshotMissing, snaps)
	})
	t.Run("RaftDBAndMarkerDeleted", func(t *testing.T) {
		// Only a snapshot is left: raft would start from it with no term
		// and without the log's tail.
		dir := t.TempDir()
		cfg := testConfig(t, dir)
		cfg.SnapshotThreshold, cfg.TrailingLogs = 16, 4
		compacted(t, cfg)
		db := filepath.Join(dir, "raft.db")
		for _, f := range []string{db, filepath.Join(dir, "exchange-data.json")} {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		wantDamaged(t, cfg, cluster.ErrRaftLogLost, db)
	})
}

type marker struct {
	Format       int    `json:"format"`
	NodeID       string `json:"nodeId"`
	AppliedIndex uint64 `json:"appliedIndex"`
}

func readMarker(t *testing.T, dir string) marker {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "exchange-data.json"))
	if err != nil {
		t.Fatalf("marker: %v", err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("marker %s: %v", b, err)
	}
	return m
}

// TestMarker checks the marker's life: written on bootstrap, carrying the
// applied index after Close, rewritten when deleted (a directory that
// predates it), and refused when unreadable.
func TestMarker(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	want := populate(t, cfg)
	m := readMarker(t, dir)
	if m.Format != 1 || m.NodeID != "node-1" || m.AppliedIndex < 20 {
		t.Errorf("marker after Close = %+v, want format 1, node-1, applied index >= 20", m)
	}

	marker := filepath.Join(dir, "exchange-data.json")
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	n := open(t, cfg)
	if d := diffState(want, snapshotOf(t, n)); d != "" {
		t.Errorf("state after the marker was deleted:\n%s", d)
	}
	closeNode(t, n)
	if got := readMarker(t, dir); got.AppliedIndex < m.AppliedIndex {
		t.Errorf("rewritten marker = %+v, want applied index >= %d", got, m.AppliedIndex)
	}

	if err := os.WriteFile(marker, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantDamaged(t, cfg, cluster.ErrDataDirDamaged, marker)
}

// TestNewDataDirBootstraps checks that the checks do not refuse what is
// genuinely new: a missing or empty directory, or one with only a node-id
// or an empty raft.db (an Open that failed before bootstrapping).
func TestNewDataDirBootstraps(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		bolt  bool // raft.db is a bbolt file without raft-boltdb's buckets
	}{
		{"Missing", nil, false},
		{"Empty", map[string]string{}, false},
		{"NodeIDOnly", map[string]string{"node-id": "node-1\n"}, false},
		{"EmptyRaftDB", map[string]string{"node-id": "node-1\n", "raft.db": ""}, false},
		{"BoltFileWithoutBuckets", map[string]string{"node-id": "node-1\n"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if tt.files != nil {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.bolt {
				b, err := bbolt.Open(filepath.Join(dir, "raft.db"), 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			cfg := testConfig(t, dir)
			n := open(t, cfg)
			if err := state.Err(n.Apply(testCtx(t), register("c1", "t1"))); err != nil {
				t.Fatalf("Apply() = %v", err)
			}
			if !n.Leader() {
				t.Errorf("Leader() = false after Open")
			}
			closeNode(t, n)
			if m := readMarker(t, dir); m.NodeID != "node-1" {
				t.Errorf("marker = %+v, want node-1", m)
			}
			if _, err := os.Stat(filepath.Join(dir, "raft.db")); errors.Is(err, fs.ErrNotExist) {
				t.Errorf("raft.db missing after Open")
			}
			n = open(t, cfg) // and it reopens
			if d := diffState(replay(register("c1", "t1")), snapshotOf(t, n)); d != "" {
				t.Errorf("state after reopen:\n%s", d)
			}
		})
	}
}
