package clustertest

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// WrapRaft returns a cluster.Config.WrapRaftTransport hook for node self:
// raft's RPCs to a node across the partition fail with ErrPartitioned, and
// those from such a node (the Consumer channel and the heartbeat fast path)
// are answered with ErrPartitioned instead of reaching raft.
func (n *Network) WrapRaft(self string) func(raft.Transport) raft.Transport {
	return func(inner raft.Transport) raft.Transport { return newRaftTransport(n, self, inner) }
}

// raftTransport is a raft.Transport that consults a Network. It also
// implements raft.WithPreVote (forwarded; an error when inner lacks it) and
// raft.WithClose.
//
// It runs one goroutine, pump, from creation until Close: it moves the
// RPCs inner receives to raft, answering those of cut peers itself.
type raftTransport struct {
	net   *Network
	self  string
	inner raft.Transport

	consumer chan raft.RPC
	stop     chan struct{}
	once     sync.Once
	pumping  sync.WaitGroup
}

var (
	_ raft.Transport   = (*raftTransport)(nil)
	_ raft.WithPreVote = (*raftTransport)(nil)
	_ raft.WithClose   = (*raftTransport)(nil)
)

func newRaftTransport(nw *Network, self string, inner raft.Transport) *raftTransport {
	t := &raftTransport{net: nw, self: self, inner: inner, consumer: make(chan raft.RPC), stop: make(chan struct{})}
	t.pumping.Go(t.pump)
	return t
}

func (t *raftTransport) pump() {
	in := t.inner.Consumer()
	for {
		select {
		case <-t.stop:
			return
		case rpc := <-in:
			if err := t.refuse(rpc); err != nil {
				rpc.Respond(nil, err)
				continue
			}
			select {
			case t.consumer <- rpc:
			case <-t.stop:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
		}
	}
}

// refuse returns an error when rpc comes from a node cut off from this one.
func (t *raftTransport) refuse(rpc raft.RPC) error {
	h, ok := rpc.Command.(raft.WithRPCHeader)
	if !ok {
		return nil
	}
	hdr := h.GetRPCHeader()
	from := string(hdr.ID)
	if from == "" {
		from = t.net.idOf(string(hdr.Addr))
	}
	if t.net.Cut(t.self, from) {
		return fmt.Errorf("clustertest: raft RPC %T from %s to %s: %w", rpc.Command, from, t.self, ErrPartitioned)
	}
	return nil
}

// check returns an error when the peer (id, or the node at target) is cut
// off from this node.
func (t *raftTransport) check(op string, id raft.ServerID, target raft.ServerAddress) error {
	peer := string(id)
	if peer == "" {
		peer = t.net.idOf(string(target))
	}
	if t.net.Cut(t.self, peer) {
		return fmt.Errorf("clustertest: raft %s from %s to %s: %w", op, t.self, peer, ErrPartitioned)
	}
	return nil
}

// Consumer implements raft.Transport.
func (t *raftTransport) Consumer() <-chan raft.RPC { return t.consumer }

// LocalAddr implements raft.Transport.
func (t *raftTransport) LocalAddr() raft.ServerAddress { return t.inner.LocalAddr() }

// AppendEntriesPipeline implements raft.Transport; the pipeline checks the
// Network on every AppendEntries too (a pipeline opened before a cut).
func (t *raftTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if err := t.check("AppendEntriesPipeline", id, target); err != nil {
		return nil, err
	}
	p, err := t.inner.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &raftPipeline{AppendPipeline: p, t: t, id: id, target: target}, nil
}

// AppendEntries implements raft.Transport.
func (t *raftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.check("AppendEntries", id, target); err != nil {
		return err
	}
	return t.inner.AppendEntries(id, target, args, resp)
}

// RequestVote implements raft.Transport.
func (t *raftTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := t.check("RequestVote", id, target); err != nil {
		return err
	}
	return t.inner.RequestVote(id, target, args, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (t *raftTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := t.check("RequestPreVote", id, target); err != nil {
		return err
	}
	pv, ok := t.inner.(raft.WithPreVote)
	if !ok {
		return errors.New("clustertest: the wrapped raft transport has no pre-vote")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// InstallSnapshot implements raft.Transport.
func (t *raftTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := t.check("InstallSnapshot", id, target); err != nil {
		return err
	}
	return t.inner.InstallSnapshot(id, target, args, resp, data)
}

// EncodePeer implements raft.Transport.
func (t *raftTransport) EncodePeer(id raft.ServerID, addr raft.ServerAddress) []byte {
	return t.inner.EncodePeer(id, addr)
}

// DecodePeer implements raft.Transport.
func (t *raftTransport) DecodePeer(b []byte) raft.ServerAddress { return t.inner.DecodePeer(b) }

// SetHeartbeatHandler implements raft.Transport: heartbeats from a cut
// peer are answered with ErrPartitioned.
func (t *raftTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.inner.SetHeartbeatHandler(nil)
		return
	}
	t.inner.SetHeartbeatHandler(func(rpc raft.RPC) {
		if err := t.refuse(rpc); err != nil {
			rpc.Respond(nil, err)
			return
		}
		cb(rpc)
	})
}

// TimeoutNow implements raft.Transport.
func (t *raftTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if err := t.check("TimeoutNow", id, target); err != nil {
		return err
	}
	return t.inner.TimeoutNow(id, target, args, resp)
}

// Close implements raft.WithClose: it stops the pump, then closes inner. It
// is idempotent.
func (t *raftTransport) Close() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		t.pumping.Wait()
		if c, ok := t.inner.(raft.WithClose); ok {
			err = c.Close()
		}
	})
	return err
}

// raftPipeline checks the Network before every pipelined AppendEntries.
type raftPipeline struct {
	raft.AppendPipeline
	t      *raftTransport
	id     raft.ServerID
	target raft.ServerAddress
}

// AppendEntries implements raft.AppendPipeline.
func (p *raftPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if err := p.t.check("AppendEntries (pipelined)", p.id, p.target); err != nil {
		return nil, err
	}
	return p.AppendPipeline.AppendEntries(args, resp)
}
