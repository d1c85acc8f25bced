package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
)

// demoNode is one node of the cluster demo: a real cluster.Node (raft with
// its data directory, gossip and links on loopback) and a controller on it.
type demoNode struct {
	id       string
	lis      net.Listener // gRPC: connectors and node-to-node links
	srv      *grpcchannel.Server
	served   chan error
	node     *cluster.Node
	ctrl     *controller.Controller
	ctrlDone chan error
	stopOnce sync.Once
	closing  time.Time // when stop began to close the node (raft stops heartbeating)
}

// stop stops the node as SIGTERM stops `exchange controller`: the
// controller says GOOD_BYE (reconnect elsewhere) to its connectors and
// unregisters their channels, then the gRPC server and the node close. The
// node does not leave the cluster: it stays a voter.
func (n *demoNode) stop() {
	n.stopOnce.Do(func() {
		if n.ctrl != nil {
			_ = n.ctrl.Close()
			<-n.ctrlDone
		}
		n.srv.Stop()
		<-n.served
		if n.node != nil {
			n.closing = time.Now()
			_ = n.node.Close()
		}
	})
}

// startDemoCluster starts ids as one cluster in this process, every node
// expecting them all (bootstrap-expect) and joining the first one's gossip,
// with a controller on each. Every port is picked by the kernel (port 0): the
// nodes open one after the other, each joining the first. On error nothing
// is left running.
func startDemoCluster(ctx context.Context, dir string, ids []string, log *slog.Logger) (_ []*demoNode, err error) {
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	nodes := make([]*demoNode, len(ids))
	for i, id := range ids {
		n := &demoNode{id: id, srv: grpcchannel.NewServer(), served: make(chan error, 1)}
		n.lis, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stopAll(nodes)
			return nil, err
		}
		go func() { n.served <- n.srv.Serve(n.lis) }()
		nodes[i] = n
	}
	defer func() {
		if err != nil {
			stopAll(nodes)
		}
	}()
	var first string // the first node's gossip address, which the others join
	for _, n := range nodes {
		cfg := cluster.DefaultConfig()
		cfg.NodeID, cfg.DataDir, cfg.RaftAddr = n.id, filepath.Join(dir, n.id), "127.0.0.1:0"
		if log.Enabled(ctx, slog.LevelDebug) {
			// Below debug the nodes' own logs stay out of the narration:
			// raft logs every failed heartbeat to the stopped leader as an
			// error (expected in this story), and memberlist may log from
			// a goroutine it does not wait for after the node closed.
			cfg.Logger = log.With("node", n.id)
		}
		cfg.Cluster = cluster.ClusterConfig{
			GossipAddr:        "127.0.0.1:0",
			BootstrapExpect:   len(nodes),
			GRPCAdvertiseAddr: n.lis.Addr().String(),
			Links:             grpcchannel.NewLinkTransport(n.srv, grpcchannel.WithInsecure()),
			Token:             token,
		}
		if first != "" {
			cfg.Cluster.Join = []string{first}
		}
		if n.node, err = cluster.Open(ctx, cfg); err != nil {
			return nil, err
		}
		if first == "" {
			first = n.node.GossipAddr()
		}
	}
	for _, n := range nodes {
		cfg := controller.DefaultConfig()
		cfg.Logger = log.With("node", n.id)
		if n.ctrl, err = controller.New(cfg, n.srv, n.node); err != nil {
			return nil, err
		}
		n.ctrlDone = make(chan error, 1)
		go func() { n.ctrlDone <- n.ctrl.Run(ctx) }()
	}
	return nodes, nil
}

// stopAll stops the nodes: first every controller (while the cluster still
// has a quorum to unregister their channels), then the nodes.
func stopAll(nodes []*demoNode) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n != nil && n.ctrl != nil {
			wg.Go(func() { _ = n.ctrl.Close() })
		}
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			wg.Go(n.stop)
		}
	}
	wg.Wait()
}

// demoLeader returns the node every node in nodes is ready with and names
// as leader, or nil.
func demoLeader(nodes []*demoNode) *demoNode {
	var leader string
	for _, n := range nodes {
		if n.node.Ready() != nil {
			return nil
		}
		switch id := n.node.LeaderID(); {
		case leader == "":
			leader = id
		case id != leader:
			return nil
		}
	}
	for _, n := range nodes {
		if n.id == leader {
			return n
		}
	}
	return nil
}

// waitLeader polls until the nodes agree on a leader among them.
func waitLeader(ctx context.Context, nodes []*demoNode) (*demoNode, error) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if l := demoLeader(nodes); l != nil {
			return l, nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("demo: no agreed leader: %w", ctx.Err())
		}
	}
}

// runClusterDemo narrates three real cluster nodes in one process: the
// cluster forms, a command sent on one node reaches a connector on another,
// the leader stops, a new one is elected, and commands still flow.
func runClusterDemo(ctx context.Context, out io.Writer, log *slog.Logger) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d := &demo{out: out, log: log, t0: time.Now(), ctx: ctx}
	dir, err := os.MkdirTemp("", "exchange-demo-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	d.say("demo         three nodes in this process: raft (data in %s), gossip and node-to-node links on loopback", dir)
	nodes, err := startDemoCluster(ctx, dir, []string{"n1", "n2", "n3"}, log)
	if err != nil {
		return fmt.Errorf("demo: start the cluster: %w", err)
	}
	var conns []*demoClusterConnector
	defer func() {
		for _, c := range conns {
			c.close()
		}
		d.mu.Lock()
		d.quiet = true
		d.mu.Unlock()
		stopAll(nodes)
	}()
	leader, err := waitLeader(ctx, nodes)
	if err != nil {
		return err
	}
	d.say("cluster      formed: every node bootstrapped the same three voters; the leader is %s", leader.id)
	var followers []*demoNode
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	f1, f2 := followers[0], followers[1]

	// alpha-1 prefers a follower, beta-1 the leader; both list every node.
	alpha, err := d.connect("alpha-1", "alpha", f1, f2, leader)
	if err != nil {
		return err
	}
	conns = append(conns, alpha)
	beta, err := d.connect("beta-1", "beta", leader, f1, f2)
	if err != nil {
		return err
	}
	conns = append(conns, beta)
	for _, c := range conns {
		if err := c.waitAt(ctx, ""); err != nil {
			return err
		}
	}

	// A command sent on f2 to alpha, whose channel is on f1: forwarded in one hop.
	if err := d.clusterEcho(ctx, f2, nodes, "alpha", "hello from "+f2.id); err != nil {
		return err
	}

	// Stop the leader.
	d.say("demo         stopping %s, the leader, as SIGTERM does (GOOD_BYE to its connectors; it stays a voter)", leader.id)
	leader.stop()
	newLeader, err := waitLeader(ctx, followers)
	if err != nil {
		return err
	}
	d.say("cluster      new leader %s elected %s after %s's raft stopped", newLeader.id,
		time.Since(leader.closing).Round(time.Millisecond), leader.id)
	if err := beta.waitAt(ctx, leader.id); err != nil {
		return err
	}
	for _, n := range followers {
		for _, target := range []string{"alpha", "beta"} {
			if err := d.clusterEcho(ctx, n, followers, target, "still there?"); err != nil {
				return err
			}
		}
	}
	d.say("demo         done")
	return nil
}

// demoClusterConnector is a connector of the cluster demo.
type demoClusterConnector struct {
	c         *connector.Connector
	done      chan error
	dialers   []*grpcchannel.Dialer
	connected chan string // the node each new channel is on
}

func (c *demoClusterConnector) close() {
	_ = c.c.Close()
	<-c.done
	for _, d := range c.dialers {
		_ = d.Close()
	}
}

// waitAt waits for the connector's next channel on a node other than not.
func (c *demoClusterConnector) waitAt(ctx context.Context, not string) error {
	for {
		select {
		case at := <-c.connected:
			if at != not {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("demo: connector %s: no channel: %w", c.c.ConnectorID(), ctx.Err())
		}
	}
}

// connect starts a connector of target with endpoints the gRPC addresses of
// order, in that order; it narrates where it connects.
func (d *demo) connect(id, target string, order ...*demoNode) (*demoClusterConnector, error) {
	dc := &demoClusterConnector{done: make(chan error, 1), connected: make(chan string, 8)}
	var ids []string
	for _, n := range order {
		gd, err := grpcchannel.NewDialer(n.lis.Addr().String(), grpcchannel.WithInsecure())
		if err != nil {
			dc.closeDialers()
			return nil, err
		}
		dc.dialers = append(dc.dialers, gd)
		ids = append(ids, n.id)
	}
	mux := command.NewMux()
	mux.RegisterFunc(TypeEcho, func(_ context.Context, c *command.Command) (*command.Reply, error) {
		d.say("%-12s <- %s %s, answering", id, c.Type, c.Payload)
		return command.Succeeded(c, c.Payload)
	})
	cfg := connector.DefaultConfig()
	cfg.ConnectorID, cfg.TargetID, cfg.Logger = id, target, d.log
	cfg.BackoffBase = 20 * time.Millisecond
	cfg.OnState = func(s connector.StateChange) {
		if s.State != connector.StateConnected {
			return
		}
		role := "a follower"
		if order[s.Endpoint].node.Leader() {
			role = "the leader"
		}
		d.say("%-12s connected to %s (%s), channel %.8s…", id, ids[s.Endpoint], role, s.ChannelID)
		select {
		case dc.connected <- ids[s.Endpoint]:
		default:
		}
	}
	cfg.OnPrimary = func(primary bool, epoch uint64) {
		if primary {
			d.say("%-12s is now the PRIMARY of %s (epoch %d)", id, target, epoch)
		}
	}
	var dialers []channel.Dialer
	for _, gd := range dc.dialers {
		dialers = append(dialers, gd)
	}
	c, err := connector.New(cfg, mux, dialers...)
	if err != nil {
		dc.closeDialers()
		return nil, err
	}
	dc.c = c
	go func() { dc.done <- c.Run(d.ctx) }()
	d.say("%-12s connecting as target %s, endpoints %v in that order", id, target, ids)
	return dc, nil
}

func (c *demoClusterConnector) closeDialers() {
	for _, d := range c.dialers {
		_ = d.Close()
	}
}

// clusterEcho sends an ECHO on node n to target and narrates where it went.
// The channel may have just moved (its registration is replicated through
// raft), so n's replica is polled, bounded by ctx, until its primary is on
// one of the running nodes.
func (d *demo) clusterEcho(ctx context.Context, n *demoNode, running []*demoNode, target, text string) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var at string
	for at == "" {
		if info, ok := n.ctrl.Target(target); ok {
			for _, ch := range info.Channels {
				if ch.ID == info.PrimaryID && slices.ContainsFunc(running, func(r *demoNode) bool { return r.id == ch.NodeID }) {
					at = ch.NodeID
				}
			}
		}
		if at != "" {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("demo: %s never saw a primary channel of %s: %w", n.id, target, ctx.Err())
		}
	}
	how := "local"
	if at != n.id {
		how = "forwarded " + n.id + " → " + at + " in one hop"
	}
	cmd := command.MustCommand(TypeEcho, text)
	d.say("%-12s -> %s to %s: %q (its channel is on %s)", n.id, cmd.Type, target, text, at)
	start := time.Now()
	reply, err := n.ctrl.Send(ctx, target, cmd)
	if err != nil {
		return fmt.Errorf("demo: send to %s via %s: %w", target, n.id, err)
	}
	d.say("%-12s <- %s %s from %s in %s (%s)", n.id, reply.Status, reply.Payload, target,
		time.Since(start).Round(time.Microsecond), how)
	return nil
}
