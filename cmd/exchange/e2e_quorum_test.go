package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exchangekit/exchange/management"
)

// waitReadyz polls n's /readyz until it answers want (200 or 503).
func waitReadyz(ctx context.Context, t *testing.T, n *clusterNode, want int) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := n.api.Ready(ctx)
		got := http.StatusOK
		if err != nil {
			got = apiStatus(err)
		}
		if got == want {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s: /readyz never answered %d (last: %v)", n.id, want, err)
		}
	}
}

// createBatch creates a one-command batch for target through n, with a
// deadline of its own.
func createBatch(ctx context.Context, n *clusterNode, target string, d time.Duration) (management.Batch, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return n.api.CreateBatch(ctx, management.BatchRequest{TargetID: target,
		Commands: []management.BatchCommandRequest{{Type: string(TypeEcho), Payload: json.RawMessage(`"batched"`)}}})
}

// TestEndToEndClusterQuorumLoss: what a node shows when the cluster lost its
// quorum, and both recoveries of docs/operations.md: restart a lost node;
// and, when the majority is gone for good, peers.json on the survivor.
func TestEndToEndClusterQuorumLoss(t *testing.T) {
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	nodes := newClusterNodes(t, 3)
	startCluster(ctx, t, hc, nodes)
	waitClusterLeader(ctx, t, nodes)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	// q1's only endpoint is n3, q2's is n1.
	local := start(t, "q1-conn", "connector", "--controller", n3.grpc, "--target", "q1", "--id", "q1-conn")
	start(t, "q2-conn", "connector", "--controller", n1.grpc, "--target", "q2", "--id", "q2-conn")
	waitTargets(ctx, t, nodes, []string{"q1", "q2"}, "", 1)

	// Lose the majority: n3 is alone.
	n1.kill(t)
	n2.kill(t)
	lost := time.Now()
	waitReadyz(ctx, t, n3, http.StatusServiceUnavailable)
	t.Logf("quorum lost: n3's /readyz is 503 %s after the kills", time.Since(lost).Round(time.Millisecond))
	if _, err := n3.api.Targets(ctx); err != nil {
		t.Errorf("without quorum, reads fail: %v", err)
	}
	if err := echo(ctx, n3, "q1"); err != nil {
		t.Errorf("without quorum, a command to a channel on the node fails: %v", err)
	}
	if err := echo(ctx, n3, "q2"); apiStatus(err) != http.StatusServiceUnavailable {
		t.Errorf("without quorum, a command to a channel on a lost node: %v, want a 503", err)
	}
	began := time.Now()
	_, err := createBatch(ctx, n3, "q1", 15*time.Second)
	t.Logf("without quorum, creating a batch failed after %s: %v", time.Since(began).Round(time.Millisecond), err)
	if err == nil {
		t.Error("without quorum, a batch was created")
	}

	// Recovery 1: restart a lost node on its data directory.
	n2.start(ctx, t, hc, 3, n1, n3)
	waitClusterLeader(ctx, t, []*clusterNode{n2, n3})
	// Ready means the new leader has committed an entry of its term: a
	// leader elected a moment ago on a loaded machine can still lose its
	// term to the node that campaigned alone, and a write in flight then
	// ends "outcome unknown", as it should.
	waitReadyz(ctx, t, n2, http.StatusOK)
	waitReadyz(ctx, t, n3, http.StatusOK)
	if _, err := createBatch(ctx, n3, "q1", 10*time.Second); err != nil {
		t.Errorf("after n2 restarted, creating a batch: %v", err)
	}

	// Recovery 2: the majority is gone for good. Stop the survivor, give it
	// a peers.json naming the servers that remain (itself), start it
	// without --join.
	n2.kill(t)
	n3.kill(t)
	peers := fmt.Sprintf(`[{"id": %q, "address": %q, "non_voter": false}]`, n3.id, n3.raft)
	if err := os.WriteFile(filepath.Join(n3.dir, "peers.json"), []byte(peers), 0o600); err != nil {
		t.Fatal(err)
	}
	n3.start(ctx, t, hc, 3)
	waitClusterLeader(ctx, t, []*clusterNode{n3})
	if _, err := os.Stat(filepath.Join(n3.dir, "peers.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("peers.json after the recovery: %v, want it removed", err)
	}
	c, err := n3.api.Cluster(ctx)
	if err != nil || len(c.Members) != 1 || c.LeaderID != n3.id {
		t.Errorf("after peers.json: cluster %+v, %v; want n3 alone, leading", c, err)
	}
	// The state survived: q1's batch from before is listed, and q1's
	// connector, back on n3, is sent a new one.
	b, err := createBatch(ctx, n3, "q1", 10*time.Second)
	if err != nil {
		t.Fatalf("after peers.json, creating a batch: %v", err)
	}
	for {
		got, err := n3.api.Batch(ctx, b.ID)
		if err == nil && got.Status == "SUCCEEDED" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("batch %s after peers.json recovery: %+v %v\n%s", b.ID, got, err, local.output())
		}
		waitTick(ctx)
	}
	all, err := n3.api.Batches(ctx, management.BatchQuery{TargetID: "q1"})
	if err != nil || len(all) != 2 {
		t.Errorf("q1's batches after the recovery: %d, %v; want 2 (one from before)", len(all), err)
	}
	n3.p.stop(ctx)
}

// waitTick waits one polling interval (bounded polling, not synchronisation).
func waitTick(ctx context.Context) {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// TestEndToEndClusterJoin: a plain single node, restarted with
// --cluster-token, keeps its state as a cluster of one; another node started
// with --join is added as a voter by it.
func TestEndToEndClusterJoin(t *testing.T) {
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	nodes := newClusterNodes(t, 2)
	a, b := nodes[0], nodes[1]
	plain, _, httpURL := startController(ctx, t, "--node-id", a.id, "--data-dir", a.dir, "--raft-addr", a.raft)
	api, err := management.NewClient(httpURL, "", hc)
	if err != nil {
		t.Fatal(err)
	}
	before, err := createBatch(ctx, &clusterNode{id: a.id, api: api}, "later", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	plain.stop(ctx)

	a.start(ctx, t, hc, 1)
	waitClusterLeader(ctx, t, []*clusterNode{a})
	b.start(ctx, t, hc, 1, a)
	if l := waitClusterLeader(ctx, t, nodes); l != a {
		t.Errorf("leader %s, want the first node", l.id)
	}
	c, err := b.api.Cluster(ctx)
	if err != nil || len(c.Members) != 2 {
		t.Errorf("the joined node sees %+v, %v; want two members", c, err)
	}
	if _, err := b.api.Batch(ctx, before.ID); err != nil {
		t.Errorf("the batch created on the plain single node, read on the joined node: %v", err)
	}
	b.p.stop(ctx)
	a.p.stop(ctx)
}

// TestSingleNodeHasNoGossip: without --cluster-token, --join or
// --bootstrap-expect > 1, a controller is a single durable node: it does not
// listen on --gossip-addr (decision 0016).
func TestSingleNodeHasNoGossip(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	gossip := freePort(t)
	p, _, _ := startController(ctx, t, "--data-dir", t.TempDir(), "--raft-addr", "127.0.0.1:0", "--gossip-addr", gossip)
	for _, network := range []string{"tcp", "udp"} {
		var err error
		if network == "tcp" {
			var l net.Listener
			if l, err = net.Listen(network, gossip); err == nil {
				_ = l.Close()
			}
		} else {
			var c net.PacketConn
			if c, err = net.ListenPacket(network, gossip); err == nil {
				_ = c.Close()
			}
		}
		if err != nil {
			t.Errorf("a single node holds its gossip address %s (%s): %v", gossip, network, err)
		}
	}
	p.stop(ctx)
}
