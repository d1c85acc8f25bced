package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exchangekit/exchange/cluster/membership"
	"github.com/exchangekit/exchange/state"
)

// defaultDeadNodeGrace is ClusterConfig.DeadNodeGrace's default.
const defaultDeadNodeGrace = 15 * time.Second

// reconcileInterval is how often the leader reconciles raft voters and the
// registry with the membership even when no event came: a safety net.
const reconcileInterval = 5 * time.Second

// startMembership joins the gossip with this node's meta and starts the loop
// that reacts to membership changes (bootstrap, leader kicks).
func (n *Node) startMembership(ctx context.Context, existing bool) error {
	cc := n.cfg.Cluster
	mcfg := membership.DefaultConfig()
	mcfg.NodeID = n.id
	mcfg.BindAddr = cc.GossipAddr
	mcfg.AdvertiseAddr = cc.GossipAdvertiseAddr
	mcfg.Join = cc.Join
	// A node that holds raft state is a member already: raft finds its
	// peers at the addresses it stored, so Open must not wait for a gossip
	// peer (in a full cluster restart the nodes may come back one at a
	// time, and the first would wait for ever).
	mcfg.JoinInBackground = existing
	mcfg.Timings = overrideTimings(mcfg.Timings, cc.GossipTimings)
	key := sha256.Sum256([]byte("exchange gossip key\x00" + cc.Token))
	mcfg.SecretKey = key[:]
	mcfg.Logger = n.log
	mcfg.WrapTransport = cc.WrapGossipTransport
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	mcfg.Meta = membership.Meta{NodeID: n.id, RaftAddr: string(n.trans.LocalAddr()), GRPCAddr: cc.GRPCAdvertiseAddr,
		Incarnation: hex.EncodeToString(inc[:]), Version: 1}
	m, err := membership.Start(ctx, mcfg)
	if err != nil {
		return fmt.Errorf("cluster: gossip on %s: %w", cc.GossipAddr, err)
	}
	n.members = m
	n.kickLeader = make(chan struct{}, 1)
	n.bg.Go(func() { n.watchMembers(existing) })
	return nil
}

// overrideTimings returns t with every non-zero field of o.
func overrideTimings(t, o membership.Timings) membership.Timings {
	set := func(dst *time.Duration, v time.Duration) {
		if v != 0 {
			*dst = v
		}
	}
	setInt := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	set(&t.ProbeInterval, o.ProbeInterval)
	set(&t.ProbeTimeout, o.ProbeTimeout)
	setInt(&t.SuspicionMult, o.SuspicionMult)
	set(&t.GossipInterval, o.GossipInterval)
	setInt(&t.GossipNodes, o.GossipNodes)
	setInt(&t.RetransmitMult, o.RetransmitMult)
	set(&t.PushPullInterval, o.PushPullInterval)
	set(&t.TCPTimeout, o.TCPTimeout)
	set(&t.GossipToTheDeadTime, o.GossipToTheDeadTime)
	set(&t.DeadNodeReclaimTime, o.DeadNodeReclaimTime)
	return t
}

// watchMembers consumes membership events until Close: it bootstraps the
// cluster once BootstrapExpect nodes are seen (on a node with no raft
// state), and kicks the leader's reconciliation at every change.
func (n *Node) watchMembers(existing bool) {
	expect := n.cfg.Cluster.BootstrapExpect
	needBoot := !existing && expect > 1
	for {
		select {
		case <-n.stop:
			return
		case ev, ok := <-n.members.Events():
			if !ok {
				return
			}
			n.log.Info("cluster: member "+ev.Type.String(), "member", ev.Member.Meta.NodeID, "addr", ev.Member.Addr,
				"state", ev.Member.State.String())
		}
		if needBoot && n.maybeBootstrap(expect) {
			needBoot = false
		}
		select {
		case n.kickLeader <- struct{}{}:
		default:
		}
	}
}

// maybeBootstrap bootstraps raft with the first expect live members, the
// same configuration on every one of them (as Consul servers do with
// bootstrap_expect), unless some node already leads a cluster.
func (n *Node) maybeBootstrap(expect int) bool {
	var servers []raft.Server
	for _, m := range n.members.Members() {
		if m.State == membership.StateAlive && m.Meta.RaftAddr != "" {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Meta.NodeID), Address: raft.ServerAddress(m.Meta.RaftAddr)})
		}
	}
	if len(servers) < expect {
		return false
	}
	if _, id := n.raft.LeaderWithID(); id != "" {
		return true // a cluster exists already: its leader adds this node
	}
	slices.SortFunc(servers, func(a, b raft.Server) int { return compareStrings(string(a.ID), string(b.ID)) })
	servers = servers[:expect]
	if !slices.ContainsFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(n.id) }) {
		return true // the others bootstrap; their leader adds this node
	}
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		n.log.Info("cluster: bootstrapped", "servers", fmt.Sprint(servers))
	case err == raft.ErrCantBootstrap:
		n.log.Debug("cluster: not bootstrapping: raft state exists")
	default:
		n.log.Error("cluster: bootstrap failed", "err", err)
		return false
	}
	return true
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// leaderLoop is the raft leader's duty for one term: keep the raft voters
// in step with the live members (add joiners, remove nodes that left), and
// remove from the registry the channels of nodes that failed.
func (n *Node) leaderLoop(ctx context.Context) {
	started := time.Now()
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		n.reconcile(ctx, started)
		select {
		case <-ctx.Done():
			return
		case <-n.kickLeader:
		case <-t.C:
		}
	}
}

// reconcile runs one reconciliation; failures are logged and retried at the
// next one.
func (n *Node) reconcile(ctx context.Context, termStart time.Time) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("cluster: reconcile: read raft configuration", "err", err)
		return
	}
	voters := map[string]raft.ServerAddress{}
	for _, s := range f.Configuration().Servers {
		voters[string(s.ID)] = s.Address
	}
	members := map[string]membership.Member{}
	for _, m := range n.members.Members() {
		members[m.Meta.NodeID] = m
	}
	for id, m := range members {
		if id == n.id {
			continue
		}
		addr, isVoter := voters[id]
		switch {
		case m.State == membership.StateAlive && m.Meta.RaftAddr != "" && (!isVoter || string(addr) != m.Meta.RaftAddr):
			n.log.Info("cluster: adding voter", "node", id, "raftAddr", m.Meta.RaftAddr)
			err := n.await(ctx, func(timeout time.Duration) error {
				return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(m.Meta.RaftAddr), 0, timeout).Error()
			})
			if err != nil {
				n.log.Warn("cluster: add voter failed; will retry", "node", id, "err", err)
			}
		case m.State == membership.StateLeft && isVoter:
			n.log.Info("cluster: removing voter that left", "node", id)
			err := n.await(ctx, func(timeout time.Duration) error {
				return n.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error()
			})
			if err != nil {
				n.log.Warn("cluster: remove voter failed; will retry", "node", id, "err", err)
			}
		}
	}
	n.removeDeadChannels(ctx, members, termStart)
}

// removeDeadChannels removes the channels of nodes that are not alive: those
// that failed or left at once, those no member knows of once the term is
// DeadNodeGrace old (gossip has converged by then). Primaries are re-elected
// inside the same Apply.
func (n *Node) removeDeadChannels(ctx context.Context, members map[string]membership.Member, termStart time.Time) {
	grace := n.cfg.Cluster.DeadNodeGrace
	if grace <= 0 {
		grace = defaultDeadNodeGrace
	}
	var ops []state.Op
	n.View(func(s *state.State) {
		for _, node := range s.Nodes() {
			if node == n.id {
				continue
			}
			m, known := members[node]
			switch {
			case known && m.State == membership.StateAlive:
				continue
			case !known && time.Since(termStart) < grace:
				continue
			}
			ops = append(ops, state.Op{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: node, UpToSeq: s.Seq}})
		}
	})
	if len(ops) == 0 {
		return
	}
	for _, op := range ops {
		n.log.Warn("cluster: removing the channels of a node that is gone", "node", op.RemoveNodeChannels.NodeID)
	}
	if err := state.Err(n.Apply(ctx, ops...)); err != nil && ctx.Err() == nil {
		n.log.Warn("cluster: remove dead nodes' channels failed; will retry", "err", err)
	}
}

// resolveLink returns the gRPC address of a live node.
func (n *Node) resolveLink(node string) (string, bool) {
	if n.members == nil {
		return "", false
	}
	for _, m := range n.members.Members() {
		if m.Meta.NodeID == node && m.State == membership.StateAlive && m.Meta.GRPCAddr != "" {
			return m.Meta.GRPCAddr, true
		}
	}
	return "", false
}
