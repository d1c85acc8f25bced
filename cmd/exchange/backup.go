package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/management"
)

// ctlSnapshotTimeout bounds exchange ctl snapshot save and restore.
const ctlSnapshotTimeout = 10 * time.Minute

// nodeSnapshots adapts the raft node to the management API's backup and
// restore.
type nodeSnapshots struct{ node *cluster.Node }

var _ management.Snapshots = nodeSnapshots{}

func (s nodeSnapshots) OpenSnapshot(ctx context.Context) (management.SnapshotInfo, io.ReadCloser, error) {
	m, rc, err := s.node.OpenSnapshot(ctx)
	if err != nil {
		return management.SnapshotInfo{}, nil, err
	}
	return snapshotInfo(m), rc, nil
}

func (s nodeSnapshots) RestoreSnapshot(ctx context.Context, r io.Reader) (management.SnapshotInfo, error) {
	m, err := s.node.Restore(ctx, r)
	var nl *cluster.NotLeaderError
	switch {
	case errors.Is(err, cluster.ErrBadSnapshot):
		return management.SnapshotInfo{}, fmt.Errorf("%w: %w", management.ErrInvalidSnapshot, err)
	case errors.As(err, &nl) && nl.LeaderID == "":
		return management.SnapshotInfo{}, fmt.Errorf("%w, and no leader is known (an election is under way): retry", management.ErrNotLeader)
	case errors.As(err, &nl):
		return management.SnapshotInfo{}, fmt.Errorf("%w: restore on the leader, node %s (raft %s)", management.ErrNotLeader, nl.LeaderID, nl.LeaderAddress)
	case errors.Is(err, cluster.ErrLeadershipLost):
		// raft's user restore is committed on the leader before its
		// followers install it: this node may hold the restored state alone.
		// A restore on the new leader reaches every node again.
		return management.SnapshotInfo{}, fmt.Errorf("%w: leadership changed during the restore, whose outcome is unknown: run it again on the current leader (%s)",
			management.ErrNotLeader, orDash(s.node.LeaderID()))
	case err != nil:
		return management.SnapshotInfo{}, err
	}
	return snapshotInfo(m), nil
}

func snapshotInfo(m cluster.SnapshotMeta) management.SnapshotInfo {
	return management.SnapshotInfo{Index: m.Index, Term: m.Term, Size: m.Size, NodeID: m.NodeID, Leader: m.Leader}
}

// readRestoreFile reads and checks the snapshot of --restore, before the
// data directory is touched.
func readRestoreFile(path, dataDir string) ([]byte, error) {
	entries, err := os.ReadDir(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("--restore: read --data-dir %s: %w", dataDir, err)
	case len(entries) > 0:
		names := make([]string, 0, 3)
		for _, e := range entries[:min(3, len(entries))] {
			names = append(names, e.Name())
		}
		return nil, fmt.Errorf("--restore needs an empty --data-dir, and %s holds %d entries (%s): restore into a new directory, or move this one aside",
			dataDir, len(entries), strings.Join(names, ", "))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--restore: %w", err)
	}
	if err := cluster.CheckSnapshot(data); err != nil {
		return nil, fmt.Errorf("--restore %s: %w", path, err)
	}
	return data, nil
}

// restoreNode restores data (checked by readRestoreFile) into node, just
// opened on an empty data directory.
func restoreNode(ctx context.Context, node *cluster.Node, path string, data []byte, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m, err := node.Restore(ctx, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("--restore %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "restored %s (%d bytes) into node %s at raft index %d, term %d\n", path, len(data), m.NodeID, m.Index, m.Term)
	return nil
}

func newCtlSnapshotCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot save FILE | snapshot restore FILE",
		Short: "Back up the replicated state to a file, or restore one into the cluster",
		Long: `Back up the replicated state (channel registry, primaries and epochs, batches)
to a file, or restore a backup into the running cluster. See docs/operations.md,
"Backup and restore".`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitUsage, err: errors.New("snapshot needs a command: save FILE or restore FILE")}
			}
			return &exitError{code: exitUsage, err: fmt.Errorf("unknown snapshot command %q: want save or restore", args[0])}
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.AddCommand(newCtlSnapshotSaveCommand(f, stdout), newCtlSnapshotRestoreCommand(f, stdout))
	return cmd
}

// ctlFile takes the one FILE argument of snapshot save and restore.
func ctlFile(_ *cobra.Command, args []string) error {
	switch {
	case len(args) == 0 || args[0] == "":
		return &exitError{code: exitUsage, err: errors.New("a FILE is required")}
	case len(args) > 1:
		return &exitError{code: exitUsage, err: fmt.Errorf("unexpected argument %q", args[1])}
	}
	return nil
}

func newCtlSnapshotSaveCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the replicated state to FILE (atomically)",
		Long: `Save a consistent snapshot of the replicated state to FILE. The file is written
whole or not at all (a temporary file in the same directory, synced, then
renamed). Any node answers; a follower's snapshot is of its replica, which may
lag the leader's by a few entries: point --addr at the leader for the newest.`,
		Args: ctlFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			return ctlRun(cmd.Context(), f, ctlSnapshotTimeout, func(ctx context.Context, c *management.Client) error {
				var info management.SnapshotInfo
				err := writeFileAtomic(path, func(w io.Writer) error {
					var err error
					info, err = c.SaveSnapshot(ctx, w)
					return err
				})
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, struct {
						File string `json:"file"`
						management.SnapshotInfo
					}{path, info})
				}
				role := "leader"
				if !info.Leader {
					role = "follower: its replica may lag the leader"
				}
				fmt.Fprintf(stdout, "saved %s: %d bytes, raft index %d, term %d, from node %s (%s)\n",
					path, info.Size, info.Index, info.Term, info.NodeID, role)
				return nil
			})
		},
	}
}

func newCtlSnapshotRestoreCommand(f *ctlFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore the snapshot in FILE into the running cluster (through the leader)",
		Long: `Restore the snapshot in FILE into the running cluster: --addr must be the
leader's management API (another node answers with the leader's id). The
cluster takes the snapshot's batches; its channel registry and primaries stay
(live connections are never in a backup), and its epoch counter never goes
back. See docs/decisions/0017-backup-and-restore.md.`,
		Args: ctlFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			file, err := os.Open(path)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			defer file.Close()
			fi, err := file.Stat()
			if err != nil {
				return fmt.Errorf("snapshot restore: %w", err)
			}
			return ctlRun(cmd.Context(), f, ctlSnapshotTimeout, func(ctx context.Context, c *management.Client) error {
				info, err := c.RestoreSnapshot(ctx, file, fi.Size())
				if err != nil {
					return ctlError(err, "")
				}
				if f.output == "json" {
					return printJSON(stdout, info)
				}
				fmt.Fprintf(stdout, "restored %s (%d bytes) into the cluster: raft index %d, term %d, leader %s\n",
					path, fi.Size(), info.Index, info.Term, info.NodeID)
				return nil
			})
		},
	}
}

// writeFileAtomic writes path whole or not at all: write fills a temporary
// file in the same directory, which is synced, then renamed over path.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create a temporary file next to %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	if d, derr := os.Open(dir); derr == nil { // make the rename durable
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
