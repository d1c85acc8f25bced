package clustertest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// heartbeatCapture is an in-memory raft transport that keeps the heartbeat
// handler raft (here: the wrapper) sets, so the test can call it.
type heartbeatCapture struct {
	*raft.InmemTransport
	hb func(raft.RPC)
}

func (h *heartbeatCapture) SetHeartbeatHandler(cb func(raft.RPC)) { h.hb = cb }

// The raft filter fails outgoing RPCs to a peer across the partition (a
// pipeline opened before the cut included), answers incoming RPCs and
// heartbeats from such a peer with ErrPartitioned instead of passing them
// on, and lets everything through again after Heal.
func TestRaftTransportFilter(t *testing.T) {
	nw := NewNetwork()
	nw.AddAddr("node-a", "a")
	nw.AddAddr("node-b", "b")
	_, ia := raft.NewInmemTransport("a")
	_, ib := raft.NewInmemTransport("b")
	ia.Connect("b", ib)
	ib.Connect("a", ia)
	capB := &heartbeatCapture{InmemTransport: ib}
	a := newRaftTransport(nw, "node-a", ia)
	b := newRaftTransport(nw, "node-b", capB)
	defer func() {
		for _, tr := range []*raftTransport{a, b} {
			if err := tr.Close(); err != nil {
				t.Errorf("Close() = %v", err)
			}
			if err := tr.Close(); err != nil {
				t.Errorf("second Close() = %v", err)
			}
		}
	}()

	// b's raft: answer every RPC it gets, and count them.
	got := make(chan any, 16)
	stop := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			select {
			case rpc := <-b.Consumer():
				got <- rpc.Command
				switch rpc.Command.(type) {
				case *raft.RequestVoteRequest:
					rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
				case *raft.AppendEntriesRequest:
					rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
				case *raft.TimeoutNowRequest:
					rpc.Respond(&raft.TimeoutNowResponse{}, nil)
				case *raft.InstallSnapshotRequest:
					rpc.Respond(&raft.InstallSnapshotResponse{Success: true}, nil)
				default:
					rpc.Respond(nil, errors.New("unexpected RPC"))
				}
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-served }()
	var hbSeen int
	b.SetHeartbeatHandler(func(rpc raft.RPC) { hbSeen++; rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })

	hdrA := raft.RPCHeader{ID: []byte("node-a"), Addr: []byte("a")}
	vote := func(tr raft.Transport) error {
		return tr.RequestVote("node-b", "b", &raft.RequestVoteRequest{RPCHeader: hdrA}, &raft.RequestVoteResponse{})
	}
	appendE := func(tr raft.Transport) error {
		return tr.AppendEntries("node-b", "b", &raft.AppendEntriesRequest{RPCHeader: hdrA}, &raft.AppendEntriesResponse{})
	}
	heartbeat := func() error {
		resp := make(chan raft.RPCResponse, 1)
		capB.hb(raft.RPC{Command: &raft.AppendEntriesRequest{RPCHeader: hdrA}, RespChan: resp})
		return (<-resp).Error
	}
	recv := func() {
		t.Helper()
		select {
		case <-got:
		case <-time.After(time.Second):
			t.Fatal("b's raft did not get the RPC")
		}
	}

	// Healed: everything passes, both ways of sending.
	pipe, err := a.AppendEntriesPipeline("node-b", "b")
	if err != nil {
		t.Fatalf("AppendEntriesPipeline() = %v", err)
	}
	defer pipe.Close()
	for name, call := range map[string]func() error{
		"RequestVote (wrapped sender)":   func() error { return vote(a) },
		"RequestVote (unwrapped sender)": func() error { return vote(ia) },
		"AppendEntries":                  func() error { return appendE(a) },
	} {
		if err := call(); err != nil {
			t.Fatalf("healed: %s = %v, want nil", name, err)
		}
		recv()
	}
	if err := heartbeat(); err != nil || hbSeen != 1 {
		t.Fatalf("healed: heartbeat = %v (handler calls %d), want nil (1)", err, hbSeen)
	}

	nw.Isolate("node-b")
	outgoing := map[string]func() error{
		"RequestVote":   func() error { return vote(a) },
		"AppendEntries": func() error { return appendE(a) },
		"RequestPreVote": func() error {
			return a.RequestPreVote("node-b", "b", &raft.RequestPreVoteRequest{RPCHeader: hdrA}, &raft.RequestPreVoteResponse{})
		},
		"TimeoutNow": func() error {
			return a.TimeoutNow("node-b", "b", &raft.TimeoutNowRequest{RPCHeader: hdrA}, &raft.TimeoutNowResponse{})
		},
		"InstallSnapshot": func() error {
			return a.InstallSnapshot("node-b", "b", &raft.InstallSnapshotRequest{RPCHeader: hdrA}, &raft.InstallSnapshotResponse{}, bytes.NewReader(nil))
		},
		"AppendEntriesPipeline": func() error { _, err := a.AppendEntriesPipeline("node-b", "b"); return err },
		"AppendEntries on a pipeline opened before the cut": func() error {
			_, err := pipe.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: hdrA}, &raft.AppendEntriesResponse{})
			return err
		},
		// The sender is not wrapped: b's filter answers for it.
		"RequestVote received":   func() error { return vote(ia) },
		"AppendEntries received": func() error { return appendE(ia) },
		"heartbeat received":     heartbeat,
	}
	for name, call := range outgoing {
		if err := call(); !errors.Is(err, ErrPartitioned) {
			t.Errorf("partitioned: %s = %v, want ErrPartitioned", name, err)
		}
	}
	select {
	case c := <-got:
		t.Fatalf("partitioned: b's raft got %T", c)
	default:
	}
	if hbSeen != 1 {
		t.Fatalf("partitioned: heartbeat handler called %d times, want 1", hbSeen)
	}
	// An unknown sender (no header id, no known address) is never cut.
	if nw.Cut("node-b", "") {
		t.Error(`Cut("node-b", "") = true, want false`)
	}

	nw.Heal()
	if err := vote(ia); err != nil {
		t.Fatalf("healed again: RequestVote = %v", err)
	}
	recv()
	if err := heartbeat(); err != nil || hbSeen != 2 {
		t.Fatalf("healed again: heartbeat = %v (handler calls %d), want nil (2)", err, hbSeen)
	}
}
