package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/cluster/internal/logadapt"
	"github.com/exchangekit/exchange/cluster/membership"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/backoff"
	"github.com/exchangekit/exchange/state"
)

const (
	// raftDBFile is the bbolt file holding the raft log and stable store.
	raftDBFile = "raft.db"
	// boltLockTimeout bounds the wait for the bbolt file lock: a second
	// process opening the same DataDir fails instead of hanging.
	boltLockTimeout = time.Second
	// transportMaxPool and transportTimeout configure raft's TCP transport
	// (connections kept per peer, I/O deadline per RPC).
	transportMaxPool = 3
	transportTimeout = 10 * time.Second
)

// Node is one member of an Exchange cluster: it holds the replicated state
// (package state) in a raft FSM whose log and stable store are in bbolt
// (raft-boltdb) and whose snapshots are files, all in Config.DataDir.
//
// Today a Node is a single-voter cluster: Open bootstraps it on first start
// and waits until it is the leader. Node is the state.Memory twin the
// controller consumes: Apply, View and Subscribe have the same contracts.
//
// A Node is safe for concurrent use.
type Node struct {
	cfg   Config
	id    string
	log   *slog.Logger
	fsm   *fsm
	raft  *raft.Raft
	trans *raft.NetworkTransport
	bolt  *raftboltdb.BoltStore
	logs  *countingLogStore
	lead  *leadership

	fmu          sync.Mutex // protects forward
	forward      func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error)
	forwardAsync atomic.Pointer[AsyncForwardFunc] // read by the links' readers for every command

	// A node of a cluster: nil for a single node.
	links      *links
	members    *membership.Membership
	kickLeader chan struct{}  // buffered(1): "membership changed, reconcile"
	stop       chan struct{}  // closed by Close: stops bg
	bg         sync.WaitGroup // membership watcher, leader loop

	// restoreGate is held shared by every Apply on this leader, and
	// exclusively by Restore while it reads the state it restores into (see
	// backup.go).
	restoreGate sync.RWMutex

	markerMu sync.Mutex // serialises writes of the data directory marker
	marker   dataMarker

	mu      sync.Mutex // protects closed; held while adding to futures
	closed  bool
	futures sync.WaitGroup // goroutines waiting on raft futures (Apply, Barrier, …)

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the node's data directory, starts raft, and
// bootstraps a one-voter cluster when the directory holds no raft state. It
// returns once this node is the leader and its state has caught up with the
// whole log, so a View right after Open sees every acknowledged Apply; ctx
// bounds that wait (a fresh node becomes leader within 1-2 HeartbeatTimeouts).
// On error nothing is left running or open.
//
// A damaged data directory (a missing, emptied, truncated, corrupt or stale
// raft.db when the directory shows it held state; a log compacted past its
// missing snapshot) is never bootstrapped afresh nor handed to raft: Open
// returns a *DataDirError (errors.Is ErrDataDirDamaged) naming the file and
// the recovery, without touching raft.db, the snapshots or the marker.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	hl := logadapt.HCLog(lg, "raft", cfg.RaftLogLevel)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: create data dir: %w", err)
	}
	n := &Node{cfg: cfg, log: lg, fsm: newFSM(lg)}
	var undo []func() error // closes what is open so far, in reverse
	fail := func(err error) (*Node, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			_ = undo[i]()
		}
		return nil, err
	}

	// The checks of docs/decisions/0013 come first: nothing may create,
	// map or load a file of a damaged directory before they pass.
	marker, err := readMarker(cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	if n.id, err = resolveNodeID(cfg.DataDir, cfg.NodeID); err != nil {
		return fail(err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.RetainSnapshots, hl.Named("snapshots"))
	if err != nil {
		return fail(fmt.Errorf("cluster: open snapshot store: %w", err))
	}
	snapList, err := snaps.List()
	if err != nil {
		return fail(fmt.Errorf("cluster: list snapshots in %s: %w", filepath.Join(cfg.DataDir, snapshotsDir), err))
	}
	held := heldState(cfg.DataDir, marker, snapList)
	recovery := recoveryAdvice(cfg.DataDir)
	dbPath := filepath.Join(cfg.DataDir, raftDBFile)
	hasDB, err := checkRaftFile(dbPath, held, recovery)
	if err != nil {
		return fail(err)
	}
	existing := false
	if hasDB {
		// Inspect the raft state read-only: a refused Open must not even
		// commit raft-boltdb's set-up transaction to raft.db.
		if existing, err = inspectRaftState(cfg.DataDir, snaps, snapList, marker, held, recovery); err != nil {
			return fail(err)
		}
	}

	opts := *bbolt.DefaultOptions
	opts.Timeout = boltLockTimeout
	var bolt *raftboltdb.BoltStore
	err = protect(func() error {
		var err error
		bolt, err = raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &opts})
		return err
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fail(fmt.Errorf("cluster: open raft log %s: locked by another process for %v: %w", dbPath, boltLockTimeout, err))
	}
	if err != nil {
		return fail(fmt.Errorf("cluster: open raft log %s: %w", dbPath, err))
	}
	undo = append(undo, bolt.Close)
	n.bolt = bolt
	n.logs = &countingLogStore{LogStore: bolt}

	adv, err := cfg.advertiseFor(lg)
	if err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	var advertise net.Addr // stays a nil interface when adv is nil: raft then advertises the listener's address
	if adv != nil {
		advertise = adv
	}
	trans, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, transportMaxPool, transportTimeout, hl.Named("transport"))
	if err != nil {
		return fail(fmt.Errorf("cluster: raft transport on %s: %w", cfg.RaftAddr, err))
	}
	undo = append(undo, trans.Close)
	n.trans = trans
	var rtrans raft.Transport = trans // what raft uses: trans, or a test's wrapper of it
	if cfg.WrapRaftTransport != nil {
		rtrans = cfg.WrapRaftTransport(trans)
		if c, ok := rtrans.(raft.WithClose); ok {
			undo = append(undo, c.Close)
		}
	}

	rc := n.raftConfig(hl)
	cc := cfg.Cluster
	// A lone node bootstraps itself at once; a node of a cluster waits for
	// its peers (BootstrapExpect) or for a leader to add it (Join).
	bootAlone := !existing && (!cc.clustered() || (len(cc.Join) == 0 && cc.BootstrapExpect <= 1))
	if bootAlone {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(n.id), Address: trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(rc, n.logs, bolt, snaps, rtrans, boot); err != nil {
			return fail(fmt.Errorf("cluster: bootstrap: %w", err))
		}
		lg.Info("cluster: bootstrapped a single-node cluster", "node", n.id, "raftAddr", trans.LocalAddr())
	}
	if err := recoverPeers(cfg.DataDir, existing, rc, n.logs, bolt, snaps, trans, lg); err != nil {
		return fail(err)
	}
	if marker == nil && (existing || bootAlone) {
		// A new directory, or one that predates the marker (or lost it):
		// from now on it records that the directory holds state.
		marker = &dataMarker{NodeID: n.id, CreatedAt: time.Now().UTC()}
		if err := writeMarker(cfg.DataDir, *marker); err != nil {
			return fail(err)
		}
	}
	if marker != nil {
		n.marker = *marker
	} else {
		n.marker = dataMarker{NodeID: n.id, CreatedAt: time.Now().UTC()} // written once raft holds state
	}
	// A lone voter elects itself whenever it starts: raft's warning that
	// it is starting an election is no cause for alarm then.
	var started atomic.Pointer[raft.Raft]
	logadapt.Demote(hl, func(msg string) bool {
		r := started.Load()
		return msg == raftElectionWarning && r != nil && soleVoter(r, raft.ServerID(n.id))
	})
	r, err := raft.NewRaft(rc, n.fsm, n.logs, bolt, snaps, rtrans)
	if err != nil {
		return fail(fmt.Errorf("cluster: start raft: %w", err))
	}
	started.Store(r)
	n.raft = r
	n.lead = newLeadership(r)
	n.stop = make(chan struct{})
	if cc.Links != nil {
		n.links = newLinks(n.id, cc.Token, cc.Links, n.resolveLink, linkHandler{n}, lg)
		n.links.serve()
	}
	if cc.clustered() {
		if err := n.startMembership(ctx, existing); err != nil {
			_ = n.Close()
			return nil, err
		}
		n.bg.Go(func() { _ = n.WhileLeader(context.Background(), n.leaderLoop) })
	}
	if err := n.waitReady(ctx); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("cluster: open: %w", err)
	}
	if err := n.storeAppliedIndex(); err != nil {
		_ = n.Close()
		return nil, err
	}
	lg.Info("cluster: node ready", "node", n.id, "raftAddr", trans.LocalAddr(),
		"lastIndex", r.LastIndex(), "appliedIndex", r.AppliedIndex())
	return n, nil
}

func (n *Node) raftConfig(hl hclog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.id)
	rc.Logger = hl
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.MaxAppendEntries = n.cfg.MaxAppendEntries
	// Group commit needs no buffered apply channel: while the leader
	// writes one group, the next Applies wait to be received, and the
	// leader takes them all (up to MaxAppendEntries) into its next disk
	// write. BatchApplyCh measured no faster, and futures buffered in it
	// are never answered if raft shuts down.
	rc.BatchApplyCh = false
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.TrailingLogs = n.cfg.TrailingLogs
	return rc
}

// waitReady waits until this node leads and its FSM has applied the whole
// log, then makes sure the raft configuration carries this node's current
// address.
//
// Multi-node: a node joining an existing cluster will instead wait until it
// has caught up with the leader's commit index; the leadership wait below is
// the single-voter case.
func (n *Node) waitReady(ctx context.Context) error {
	if n.cfg.Cluster.clustered() {
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("read raft configuration: %w", err)
		}
		if srv := f.Configuration().Servers; len(srv) != 1 || srv[0].ID != raft.ServerID(n.id) {
			// A node of several (or one not yet added) is ready when it
			// knows a leader and has caught up: see Ready. Open does not
			// wait for that, since the leader may be waiting for this very
			// node to form a quorum.
			return nil
		}
	}
	self, err := n.selfServer()
	if err != nil {
		return err
	}
	if self.Suffrage != raft.Voter {
		return fmt.Errorf("node %q is not a voter in the stored raft configuration", n.id)
	}
	for n.raft.State() != raft.Leader {
		select {
		case <-n.raft.LeaderCh():
		case <-ctx.Done():
			return fmt.Errorf("waiting for leadership (state %s): %w", n.raft.State(), ctx.Err())
		}
	}
	// A barrier commits after every entry before it has been applied to the
	// FSM: from here on View sees every acknowledged Apply.
	if err := n.await(ctx, func(timeout time.Duration) error { return n.raft.Barrier(timeout).Error() }); err != nil {
		return fmt.Errorf("waiting for the FSM to catch up: %w", err)
	}
	if addr := n.trans.LocalAddr(); self.Address != addr {
		// The node restarted on another address (a port-0 test, a moved
		// host): AddVoter on an existing voter updates its address.
		n.log.Info("cluster: updating this node's raft address", "node", n.id, "from", self.Address, "to", addr)
		err := n.await(ctx, func(timeout time.Duration) error {
			return n.raft.AddVoter(raft.ServerID(n.id), addr, 0, timeout).Error()
		})
		if err != nil {
			return fmt.Errorf("updating this node's raft address: %w", err)
		}
	}
	return nil
}

// selfServer returns this node's entry in the latest raft configuration.
func (n *Node) selfServer() (raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Server{}, fmt.Errorf("read raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(n.id) {
			return s, nil
		}
	}
	return raft.Server{}, fmt.Errorf("node %q is not in the stored raft configuration %v", n.id, f.Configuration().Servers)
}

// goFuture runs fn on a goroutine counted in n.futures, unless n is closed.
// fn waits on a raft future: raft answers every future while it runs, and
// Close waits for these goroutines before it shuts raft down (raft leaves
// futures queued at shutdown unanswered, so waiting after would hang).
func (n *Node) goFuture(fn func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.futures.Go(fn)
	return true
}

// await runs fn (which waits on a raft future, with an enqueue timeout) on an
// owned goroutine and waits for it or for ctx.
func (n *Node) await(ctx context.Context, fn func(timeout time.Duration) error) error {
	timeout := enqueueTimeout(ctx, n.cfg.ApplyTimeout)
	done := make(chan error, 1)
	if !n.goFuture(func() { done <- fn(timeout) }) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return n.raftError(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueueTimeout is how long raft may take to accept an entry: until ctx's
// deadline, at most def, at least a millisecond (raft reads 0 as "forever").
func enqueueTimeout(ctx context.Context, def time.Duration) time.Duration {
	t := def
	if d, ok := ctx.Deadline(); ok {
		t = min(t, time.Until(d))
	}
	return max(t, time.Millisecond)
}

// Apply applies ops, in order, as ONE raft log entry, and returns once the
// entry is committed (on disk) and applied to this node's state, with one
// state.Result per op: plain data that can cross a wire (state.Err joins the
// failures into one error, errors.Is(err, state.ErrExists) working). Every op
// is attempted.
//
// The error is for the Apply as a whole: ctx done, not the leader
// (*NotLeaderError), closed (ErrClosed), raft failures; then there are no
// results, and when ctx ended first the entry may still be applied. An entry
// the FSM could not decode (which this node never writes) fails every op,
// with ErrBadEntry.
//
// Subscribers have been called with the entry's events before Apply returns.
// Concurrent Applies are grouped by raft into few disk writes: prefer many
// ops per Apply, or many concurrent Applies, to a loop of single Applies.
func (n *Node) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cluster: apply: %w", err)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	if n.isClosed() {
		return nil, ErrClosed
	}
	b, err := encodeEntry(ops)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	if n.raft.State() != raft.Leader {
		if n.links == nil {
			return nil, n.notLeader()
		}
		return n.applyViaLeader(ctx, b, len(ops))
	}
	rs, _, err := n.applyLocal(ctx, b, len(ops))
	return rs, err
}

// applyLocal applies an encoded entry of nops ops on this node, the leader.
func (n *Node) applyLocal(ctx context.Context, b []byte, nops int) ([]state.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, n.notLeader()
	}
	timeout := enqueueTimeout(ctx, n.cfg.ApplyTimeout)
	type outcome struct {
		res   any
		index uint64
		err   error
	}
	done := make(chan outcome, 1)
	if !n.goFuture(func() {
		n.restoreGate.RLock()
		defer n.restoreGate.RUnlock()
		f := n.raft.Apply(b, timeout)
		if err := f.Error(); err != nil {
			done <- outcome{err: err}
			return
		}
		done <- outcome{res: f.Response(), index: f.Index()}
	}) {
		return nil, 0, ErrClosed
	}
	select {
	case o := <-done:
		if o.err != nil {
			return nil, 0, n.raftError(o.err)
		}
		rs, ok := o.res.([]state.Result)
		if !ok {
			return nil, 0, fmt.Errorf("cluster: apply: unexpected FSM response %T", o.res)
		}
		if len(rs) == 1 && nops > 1 && rs[0].Err != nil && rs[0].Err.Op == badEntryOp {
			rs = slices.Repeat(rs, nops) // the whole entry was rejected
		}
		if len(rs) != nops {
			return nil, 0, fmt.Errorf("cluster: apply: %d results for %d ops", len(rs), nops)
		}
		return rs, o.index, nil
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("cluster: apply (the ops may still be applied): %w", ctx.Err())
	}
}

// applyViaLeader sends an encoded entry to the leader over its link and
// returns the leader's results. Without a known leader (an election is under
// way) it waits for one, within ctx; a leader that lost office meanwhile
// names its successor, tried once more.
func (n *Node) applyViaLeader(ctx context.Context, b []byte, nops int) ([]state.Result, error) {
	for attempt := 0; ; attempt++ {
		leader, err := n.awaitLeader(ctx)
		if err != nil {
			return nil, err
		}
		if leader == n.id {
			rs, _, err := n.applyLocal(ctx, b, nops)
			return rs, err
		}
		reply, err := n.links.send(ctx, leader, &command.Command{ID: command.NewID(), Type: typeApply, Payload: b})
		var nl *NotLeaderError
		if errors.As(err, &nl) && attempt == 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: apply via leader %s: %w", leader, err)
		}
		rs, index, err := decodeResults(leader, reply, nops)
		if err != nil {
			return nil, err
		}
		// Apply returns once the ops are applied on this node too, so a View
		// right after it sees them.
		if err := n.fsm.waitApplied(ctx, index, n.raft.AppliedIndex); err != nil {
			return nil, err
		}
		return rs, nil
	}
}

// awaitLeader returns the current leader's id, waiting (within ctx) while
// an election is under way.
func (n *Node) awaitLeader(ctx context.Context) (string, error) {
	t := time.NewTicker(n.cfg.HeartbeatTimeout / 3)
	defer t.Stop()
	for {
		if _, id := n.raft.LeaderWithID(); id != "" {
			return string(id), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cluster: no raft leader: %w: %w", ErrNotLeader, ctx.Err())
		case <-n.stop:
			return "", ErrClosed
		case <-t.C:
		}
	}
}

// serveLinkCommand serves a command another node sent on a link: an apply
// (this node must lead: it never passes the entry on) or a forwarded
// command (delivered to a local channel: never forwarded again).
func (n *Node) serveLinkCommand(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	if cmd.Type == typeApply {
		ops, err := decodeEntry(cmd.Payload)
		if err != nil {
			return errorReply(cmd, err), nil
		}
		rs, index, err := n.applyLocal(ctx, cmd.Payload, len(ops))
		if err != nil {
			return errorReply(cmd, err), nil
		}
		b, err := json.Marshal(applied{Index: index, Results: rs})
		if err != nil {
			return errorReply(cmd, err), nil
		}
		return &command.Reply{CommandID: cmd.ID, Type: typeApply, Status: command.StatusSucceeded, Payload: b}, nil
	}
	ch, orig, err := n.forwarded(cmd)
	if err != nil {
		return errorReply(cmd, err), nil
	}
	n.fmu.Lock()
	h := n.forward
	n.fmu.Unlock()
	if h == nil {
		return errorReply(cmd, n.noForwarding()), nil
	}
	ctx, span := startForwardSpan(ctx, trace.SpanKindServer, "", n.id, ch, orig)
	reply, err := h(ctx, ch, orig)
	endForwardSpan(span, reply, err)
	return linkReply(cmd, orig, reply, err), nil
}

// forwarded decodes the link command cmd, which is not an apply: the
// channel and the command it forwards.
func (n *Node) forwarded(cmd *command.Command) (state.ChannelID, *command.Command, error) {
	ch, orig, ok := forwardedCommand(cmd)
	if !ok {
		return "", nil, fmt.Errorf("cluster: link command %s of type %s is neither an apply nor a forwarded command", cmd.ID, cmd.Type)
	}
	return ch, orig, nil
}

// noForwarding is the error of a forwarded command this node has no
// handler for yet.
func (n *Node) noForwarding() error {
	return fmt.Errorf("cluster: node %s does not take forwarded commands yet: %w", n.id, state.ErrNodeUnavailable)
}

// linkReply is the link's answer to the link command cmd, which forwarded
// orig, from what the local delivery returned.
func linkReply(cmd, orig *command.Command, reply *command.Reply, err error) *command.Reply {
	if err != nil {
		return errorReply(cmd, err)
	}
	if reply == nil {
		return errorReply(cmd, errors.New("cluster: the local send returned neither a reply nor an error"))
	}
	// The reply is the handler's to give (HandleForward): it is readdressed
	// in place, not copied.
	reply.CommandID = cmd.ID
	if reply.Type == typeLinkError { // a reply that mimics the link's error marker is the connector's own
		reply.Type = orig.Type
	}
	return reply
}

// linkHandler serves the commands that arrive on links (channel.AsyncHandler):
// applies on the link channel's handler goroutines (they wait for raft), and,
// once HandleForwardAsync has set its handler, forwarded commands without a
// goroutine each while the connector answers.
type linkHandler struct{ n *Node }

func (h linkHandler) Handle(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	return h.n.serveLinkCommand(ctx, cmd)
}

func (h linkHandler) Async(cmd *command.Command) bool {
	if cmd.Type == typeApply {
		return false
	}
	return h.n.forwardAsync.Load() != nil
}

func (h linkHandler) HandleAsync(ctx context.Context, cmd *command.Command, answer func(*command.Reply, error)) {
	n := h.n
	ch, orig, err := n.forwarded(cmd)
	if err != nil {
		answer(errorReply(cmd, err), nil)
		return
	}
	fh := n.forwardAsync.Load()
	if fh == nil {
		answer(errorReply(cmd, n.noForwarding()), nil)
		return
	}
	orig.Timeout = cmd.Timeout // the time the forwarding node still waits (AsyncForwardFunc)
	ctx, span := startForwardSpan(ctx, trace.SpanKindServer, "", n.id, ch, orig)
	(*fh)(ctx, ch, orig, func(reply *command.Reply, err error) {
		endForwardSpan(span, reply, err)
		answer(linkReply(cmd, orig, reply, err), nil)
	})
}

// raftError maps an error of a raft future to this package's errors.
func (n *Node) raftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("cluster: raft did not accept the entry in time: %w: %w", context.DeadlineExceeded, err)
	default:
		return fmt.Errorf("cluster: raft: %w", err)
	}
}

func (n *Node) notLeader() error {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddress: string(addr)}
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// View calls fn with this node's copy of the state, which fn must only read
// and must not keep. Applies wait while fn runs. fn must not call Apply.
func (n *Node) View(fn func(*state.State)) { n.fsm.view(fn) }

// Subscribe registers fn to be called with the events of every applied log
// entry, in log order, on every node (not only the one that applied it). fn
// runs synchronously on raft's FSM goroutine with the state locked: it must
// be fast, must not block, and must not call back into the Node. After a
// snapshot is restored (a lagging follower catching up, an operator restore)
// fn gets one state.StateRestored event and should resync from View. The
// returned function unsubscribes.
func (n *Node) Subscribe(fn func([]state.Event)) (cancel func()) { return n.fsm.subscribe(fn) }

// Snapshot makes raft snapshot the state now (it does on its own every
// SnapshotThreshold entries) and compacts the log.
func (n *Node) Snapshot(ctx context.Context) error {
	snap := func(time.Duration) error { return n.raft.Snapshot().Error() }
	err := n.await(ctx, snap)
	if err != nil && strings.Contains(err.Error(), "wait until the configuration entry") {
		// raft snapshots only up to the FSM's last applied command, and
		// refuses while a newer configuration entry (the one Open writes when
		// the node's address changes) is not covered. An empty entry moves
		// the FSM past it; then the snapshot can be taken.
		if err = state.Err(n.Apply(ctx, state.Op{})); err == nil || errors.Is(err, state.ErrInvalid) {
			err = n.await(ctx, snap)
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	return nil
}

// NodeID returns this node's id (Config.NodeID, or the one stored in the data
// directory).
func (n *Node) NodeID() string { return n.id }

// RaftAddr returns the raft address this node advertises.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// Leader reports whether this node is the raft leader.
func (n *Node) Leader() bool { return n.raft.State() == raft.Leader }

// LeaderID returns the current leader's node id, "" when none is known.
func (n *Node) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// RaftState returns this node's raft state: "Leader", "Follower",
// "Candidate" or "Shutdown".
func (n *Node) RaftState() string { return n.raft.State().String() }

// LastIndex returns the index of the last entry in the raft log (or of the
// last snapshot).
func (n *Node) LastIndex() uint64 { return n.raft.LastIndex() }

// AppliedIndex returns the index of the last entry applied to this node's
// state.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// WhileLeader calls fn each time this node becomes the raft leader, once its
// state has caught up with every entry committed before (a barrier), with a
// context that ends when it stops leading, ctx ends or the Node closes; it
// waits for fn to return before looking for the next term. It returns nil
// once ctx is done, or ErrClosed when the Node closes.
func (n *Node) WhileLeader(ctx context.Context, fn func(ctx context.Context)) error {
	for {
		if n.isClosed() {
			return ErrClosed
		}
		term, changed := n.lead.current()
		if term == nil {
			select {
			case <-changed:
			case <-ctx.Done():
			}
		} else {
			n.lead1(ctx, term, fn)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case n.isClosed():
			return ErrClosed
		}
	}
}

// lead1 runs fn for one leadership term and returns when the term or ctx
// ends. The term ends, under the leadership lock, before a new one can
// start, so the caller's next look sees the new role.
func (n *Node) lead1(ctx context.Context, term context.Context, fn func(ctx context.Context)) {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(term, cancel)
	defer stop()
	// Consul's leader loop starts the same way: a barrier, so the new
	// leader's work reads a state that holds everything its predecessors
	// committed.
	bo := backoff.NewWaiter(backoff.Policy{Base: 50 * time.Millisecond, Max: 2 * time.Second})
	defer bo.Stop()
	for {
		err := n.await(tctx, func(timeout time.Duration) error { return n.raft.Barrier(timeout).Error() })
		if err == nil {
			fn(tctx)
			break
		}
		if tctx.Err() != nil {
			break
		}
		n.log.Warn("cluster: leadership barrier failed; retrying", "err", err, "in", bo.Next())
		if bo.Wait(tctx) != nil {
			break
		}
	}
	<-tctx.Done()
}

// Forward sends cmd to channel ch on node to, in one hop: over the link to
// that node, where the handler HandleForward set there sends it to the
// channel (and never forwards it again). The deadline of ctx goes along; the
// errors are the typed errors of the send on that node (channel closed,
// busy with retry-after, remote handler error, unknown command, timeout).
// A node that cannot be reached (unknown, down, no link) gives an error
// wrapping state.ErrNodeUnavailable. To this node itself, cmd goes straight
// to the handler.
func (n *Node) Forward(ctx context.Context, to state.NodeID, ch state.ChannelID, cmd *command.Command) (*command.Reply, error) {
	n.fmu.Lock()
	h := n.forward
	n.fmu.Unlock()
	switch {
	case n.isClosed():
		return nil, fmt.Errorf("cluster: forward to node %s: %w", to, ErrClosed)
	case string(to) == n.id && h == nil:
		return nil, fmt.Errorf("cluster: forward to node %s: no handler: %w", to, state.ErrNodeUnavailable)
	case string(to) == n.id:
		return h(ctx, ch, cmd)
	case n.links == nil:
		return nil, fmt.Errorf("cluster: forward to node %s: not a member of this single-node cluster: %w", to, state.ErrNodeUnavailable)
	}
	ctx, span := startForwardSpan(ctx, trace.SpanKindClient, n.id, string(to), ch, cmd)
	lc, id := forwardCommand(ch, cmd)
	reply, err := n.links.send(ctx, string(to), lc)
	endForwardSpan(span, reply, err)
	if err != nil {
		return nil, err
	}
	reply.CommandID = id // the link's Send gave this reply to us alone: readdressed in place
	return reply, nil
}

// AsyncForwardFunc delivers cmd, forwarded by another node, to the local
// channel ch without waiting for the outcome: it must not block, and must
// call done exactly once, on any goroutine, with what HandleForward's
// handler would return (done does not block). cmd.Timeout is the time the
// forwarding node still waits; ctx carries the trace context and ends when
// the link closes.
type AsyncForwardFunc = func(ctx context.Context, ch state.ChannelID, cmd *command.Command, done func(*command.Reply, error))

// HandleForwardAsync sets a second receiving side of Forward, beside
// HandleForward's: with it, the links deliver forwarded commands without a
// goroutine waiting for each (channel.AsyncHandler). A reply h gives done
// is the Node's, as with HandleForward. Forward to this node itself still
// goes to HandleForward's handler. nil turns it off.
func (n *Node) HandleForwardAsync(h AsyncForwardFunc) {
	if h == nil {
		n.forwardAsync.Store(nil)
		return
	}
	n.forwardAsync.Store(&h)
}

// HandleForward sets the receiving side of Forward. A reply h returns is
// given to the Node, which may modify it (it readdresses it to the link's
// command id): h must not keep it, nor return one it shares.
func (n *Node) HandleForward(h func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error)) {
	n.fmu.Lock()
	n.forward = h
	n.fmu.Unlock()
}

// Leave leaves the cluster gracefully, so that the leader removes this node
// from the raft voters (a stopped node that did not leave stays a voter and
// counts in the quorum until it comes back). A leader first hands its role
// over. Close the node afterwards. A single node has nothing to leave.
func (n *Node) Leave(ctx context.Context) error {
	if n.members == nil {
		return nil
	}
	if n.raft.State() == raft.Leader {
		err := n.await(ctx, func(time.Duration) error { return n.raft.LeadershipTransfer().Error() })
		if err != nil {
			n.log.Warn("cluster: leadership transfer before leaving failed", "err", err)
		}
	}
	if err := n.members.Leave(ctx); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// GossipAddr returns the address this node gossips on ("" for a single node):
// the one to pass others in their Join, also when GossipAddr's port was 0.
func (n *Node) GossipAddr() string {
	if n.members == nil {
		return ""
	}
	return n.members.LocalNode().Addr
}

// LeaderContact returns now when this node leads, else when it last heard
// from a leader (raft's last contact; the zero time if never).
func (n *Node) LeaderContact() time.Time {
	if n.raft.State() == raft.Leader {
		return time.Now()
	}
	return n.raft.LastContact()
}

// Ready reports whether this node serves: it knows a leader, that leader has
// committed an entry of its term (so the commit index covers everything
// committed before, even right after a full cluster restart), and this node
// has applied every entry up to it. nil means ready.
func (n *Node) Ready() error {
	switch {
	case n.isClosed():
		return ErrClosed
	case n.LeaderID() == "":
		return errors.New("cluster: no raft leader known")
	}
	commit := n.raft.CommitIndex()
	// A commit index is only known to cover every entry committed before
	// once the leader has committed an entry of its own term (raft §5.4.2):
	// after a restart a node's commit index starts from nothing (or from its
	// snapshot), and applying up to it would leave out what came after. So
	// the entry at the commit index must be of the current term.
	if commit == 0 {
		return errors.New("cluster: catching up: no entry known to be committed yet")
	}
	var l raft.Log
	if err := n.logs.GetLog(commit, &l); err != nil {
		return fmt.Errorf("cluster: catching up: read committed entry %d: %w", commit, err)
	}
	if term := n.raft.CurrentTerm(); l.Term != term {
		return fmt.Errorf("cluster: catching up: the leader of term %d has not committed an entry of its term yet", term)
	}
	// raft's AppliedIndex counts entries handed to the FSM goroutine, not
	// applied by it: the replica's own index says what View shows. Entries
	// the FSM never sees (a leader's no-op, configuration changes) at the
	// end of the log do not count.
	applied, restored := n.fsm.progress()
	if restored {
		applied = max(applied, parseUint(n.raft.Stats()["last_snapshot_index"]))
	}
	for i := commit; i > applied; i-- {
		if i != commit {
			if err := n.logs.GetLog(i, &l); err != nil {
				return fmt.Errorf("cluster: catching up: read committed entry %d: %w", i, err)
			}
		}
		if l.Type == raft.LogCommand {
			return fmt.Errorf("cluster: catching up: applied %d of %d committed entries", applied, commit)
		}
	}
	return nil
}

// Close stops the node: it waits for pending Applies to finish (raft answers
// them), shuts raft down, closes the transport and the raft log. It is
// idempotent, and every goroutine the Node started has exited when it
// returns. State is not lost: every acknowledged Apply is in the log.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.lead.close() // ends every leadership term first: leader work stops before raft does
		close(n.stop)
		if n.links != nil {
			n.links.close()
		}
		if n.members != nil {
			// No graceful leave: a node that stops (a restart, a crash) is
			// still a voter; only Leave removes it from the cluster.
			if err := n.members.Close(); err != nil {
				n.log.Warn("cluster: close gossip", "err", err)
			}
		}
		n.bg.Wait()
		n.futures.Wait()
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: shut raft down: %w", err))
		}
		if err := n.storeAppliedIndex(); err != nil {
			errs = append(errs, err)
		}
		// raft's transport keeps pooled connections to its peers open past
		// Close; closing them ends the peers' handlers reading from them.
		n.trans.CloseStreams()
		if err := n.trans.Close(); err != nil { // raft closed it already; Close is idempotent
			errs = append(errs, fmt.Errorf("cluster: close raft transport: %w", err))
		}
		if err := n.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: close raft log: %w", err))
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// storeAppliedIndex records raft's applied index in the data directory
// marker: the next Open refuses a raft log and snapshots that end before it.
func (n *Node) storeAppliedIndex() error {
	n.markerMu.Lock()
	defer n.markerMu.Unlock()
	applied := n.raft.AppliedIndex()
	if applied <= n.marker.AppliedIndex {
		return nil
	}
	m := n.marker
	m.AppliedIndex = applied
	if err := writeMarker(n.cfg.DataDir, m); err != nil {
		return err
	}
	n.marker = m
	return nil
}

// countingLogStore counts the raft log's disk writes (one bbolt transaction,
// one fsync, per StoreLogs) and the entries they carry, to show how raft
// groups concurrent Applies.
type countingLogStore struct {
	raft.LogStore
	writes  atomic.Uint64
	entries atomic.Uint64
}

// StoreLog implements raft.LogStore.
func (s *countingLogStore) StoreLog(l *raft.Log) error {
	s.writes.Add(1)
	s.entries.Add(1)
	return s.LogStore.StoreLog(l)
}

// StoreLogs implements raft.LogStore.
func (s *countingLogStore) StoreLogs(ls []*raft.Log) error {
	s.writes.Add(1)
	s.entries.Add(uint64(len(ls)))
	return s.LogStore.StoreLogs(ls)
}

// raftElectionWarning is what raft logs, at Warn, when a follower hears from
// no leader in time and starts an election.
const raftElectionWarning = "heartbeat timeout reached, starting election"

// soleVoter reports whether id is the only voter of r's latest
// configuration. It does not block (raft keeps that configuration at hand).
func soleVoter(r *raft.Raft, id raft.ServerID) bool {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	voters := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			if s.ID != id {
				return false
			}
			voters++
		}
	}
	return voters == 1
}
