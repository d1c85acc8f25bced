// Command cluster runs three Exchange nodes as one cluster in one process,
// on loopback: each is a cluster.Node (raft with a data directory, gossip
// membership, node-to-node links on its gRPC port) with a controller on it.
// A connector connects to one node, a command sent on another node reaches
// it (forwarded in one hop), the leader stops, the others elect a new one,
// and commands still flow.
//
//	go run ./examples/cluster
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "exchange-cluster-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(ctx, dir, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// node is one member: its gRPC server carries connectors' channels and the
// links of the other nodes.
type node struct {
	id     string
	lis    net.Listener
	srv    *grpcchannel.Server
	served chan error
	node   *cluster.Node
	ctrl   *controller.Controller
	ran    chan error
	once   sync.Once
}

// stop stops the node as SIGTERM stops `exchange controller`: the
// controller (GOOD_BYE to its connectors), then the node, then the server.
func (n *node) stop() {
	n.once.Do(func() {
		if n.ctrl != nil {
			_ = n.ctrl.Close()
			<-n.ran
		}
		if n.node != nil {
			_ = n.node.Close()
		}
		n.srv.Stop()
		<-n.served
	})
}

func run(ctx context.Context, dir string, out io.Writer) error {
	// 1. Addresses. Raft and gossip need fixed ports (peers remember them),
	//    so pick free ones; the gRPC listener is opened right away.
	var nodes []*node
	defer func() {
		for _, n := range nodes { // controllers first, while there is a quorum
			if n.ctrl != nil {
				_ = n.ctrl.Close()
			}
		}
		for _, n := range nodes {
			n.stop()
		}
	}()
	for _, id := range []string{"n1", "n2", "n3"} {
		n := &node{id: id, srv: grpcchannel.NewServer(), served: make(chan error, 1), ran: make(chan error, 1)}
		var err error
		if n.lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		go func() { n.served <- n.srv.Serve(n.lis) }()
		nodes = append(nodes, n)
	}

	// 2. The nodes: every one expects three (bootstrap-expect) and joins
	//    the first one's gossip; they share a token that authenticates
	//    their links and encrypts their gossip. Ports are the kernel's
	//    choice (port 0). Open returns before the cluster has formed, so
	//    the nodes open one after the other.
	var first string
	for _, n := range nodes {
		cfg := cluster.DefaultConfig()
		cfg.NodeID, cfg.DataDir, cfg.RaftAddr = n.id, filepath.Join(dir, n.id), "127.0.0.1:0"
		cfg.Cluster = cluster.ClusterConfig{
			GossipAddr:        "127.0.0.1:0",
			BootstrapExpect:   3,
			GRPCAdvertiseAddr: n.lis.Addr().String(),
			Links:             grpcchannel.NewLinkTransport(n.srv, grpcchannel.WithInsecure()),
			Token:             "example-cluster-secret",
		}
		if first != "" {
			cfg.Cluster.Join = []string{first}
		}
		var err error
		if n.node, err = cluster.Open(ctx, cfg); err != nil {
			return err
		}
		if first == "" {
			first = n.node.GossipAddr()
		}
	}
	// A controller on each node.
	for _, n := range nodes {
		var err error
		if n.ctrl, err = controller.New(controller.DefaultConfig(), n.srv, n.node); err != nil {
			return err
		}
		go func() { n.ran <- n.ctrl.Run(ctx) }()
	}
	leader, err := waitLeader(ctx, nodes)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "cluster formed, leader %s\n", leader.id)
	var others []*node
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}

	// 3. A connector of target "sensors" on a node that is not the leader;
	//    its other endpoints are the failover.
	var dialers []channel.Dialer
	for _, n := range []*node{others[0], others[1], leader} {
		d, err := grpcchannel.NewDialer(n.lis.Addr().String(), grpcchannel.WithInsecure())
		if err != nil {
			return err
		}
		defer d.Close()
		dialers = append(dialers, d)
	}
	mux := command.NewMux()
	mux.RegisterFunc("READ", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, map[string]any{"celsius": 21.5})
	})
	ccfg := connector.DefaultConfig()
	ccfg.ConnectorID, ccfg.TargetID = "sensor-1", "sensors"
	conn, err := connector.New(ccfg, mux, dialers...)
	if err != nil {
		return err
	}
	connDone := make(chan error, 1)
	go func() { connDone <- conn.Run(ctx) }()
	defer func() { _ = conn.Close(); <-connDone }()
	if err := conn.WaitConnected(ctx); err != nil {
		return err
	}

	// 4. Send on the other follower: its controller forwards the command to
	//    the node that holds the channel.
	if err := read(ctx, out, others[1], others[0].id); err != nil {
		return err
	}

	// 5. Stop the leader (a stop is not a leave: it stays a voter, and two
	//    of three is still a quorum). The others elect a new leader.
	stopped := time.Now()
	leader.stop()
	next, err := waitLeader(ctx, others)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "leader %s stopped; %s elected %s after\n", leader.id, next.id, time.Since(stopped).Round(time.Millisecond))
	return read(ctx, out, others[1], others[0].id)
}

// read sends READ to "sensors" on node via, once via's replica shows the
// channel on node at.
func read(ctx context.Context, out io.Writer, via *node, at string) error {
	for !holds(via.ctrl, "sensors", at) {
		if err := tick(ctx); err != nil {
			return fmt.Errorf("%s never saw the channel on %s: %w", via.id, at, err)
		}
	}
	reply, err := via.ctrl.Send(ctx, "sensors", command.MustCommand("READ", nil))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "READ sent on %s, answered through %s: %s %s\n", via.id, at, reply.Status, reply.Payload)
	return nil
}

// holds reports whether ctrl's replica has target's primary channel on node.
func holds(ctrl *controller.Controller, target, node string) bool {
	info, ok := ctrl.Target(target)
	if !ok {
		return false
	}
	for _, ch := range info.Channels {
		if ch.ID == info.PrimaryID && ch.NodeID == node {
			return true
		}
	}
	return false
}

// waitLeader polls until every node is ready and all name the same leader.
func waitLeader(ctx context.Context, nodes []*node) (*node, error) {
	for {
		leader := ""
		for _, n := range nodes {
			if n.node.Ready() != nil || (leader != "" && n.node.LeaderID() != leader) {
				leader = "?"
				break
			}
			leader = n.node.LeaderID()
		}
		for _, n := range nodes {
			if n.id == leader {
				return n, nil
			}
		}
		if err := tick(ctx); err != nil {
			return nil, errors.New("no leader agreed on")
		}
	}
}

// tick waits a polling interval, or returns ctx's error.
func tick(ctx context.Context) error {
	t := time.NewTimer(10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
