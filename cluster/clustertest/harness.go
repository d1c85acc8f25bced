package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/internal/freeport"
)

// Harness runs an in-process cluster of real nodes on loopback: raft over
// TCP, memberlist gossip, node-to-node links over gRPC. Every node keeps its
// data directory, so Stop and Restart model a process restart.
type Harness struct {
	t         testing.TB
	token     string
	log       *slog.Logger
	configure func(*cluster.Config) // nil: the harness's settings only
	net       *Network              // every node's raft, gossip and links go through it

	mu    sync.Mutex
	nodes []*Member
}

// Member is one node of a Harness.
type Member struct {
	ID      string
	Dir     string
	h       *Harness
	node    *cluster.Node
	srv     *grpcchannel.Server
	lis     net.Listener
	gossip  string // the gossip address, kept across restarts
	raft    string // the raft address, kept across restarts
	grpc    string // the gRPC address, kept across restarts
	serving chan struct{}
}

// Node returns the member's running node (nil while stopped).
func (m *Member) Node() *cluster.Node {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	return m.node
}

// Server returns the member's gRPC server: register connectors' streams on
// it (Accept) to run a controller on the node.
func (m *Member) Server() *grpcchannel.Server {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	return m.srv
}

// GRPCAddr is the member's gRPC address (connectors and links).
func (m *Member) GRPCAddr() string { return m.grpc }

// NewHarness starts n nodes that form one cluster (the first bootstraps
// with BootstrapExpect n, every node joins the first's gossip) and waits
// until they have a leader and every node is ready. log may be nil.
func NewHarness(t testing.TB, n int, log *slog.Logger) *Harness {
	t.Helper()
	return NewHarnessConfig(t, n, log, nil)
}

// NewHarnessConfig is NewHarness with configure applied to every node's
// Config, after the harness's own settings, at every start (and restart):
// to change timings, say. configure must keep the addresses, the data
// directory, the node id and the links the harness set. nil changes
// nothing.
func NewHarnessConfig(t testing.TB, n int, log *slog.Logger, configure func(*cluster.Config)) *Harness {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Harness{t: t, token: "harness-token", log: log, configure: configure, net: NewNetwork()}
	t.Cleanup(h.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Ports are picked free, then bound by raft and memberlist: another
	// process may take one in between. Then the whole cluster starts again
	// on fresh ports (a few times at most).
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = h.form(t, n); err == nil {
			h.WaitReady(ctx)
			return h
		}
		h.Close()
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("start a %d-node cluster: %v", n, err)
	return nil
}

// form starts n fresh nodes on fresh ports.
func (h *Harness) form(t testing.TB, n int) error {
	h.mu.Lock()
	h.nodes = nil
	for i := range n {
		m := &Member{ID: fmt.Sprintf("node-%d", i+1), Dir: t.TempDir(), h: h,
			gossip: freeAddr(t), raft: freeAddr(t), grpc: freeAddr(t)}
		h.nodes = append(h.nodes, m)
	}
	nodes := h.nodes
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range nodes {
		wg.Go(func() { errs[i] = m.start(ctx, n) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("start %s: %w", nodes[i].ID, err)
		}
	}
	return nil
}

// freeAddr returns a loopback address for a node's server that must keep it
// across restarts (see internal/freeport).
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func (m *Member) start(ctx context.Context, expect int) error {
	h := m.h
	lis, err := net.Listen("tcp", m.grpc)
	if err != nil {
		return err
	}
	srv := grpcchannel.NewServer()
	cfg := cluster.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr = m.ID, m.Dir, m.raft
	cfg.Logger = h.log.With("node", m.ID)
	cfg.Cluster = cluster.ClusterConfig{
		GossipAddr:        m.gossip,
		BootstrapExpect:   expect,
		GRPCAdvertiseAddr: lis.Addr().String(),
		Links:             grpcchannel.NewLinkTransport(srv, grpcchannel.WithInsecure()),
		Token:             h.token,
		DeadNodeGrace:     3 * time.Second,
	}
	h.net.AddAddr(m.ID, m.raft, m.gossip, lis.Addr().String())
	cfg.WrapRaftTransport = h.net.WrapRaft(m.ID)
	cfg.Cluster.WrapGossipTransport = h.net.WrapGossip(m.ID)
	cfg.Cluster.Links = h.net.WrapLinks(m.ID, cfg.Cluster.Links)
	for _, o := range h.nodes {
		if o != m {
			cfg.Cluster.Join = append(cfg.Cluster.Join, o.gossip)
		}
	}
	if h.configure != nil {
		h.configure(&cfg)
	}
	serving := make(chan struct{})
	go func() { defer close(serving); _ = srv.Serve(lis) }()
	node, err := cluster.Open(ctx, cfg)
	if err != nil {
		srv.Stop()
		<-serving
		return err
	}
	h.mu.Lock()
	m.node, m.srv, m.lis, m.serving = node, srv, lis, serving
	h.mu.Unlock()
	return nil
}

// Network returns the network between the members: Partition, Isolate
// and Heal cut and restore raft, gossip and links together.
func (h *Harness) Network() *Network { return h.net }

// Nodes returns the members.
func (h *Harness) Nodes() []*Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Member(nil), h.nodes...)
}

// WaitReady waits until every running node is Ready (knows a leader, has
// caught up) and they agree on the leader.
func (h *Harness) WaitReady(ctx context.Context) *Member {
	h.t.Helper()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if l := h.agreedLeader(); l != nil {
			return l
		}
		select {
		case <-ctx.Done():
			h.t.Fatalf("cluster not ready: %s", h.describe())
			return nil
		case <-t.C:
		}
	}
}

func (h *Harness) agreedLeader() *Member {
	var leader string
	for _, m := range h.Nodes() {
		n := m.Node()
		if n == nil {
			continue
		}
		if n.Ready() != nil {
			return nil
		}
		switch id := n.LeaderID(); {
		case leader == "":
			leader = id
		case id != leader:
			return nil
		}
	}
	for _, m := range h.Nodes() {
		if m.ID == leader && m.Node() != nil {
			return m
		}
	}
	return nil
}

func (h *Harness) describe() string {
	s := ""
	for _, m := range h.Nodes() {
		n := m.Node()
		if n == nil {
			s += fmt.Sprintf("[%s stopped] ", m.ID)
			continue
		}
		s += fmt.Sprintf("[%s %s leader=%q ready=%v] ", m.ID, n.RaftState(), n.LeaderID(), n.Ready())
	}
	return s
}

// Leader waits for an agreed leader and returns it.
func (h *Harness) Leader() *Member {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.WaitReady(ctx)
}

// Followers returns the running members that do not lead.
func (h *Harness) Followers() []*Member {
	leader := h.Leader()
	var out []*Member
	for _, m := range h.Nodes() {
		if m != leader && m.Node() != nil {
			out = append(out, m)
		}
	}
	return out
}

// Stop stops a member as a crash would (no leave, no goodbye): its node is
// closed and its gRPC server stopped.
func (h *Harness) Stop(m *Member) {
	h.mu.Lock()
	node, srv, serving := m.node, m.srv, m.serving
	m.node, m.srv = nil, nil
	h.mu.Unlock()
	if node == nil {
		return
	}
	srv.Stop()
	_ = node.Close()
	<-serving
}

// Restart starts a stopped member again on its data directory and
// addresses.
func (h *Harness) Restart(m *Member) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.start(ctx, len(h.nodes)); err != nil {
		h.t.Fatalf("restart %s: %v", m.ID, err)
	}
}

// Close stops every member.
func (h *Harness) Close() {
	var wg sync.WaitGroup
	for _, m := range h.Nodes() {
		wg.Go(func() { h.Stop(m) })
	}
	wg.Wait()
}
