package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/internal/freeport"
	"github.com/exchangekit/exchange/management"
)

// clusterNode is one controller process of a cluster test. Its ports are
// fixed (raft and gossip cannot use port 0 in a cluster; a fixed gRPC port
// lets connectors find a restarted node) and its data directory survives
// a restart.
type clusterNode struct {
	id                 string
	dir                string
	gossip, raft, grpc string
	extra              []string // more flags
	p                  *proc
	api                *management.Client
}

// newClusterNodes picks the ids, ports and data directories of n nodes.
func newClusterNodes(t *testing.T, n int) []*clusterNode {
	nodes := make([]*clusterNode, n)
	for i := range nodes {
		nodes[i] = &clusterNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(),
			gossip: freePort(t), raft: freePort(t), grpc: freePort(t)}
	}
	return nodes
}

// start starts (or restarts) n's process, expecting `expect` nodes and
// joining the gossip addresses of join, and waits for its API address.
func (n *clusterNode) start(ctx context.Context, t *testing.T, hc *http.Client, expect int, join ...*clusterNode) {
	t.Helper()
	n.launch(t, expect, join...)
	n.waitAPI(ctx, t, hc)
}

// args are the command line of n's process.
func (n *clusterNode) args(expect int, join []*clusterNode) []string {
	args := []string{"controller", "--node-id", n.id, "--data-dir", n.dir,
		"--grpc-addr", n.grpc, "--http-addr", "127.0.0.1:0", "--raft-addr", n.raft, "--gossip-addr", n.gossip,
		"--bootstrap-expect", fmt.Sprint(expect), "--cluster-token", "e2e-cluster-secret",
		"--advertise-addr", "127.0.0.1", "--health-interval", "1s", "--health-timeout", "1s"}
	var addrs []string
	for _, o := range join {
		addrs = append(addrs, o.gossip)
	}
	if len(addrs) > 0 {
		args = append(args, "--join", strings.Join(addrs, ","))
	}
	return append(args, n.extra...)
}

// launch starts n's process like start, without waiting: a node with --join
// prints its addresses once it has joined one of them.
func (n *clusterNode) launch(t *testing.T, expect int, join ...*clusterNode) {
	t.Helper()
	n.p = start(t, n.id, n.args(expect, join)...)
}

// waitAPI waits for the line in which n's process tells its addresses.
func (n *clusterNode) waitAPI(ctx context.Context, t *testing.T, hc *http.Client) {
	t.Helper()
	m, _ := n.p.waitLine(ctx, 0, listeningRe)
	var err error
	if n.api, err = management.NewClient(m[2], "", hc); err != nil {
		t.Fatal(err)
	}
}

// kill kills n's process with SIGKILL and waits for it to be gone.
func (n *clusterNode) kill(t *testing.T) {
	t.Helper()
	if err := n.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-n.p.done
}

// others returns nodes without n.
func others(nodes []*clusterNode, n *clusterNode) []*clusterNode {
	var out []*clusterNode
	for _, o := range nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// startCluster starts nodes as one cluster, each joining the others.
func startCluster(ctx context.Context, t *testing.T, hc *http.Client, nodes []*clusterNode) {
	t.Helper()
	for _, n := range nodes {
		n.launch(t, len(nodes), others(nodes, n)...)
	}
	for _, n := range nodes {
		n.waitAPI(ctx, t, hc)
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	addr, err := freeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

var connectedRe = regexp.MustCompile(`^CONNECTED connector=(\S+) target=(\S+) controller=(\S+)`)

// lastConnected returns the controller of the last CONNECTED line of p, and
// how many CONNECTED lines it printed.
func lastConnected(p *proc) (controller string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if m := connectedRe.FindStringSubmatch(l); m != nil {
			controller, n = m[3], n+1
		}
	}
	return controller, n
}

// TestEndToEndCluster runs three controller processes as one cluster, six
// connector processes spread over them, and kills the leader with SIGKILL:
// commands keep flowing through the survivors, no target ever has two
// primaries or a primary epoch that goes back, and the dead node's connectors
// fail over and get their targets a primary again.
func TestEndToEndCluster(t *testing.T) {
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	exchangeBinary(t) // build before the clock of the cluster starts

	nodes := newClusterNodes(t, 3)
	startCluster(ctx, t, hc, nodes)
	formed := time.Now()
	leader := waitClusterLeader(ctx, t, nodes)
	t.Logf("cluster formed: leader %s, every node ready, %s after the processes printed their addresses",
		leader.id, time.Since(formed).Round(time.Millisecond))

	// Three targets, two connectors each; connector a of target i prefers
	// node i, connector b node i+1, so every node holds channels of two
	// targets and none of the third: commands to it are forwarded.
	anyLine := make(chan struct{}, 1)
	conns := map[string]*proc{}
	var targets []string
	for i := range nodes {
		target := fmt.Sprintf("t%d", i+1)
		targets = append(targets, target)
		for j, suffix := range []string{"a", "b"} {
			var eps []string
			for k := range nodes {
				eps = append(eps, nodes[(i+j+k)%len(nodes)].grpc)
			}
			id := target + suffix
			conns[id] = startNotify(t, anyLine, id, "connector", "--controller", strings.Join(eps, ","),
				"--target", target, "--id", id)
		}
	}
	for _, c := range conns {
		c.waitLine(ctx, 0, connectedRe)
	}
	waitTargets(ctx, t, nodes, targets, "", 2)

	// Commands flow from every node to every target, including the one it
	// holds no channel of.
	for _, n := range nodes {
		all, err := n.api.Targets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		remoteOnly := 0
		for _, tg := range all {
			local := false
			for _, ch := range tg.Channels {
				local = local || ch.Local
			}
			if !local {
				remoteOnly++
			}
		}
		if remoteOnly == 0 {
			t.Errorf("%s holds a channel of every target: forwarding is not exercised", n.id)
		}
		for _, target := range targets {
			if err := echo(ctx, n, target); err != nil {
				t.Errorf("command via %s to %s: %v", n.id, target, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// kill -9 the leader.
	survivors := others(nodes, leader)
	moved := map[string]int{} // connectors of the dead node: CONNECTED lines before the kill
	for id, c := range conns {
		if ctl, n := lastConnected(c); ctl == leader.grpc {
			moved[id] = n
		}
	}
	killed := time.Now()
	leader.kill(t)

	var (
		sends, failures    int
		lastFailure        time.Duration
		firstFailure       string
		newLeader          string
		elected, reconnect time.Duration
		flowing            time.Duration // first round after which every send succeeded to the end
		goodRounds         int
	)
	byStatus := map[int]int{} // failed sends by HTTP status (0: no answer)
	inv := newPrimaryInvariant()
	poll := time.NewTicker(50 * time.Millisecond) // bounded polling, not synchronisation by sleep
	defer poll.Stop()
	for goodRounds < 5 || newLeader == "" || reconnect == 0 {
		if ctx.Err() != nil {
			t.Fatalf("after kill -9 of %s: new leader %q, %d of %d connectors moved, %d/%d sends failed (first: %s)",
				leader.id, newLeader, countMoved(conns, moved, leader.grpc), len(moved), failures, sends, firstFailure)
		}
		if newLeader == "" {
			if l := apiLeader(ctx, survivors); l != "" && l != leader.id {
				newLeader, elected = l, time.Since(killed)
			}
		}
		if reconnect == 0 && countMoved(conns, moved, leader.grpc) == len(moved) {
			reconnect = time.Since(killed)
		}
		ok := true
		for _, n := range survivors {
			for _, target := range targets {
				sends++
				if err := echo(ctx, n, target); err != nil {
					failures++
					lastFailure = time.Since(killed)
					byStatus[apiStatus(err)]++
					if firstFailure == "" {
						firstFailure = fmt.Sprintf("via %s to %s: %v", n.id, target, err)
					}
					ok = false
				}
			}
			inv.check(ctx, t, n)
		}
		switch {
		case !ok:
			goodRounds, flowing = 0, 0
		case goodRounds == 0:
			goodRounds, flowing = 1, time.Since(killed)
		default:
			goodRounds++
		}
		select {
		case <-poll.C:
		case <-ctx.Done():
		}
	}
	t.Logf("kill -9 of leader %s: %s elected after %s; commands flowing again after %s (%d of %d sends failed, the last %s after the kill; first: %s); %d connectors of %s reconnected elsewhere after %s",
		leader.id, newLeader, elected.Round(time.Millisecond), flowing.Round(time.Millisecond), failures, sends,
		lastFailure.Round(time.Millisecond), firstFailure, len(moved), leader.id, reconnect.Round(time.Millisecond))
	t.Logf("failed sends by HTTP status: %v", byStatus)
	for code := range byStatus {
		if code != http.StatusServiceUnavailable && code != http.StatusGatewayTimeout {
			t.Errorf("%d sends failed with HTTP %d; while a node is lost a client must see 503 or 504 (retry)", byStatus[code], code)
		}
	}
	if lastFailure > 15*time.Second {
		t.Errorf("commands failed until %s after the kill, want them flowing within 15s", lastFailure)
	}
	if len(moved) == 0 {
		t.Error("no connector was connected to the leader: failover not exercised")
	}

	// The dead node's channels are gone and every target has a primary
	// again, on a live node, as every survivor sees it.
	waitTargets(ctx, t, survivors, targets, leader.id, 2)
	for _, n := range survivors {
		inv.check(ctx, t, n)
	}
	t.Logf("every target has 2 channels and a primary on the survivors %s after the kill", time.Since(killed).Round(time.Millisecond))
	// The dead node is still a voter (a crash is not a leave), shown dead
	// once the gossip has declared it so (its connectors may have taken
	// their channels over on the survivors before that).
	for _, n := range survivors {
		var c management.Cluster
		poll := time.NewTicker(20 * time.Millisecond)
		for {
			var err error
			if c, err = n.api.Cluster(ctx); err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(c.Members, func(m management.Member) bool { return m.NodeID == leader.id && m.State == "dead" }) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s never listed %s as dead: %+v", n.id, leader.id, c.Members)
			case <-poll.C:
			}
		}
		poll.Stop()
		for _, m := range c.Members {
			if want := map[bool]string{true: "dead", false: "alive"}[m.NodeID == leader.id]; m.State != want {
				t.Errorf("%s lists %s as %q, want %q", n.id, m.NodeID, m.State, want)
			}
		}
		if len(c.Members) != 3 {
			t.Errorf("%s lists %d voters, want 3 (the dead one stays a voter)", n.id, len(c.Members))
		}
	}

	stopping := time.Now()
	for _, c := range conns {
		c.stop(ctx)
	}
	for _, n := range survivors {
		n.p.stop(ctx)
	}
	t.Logf("SIGTERM to the connectors, then the survivors: all stopped cleanly in %s", time.Since(stopping).Round(time.Millisecond))
}

// echo sends an ECHO through n to target, with a short deadline, and checks
// the reply.
func echo(ctx context.Context, n *clusterNode, target string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	want := fmt.Sprintf("%q", "via "+n.id+" to "+target)
	r, err := n.api.Send(ctx, target, management.CommandRequest{Type: string(TypeEcho), Payload: json.RawMessage(want), TimeoutMs: 2000})
	switch {
	case err != nil:
		return err
	case r.Status != "SUCCEEDED" || string(r.Payload) != want:
		return fmt.Errorf("reply %s %s, want SUCCEEDED %s", r.Status, r.Payload, want)
	}
	return nil
}

// apiStatus returns the HTTP status of a management API error, 0 when the
// API did not answer.
func apiStatus(err error) int {
	var api *management.APIError
	if errors.As(err, &api) {
		return api.StatusCode
	}
	return 0
}

// countMoved counts the connectors of moved that printed a CONNECTED line to
// another controller than dead since the kill.
func countMoved(conns map[string]*proc, moved map[string]int, dead string) int {
	n := 0
	for id, before := range moved {
		if ctl, now := lastConnected(conns[id]); now > before && ctl != dead {
			n++
		}
	}
	return n
}

// apiLeader returns the leader every node in nodes is ready with and
// agrees on, or "".
func apiLeader(ctx context.Context, nodes []*clusterNode) string {
	leader := ""
	for _, n := range nodes {
		if err := n.api.Ready(ctx); err != nil {
			return ""
		}
		c, err := n.api.Cluster(ctx)
		if err != nil || c.LeaderID == "" || (leader != "" && c.LeaderID != leader) {
			return ""
		}
		leader = c.LeaderID
	}
	return leader
}

// waitClusterLeader waits until every node's /readyz is 200 and all agree on
// a leader that is one of them and lists at least as many members.
func waitClusterLeader(ctx context.Context, t *testing.T, nodes []*clusterNode) *clusterNode {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if id := apiLeader(ctx, nodes); id != "" {
			for _, n := range nodes {
				c, err := n.api.Cluster(ctx)
				if err == nil && n.id == id && len(c.Members) >= len(nodes) {
					return n
				}
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			var s []string
			for _, n := range nodes {
				c, err := n.api.Cluster(ctx)
				s = append(s, fmt.Sprintf("%s: %+v %v ready=%v", n.id, c, err, n.api.Ready(ctx)))
			}
			t.Fatalf("no agreed leader: %s", strings.Join(s, "; "))
		}
	}
}

// waitTargets waits until every node lists each target with `channels`
// channels, none on node `gone`, and one primary.
func waitTargets(ctx context.Context, t *testing.T, nodes []*clusterNode, targets []string, gone string, channels int) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var why string
	for {
		why = ""
		for _, n := range nodes {
			all, err := n.api.Targets(ctx)
			if err != nil {
				why = fmt.Sprintf("%s: %v", n.id, err)
				break
			}
			byID := map[string]management.Target{}
			for _, tg := range all {
				byID[tg.ID] = tg
			}
			for _, target := range targets {
				tg := byID[target]
				primaries := 0
				for _, ch := range tg.Channels {
					if ch.Node == gone {
						why = fmt.Sprintf("%s lists a channel of %s on %s", n.id, target, gone)
					}
					if ch.Primary {
						primaries++
					}
				}
				if len(tg.Channels) != channels || primaries != 1 {
					why = fmt.Sprintf("%s lists %s with %d channels and %d primaries", n.id, target, len(tg.Channels), primaries)
				}
			}
		}
		if why == "" {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("targets never settled: %s", why)
		}
	}
}

// primaryInvariant checks, over every listing it is given, that a target has
// at most one primary, that the primary epoch a node shows for a target never
// goes back, and that one epoch of a target always names the same channel.
type primaryInvariant struct {
	last    map[string]uint64            // node/target → highest primary epoch seen
	channel map[string]map[uint64]string // target → epoch → primary channel
}

func newPrimaryInvariant() *primaryInvariant {
	return &primaryInvariant{last: map[string]uint64{}, channel: map[string]map[uint64]string{}}
}

func (p *primaryInvariant) check(ctx context.Context, t *testing.T, n *clusterNode) {
	t.Helper()
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	all, err := n.api.Targets(qctx)
	if err != nil {
		var api *management.APIError
		if errors.As(err, &api) || qctx.Err() != nil {
			return // a node between leaders may refuse or be slow: not a primary violation
		}
		t.Errorf("%s: list targets: %v", n.id, err)
		return
	}
	for _, tg := range all {
		var primaries []management.Channel
		for _, ch := range tg.Channels {
			if ch.Primary {
				primaries = append(primaries, ch)
			}
		}
		if len(primaries) > 1 {
			t.Errorf("%s: target %s has %d primaries: %+v", n.id, tg.ID, len(primaries), primaries)
			continue
		}
		if len(primaries) == 0 {
			continue
		}
		pr := primaries[0]
		key := n.id + "/" + tg.ID
		if pr.Epoch < p.last[key] {
			t.Errorf("%s: primary epoch of %s went back from %d to %d", n.id, tg.ID, p.last[key], pr.Epoch)
		}
		p.last[key] = max(p.last[key], pr.Epoch)
		if p.channel[tg.ID] == nil {
			p.channel[tg.ID] = map[uint64]string{}
		}
		if was, ok := p.channel[tg.ID][pr.Epoch]; ok && was != pr.ID {
			t.Errorf("%s: target %s epoch %d names primary %s, another node saw %s", n.id, tg.ID, pr.Epoch, pr.ID, was)
		}
		p.channel[tg.ID][pr.Epoch] = pr.ID
	}
}

// freeLoopback returns a loopback address whose port was free a moment ago:
// the processes' raft and gossip ports must be known before they start.
func freeLoopback() (string, error) { return freeport.Loopback() }
