package cluster_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/cluster"
)

func writePeers(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "peers.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A peers.json in a directory without raft state stops Open: there is
// nothing to recover.
func TestPeersJSONWithoutState(t *testing.T) {
	dir := t.TempDir()
	writePeers(t, dir, `[{"id": "node-1", "address": "127.0.0.1:7401", "non_voter": false}]`)
	n, err := cluster.Open(testCtx(t), testConfig(t, dir))
	if err == nil {
		_ = n.Close()
		t.Fatal("Open with peers.json and no state succeeded")
	}
	if !strings.Contains(err.Error(), "no raft state to recover") {
		t.Errorf("Open: %v, want it to say there is no raft state to recover", err)
	}
}

// peers.json rewrites the raft configuration of a node with state, which
// keeps its state; the file is removed.
func TestPeersJSONRecovers(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n, err := cluster.Open(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	applied := n.AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// The address is stale on purpose: the node updates it once it leads.
	path := writePeers(t, dir, `[{"id": "node-1", "address": "127.0.0.1:1", "non_voter": false}]`)
	n, err = cluster.Open(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Open with peers.json: %v", err)
	}
	defer n.Close()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("peers.json after Open: %v, want it removed", err)
	}
	if !n.Leader() || n.AppliedIndex() < applied {
		t.Errorf("after recovery: leader %t, applied %d (was %d)", n.Leader(), n.AppliedIndex(), applied)
	}
	if st := n.Stats(); len(st.Members) != 1 || st.Members[0].NodeID != "node-1" {
		t.Errorf("after recovery: members %+v, want node-1 alone", st.Members)
	}
}
