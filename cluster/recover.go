package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// peersFile is the manual recovery file of a cluster that lost its quorum
// for good (as in Consul): the operator writes it into the data directory
// of every surviving node, listing the survivors, and starts them. Open
// then rewrites the node's raft configuration to exactly those servers
// (raft.RecoverCluster) and deletes the file. Its format is raft's
// ReadConfigJSON: [{"id": "n1", "address": "10.0.0.1:7401", "non_voter": false}].
const peersFile = "peers.json"

// recoverPeers applies dir/peers.json, if present, to the node's raft state
// before raft starts. A peers.json in a directory without raft state is an
// error: there is nothing to recover.
func recoverPeers(dir string, existing bool, rc *raft.Config, logs raft.LogStore, stable raft.StableStore,
	snaps raft.SnapshotStore, trans raft.Transport, lg *slog.Logger) error {
	path := filepath.Join(dir, peersFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if !existing {
		return fmt.Errorf("cluster: %s: this node has no raft state to recover; remove the file", path)
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("cluster: read %s: %w", path, err)
	}
	// RecoverCluster replays the state into an FSM of its own to write the
	// snapshot that carries the new configuration; raft restores the
	// node's FSM from that snapshot when it starts.
	if err := raft.RecoverCluster(rc, newFSM(slog.New(slog.DiscardHandler)), logs, stable, snaps, trans, conf); err != nil {
		return fmt.Errorf("cluster: recover the raft configuration from %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("cluster: recovered from %s, but could not remove it (remove it before the next start): %w", path, err)
	}
	lg.Warn("cluster: raft configuration recovered from peers.json (file removed)", "path", path, "servers", fmt.Sprint(conf.Servers))
	return nil
}
