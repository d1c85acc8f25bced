package cluster_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/membership"
)

func TestConfigValidate(t *testing.T) {
	if err := cluster.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	for name, mutate := range map[string]func(*cluster.Config){
		"no data dir":             func(c *cluster.Config) { c.DataDir = "" },
		"bad raft addr":           func(c *cluster.Config) { c.RaftAddr = "7401" },
		"port 0 on any host":      func(c *cluster.Config) { c.RaftAddr = ":0" },
		"unadvertisable":          func(c *cluster.Config) { c.RaftAdvertiseAddr = "0.0.0.0:7401" },
		"heartbeat too short":     func(c *cluster.Config) { c.HeartbeatTimeout = time.Millisecond },
		"election below beat":     func(c *cluster.Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 },
		"lease above heartbeat":   func(c *cluster.Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
		"max append entries":      func(c *cluster.Config) { c.MaxAppendEntries = 2048 },
		"no snapshots kept":       func(c *cluster.Config) { c.RetainSnapshots = 0 },
		"snapshot threshold zero": func(c *cluster.Config) { c.SnapshotThreshold = 0 },
		"no apply timeout":        func(c *cluster.Config) { c.ApplyTimeout = 0 },
	} {
		c := cluster.DefaultConfig()
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, cluster.ErrInvalidConfig) {
			t.Errorf("%s: Validate() = %v, want cluster.ErrInvalidConfig", name, err)
		}
	}
	ok := cluster.DefaultConfig()
	ok.RaftAddr = ":0"
	ok.RaftAdvertiseAddr = "10.0.0.1:7401"
	if err := ok.Validate(); err != nil {
		t.Errorf("port 0 with an advertise address: Validate() = %v, want nil", err)
	}
}

// TestDataDirBinding checks that a data directory keeps the node id it was
// created with, and that two nodes cannot share it.
func TestDataDirBinding(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := open(t, cfg)

	// A second node on the same directory fails (bbolt's file lock) instead
	// of corrupting the log.
	second := testConfig(t, dir)
	if n2, err := cluster.Open(testCtx(t), second); err == nil {
		_ = n2.Close()
		t.Fatalf("second Open() of the same data dir = nil error")
	} else {
		t.Logf("second Open() = %v", err)
	}
	closeNode(t, n)

	other := testConfig(t, dir)
	other.NodeID = "node-2"
	if _, err := cluster.Open(testCtx(t), other); !errors.Is(err, cluster.ErrNodeIDMismatch) {
		t.Errorf("Open() with another node id = %v, want cluster.ErrNodeIDMismatch", err)
	}

	stored := testConfig(t, dir)
	stored.NodeID = "" // use the id stored in the directory
	if n := open(t, stored); n.NodeID() != "node-1" || n.LeaderID() != "node-1" {
		t.Errorf("NodeID() = %q, LeaderID() = %q; want node-1", n.NodeID(), n.LeaderID())
	}
}

func TestDefaultNodeIDIsHostName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatalf("os.Hostname() = %v", err)
	}
	dir := filepath.Join(t.TempDir(), "new", "data") // created by Open
	cfg := testConfig(t, dir)
	cfg.NodeID = ""
	if n := open(t, cfg); n.NodeID() != host {
		t.Errorf("NodeID() = %q, want the host name %q", n.NodeID(), host)
	}
	b, err := os.ReadFile(filepath.Join(dir, "node-id"))
	if err != nil || string(b) != host+"\n" {
		t.Errorf("node-id file = %q, %v; want %q", b, err, host+"\n")
	}
}

func TestGossipTimingsOverride(t *testing.T) {
	def := membership.DefaultConfig().Timings
	if got := cluster.OverrideTimings(def, membership.Timings{}); got != def {
		t.Errorf("zero GossipTimings: got %+v, want the defaults %+v", got, def)
	}
	got := cluster.OverrideTimings(def, membership.Timings{ProbeInterval: 100 * time.Millisecond, SuspicionMult: 2})
	want := def
	want.ProbeInterval, want.SuspicionMult = 100*time.Millisecond, 2
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	all := membership.Timings{ProbeInterval: 1, ProbeTimeout: 2, SuspicionMult: 3, GossipInterval: 4, GossipNodes: 5,
		RetransmitMult: 6, PushPullInterval: 7, TCPTimeout: 8, GossipToTheDeadTime: 9, DeadNodeReclaimTime: 10}
	if got := cluster.OverrideTimings(def, all); got != all {
		t.Errorf("every field set: got %+v, want %+v", got, all)
	}
}
