// Package clustertest checks implementations of controller.Cluster: one
// conformance suite that every twin (standalone.Cluster, cluster.Node alone
// and in a cluster) must pass, the way channeltest serves the channel
// twins.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// Cluster is a twin under test: the controller's seam, closable.
type Cluster interface {
	controller.Cluster
	Close() error
}

// Open returns the nodes of a fresh, started cluster for one subtest: one
// node for a twin of one, several for a real cluster, the first of them a
// follower (so its applies go through the leader) and the last another node,
// the leader (forwards to it cross a link; WhileLeader runs on it). The suite closes them (Close must be
// idempotent).
type Open func(t *testing.T) []Cluster

const timeout = 20 * time.Second

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Run runs every conformance test against the twin open makes.
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"ApplyResultsPerOp", testApplyResults},
		{"ApplyThenView", testApplyThenView},
		{"SubscribeInOrder", testSubscribe},
		{"ApplyCanceled", testApplyCanceled},
		{"Forward", testForward},
		{"ForwardKeepsTypedErrors", testForwardErrors},
		{"ForwardUnknownNode", testForwardUnknownNode},
		{"WhileLeader", testWhileLeader},
		{"Closed", testClosed},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func start(t *testing.T, open Open) Cluster {
	c, _ := startPair(t, open)
	return c
}

// startPair returns the node under test and the node forwards go to (the
// same node for a twin of one).
func startPair(t *testing.T, open Open) (c, peer Cluster) {
	t.Helper()
	nodes := open(t)
	if len(nodes) == 0 {
		t.Fatal("Open returned no node")
	}
	for _, n := range nodes {
		t.Cleanup(func() { _ = n.Close() })
	}
	return nodes[0], nodes[len(nodes)-1]
}

func reg(c Cluster, id, target string) state.Op {
	return state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
		ID: id, TargetID: target, NodeID: c.NodeID(), Active: true, RegisteredAt: time.Unix(1700000000, 0).UTC(),
	}}}
}

func testApplyResults(t *testing.T, open Open) {
	c := start(t, open)
	del := batch.Op{Delete: &batch.DeleteBatch{ID: "nope"}}
	bs := state.NewBatchStore(c)
	rs, err := c.Apply(ctxFor(t), reg(c, "a1", "t1"), reg(c, "a1", "t1"), state.Op{Unregister: &state.UnregisterChannel{ChannelID: "ghost"}},
		state.Op{}, reg(c, "a2", "t1"))
	if err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	want := []state.ErrorCode{"", state.CodeExists, "", state.CodeInvalid, ""}
	if len(rs) != len(want) {
		t.Fatalf("Apply() returned %d results for %d ops", len(rs), len(want))
	}
	for i, r := range rs {
		got := state.ErrorCode("")
		if r.Err != nil {
			got = r.Err.Code
		}
		if got != want[i] {
			t.Errorf("result %d = %+v, want code %q", i, r, want[i])
		}
	}
	if !errors.Is(rs[1].Err, state.ErrExists) {
		t.Errorf("results[1] = %v, want errors.Is ErrExists", rs[1].Err)
	}
	if err := bs.Apply(ctxFor(t), del); !errors.Is(err, batch.ErrNotFound) {
		t.Errorf("batch delete of a missing batch = %v, want batch.ErrNotFound", err)
	}
}

func testApplyThenView(t *testing.T, open Open) {
	c := start(t, open)
	if err := state.Err(c.Apply(ctxFor(t), reg(c, "v1", "tv"), reg(c, "v2", "tv"))); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var primary string
	c.View(func(s *state.State) {
		for _, ch := range s.TargetChannels("tv") {
			ids = append(ids, ch.ID)
		}
		primary, _ = s.PrimaryOf("tv")
	})
	if fmt.Sprint(ids) != "[v1 v2]" || primary != "v1" {
		t.Errorf("after Apply, View shows channels %v and primary %q; want [v1 v2] and v1", ids, primary)
	}
}

func testSubscribe(t *testing.T, open Open) {
	c := start(t, open)
	var mu sync.Mutex
	var got []state.EventKind
	cancel := c.Subscribe(func(evs []state.Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			if e.TargetID == "ts" {
				got = append(got, e.Kind)
			}
		}
	})
	ctx := ctxFor(t)
	if err := state.Err(c.Apply(ctx, reg(c, "s1", "ts"))); err != nil {
		t.Fatal(err)
	}
	if err := state.Err(c.Apply(ctx, state.Op{Unregister: &state.UnregisterChannel{ChannelID: "s1"}})); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := state.Err(c.Apply(ctx, reg(c, "s2", "ts"))); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []state.EventKind{state.ChannelRegistered, state.PrimaryElected, state.ChannelUnregistered, state.PrimaryEvicted}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events = %v, want %v (and none after cancel)", got, want)
	}
}

func testApplyCanceled(t *testing.T, open Open) {
	c := start(t, open)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Apply(ctx, reg(c, "x1", "tx")); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply(canceled ctx) = %v, want context.Canceled", err)
	}
	found := false
	c.View(func(s *state.State) { _, found = s.Channels["x1"] })
	if found {
		t.Error("an Apply refused for its ctx was applied")
	}
}

func testForward(t *testing.T, open Open) {
	c, peer := startPair(t, open)
	type call struct {
		ch  state.ChannelID
		cmd *command.Command
		dl  bool
	}
	calls := make(chan call, 1)
	peer.HandleForward(func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error) {
		_, dl := ctx.Deadline()
		calls <- call{ch, cmd, dl}
		return command.Succeeded(cmd, map[string]string{"echo": string(cmd.Payload)})
	})
	ctx, cancel := context.WithTimeout(ctxFor(t), 5*time.Second)
	defer cancel()
	cmd := command.MustCommand("ECHO", "hi")
	reply, err := c.Forward(ctx, state.NodeID(peer.NodeID()), "ch-1", cmd)
	if err != nil || !reply.Succeeded() || reply.CommandID != cmd.ID {
		t.Fatalf("Forward() = %+v, %v; want a SUCCEEDED reply to %s", reply, err, cmd.ID)
	}
	if string(reply.Payload) != `{"echo":"\"hi\""}` {
		t.Errorf("reply payload = %s", reply.Payload)
	}
	got := <-calls
	if got.ch != "ch-1" || got.cmd.ID != cmd.ID || string(got.cmd.Payload) != `"hi"` || !got.dl || got.cmd.FreshID {
		t.Errorf("handler got channel %s, command %+v, deadline %v; want ch-1, the command (its own id, not fresh), a deadline", got.ch, got.cmd, got.dl)
	}

	// A command without an id (controller.Send leaves it to the channel)
	// is forwarded too; the reply answers the id the handler saw.
	cmd = command.MustCommand("ECHO", "no id")
	cmd.ID = ""
	reply, err = c.Forward(ctx, state.NodeID(peer.NodeID()), "ch-1", cmd)
	if err != nil || !reply.Succeeded() {
		t.Fatalf("Forward(no id) = %+v, %v; want a SUCCEEDED reply", reply, err)
	}
	got = <-calls
	if reply.CommandID != got.cmd.ID {
		t.Errorf("Forward(no id): reply to %q, the handler saw %q", reply.CommandID, got.cmd.ID)
	}
	// An id made on the way is made for this forward alone: the handler sees
	// it marked fresh (or sees none, and its channel makes a fresh one).
	if got.cmd.ID != "" && !got.cmd.FreshID {
		t.Errorf("Forward(no id): the handler saw id %q not marked FreshID", got.cmd.ID)
	}
}

func testForwardErrors(t *testing.T, open Open) {
	c, peer := startPair(t, open)
	errs := map[string]error{
		"closed":  fmt.Errorf("deliver: %w", channel.ErrClosed),
		"busy":    &channel.BusyError{RetryAfter: 1500 * time.Millisecond},
		"remote":  &channel.RemoteError{Message: "boom"},
		"unknown": &channel.UnknownCommandError{Type: "NOPE"},
		"timeout": fmt.Errorf("deliver: %w", context.DeadlineExceeded),
	}
	peer.HandleForward(func(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error) {
		return nil, errs[string(ch)]
	})
	ctx := ctxFor(t)
	fwd := func(ch string) error {
		_, err := c.Forward(ctx, state.NodeID(peer.NodeID()), state.ChannelID(ch), command.MustCommand("X", nil))
		return err
	}
	if err := fwd("closed"); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("closed: %v, want channel.ErrClosed", err)
	}
	var busy *channel.BusyError
	if err := fwd("busy"); !errors.As(err, &busy) || busy.RetryAfter != 1500*time.Millisecond {
		t.Errorf("busy: %v, want *channel.BusyError{1.5s}", err)
	}
	var remote *channel.RemoteError
	if err := fwd("remote"); !errors.As(err, &remote) || remote.Message != "boom" {
		t.Errorf("remote: %v, want *channel.RemoteError{boom}", err)
	}
	var unknown *channel.UnknownCommandError
	if err := fwd("unknown"); !errors.As(err, &unknown) || unknown.Type != "NOPE" {
		t.Errorf("unknown: %v, want *channel.UnknownCommandError{NOPE}", err)
	}
	if err := fwd("timeout"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v, want context.DeadlineExceeded", err)
	}
}

func testForwardUnknownNode(t *testing.T, open Open) {
	c := start(t, open)
	_, err := c.Forward(ctxFor(t), "no-such-node", "ch", command.MustCommand("X", nil))
	if !errors.Is(err, state.ErrNodeUnavailable) {
		t.Errorf("Forward(unknown node) = %v, want state.ErrNodeUnavailable", err)
	}
}

func testWhileLeader(t *testing.T, open Open) {
	_, c := startPair(t, open) // the last node: the leader of a real cluster
	ctx, cancel := context.WithCancel(ctxFor(t))
	started := make(chan context.Context, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.WhileLeader(ctx, func(term context.Context) {
			started <- term
			<-term.Done()
		})
	}()
	var term context.Context
	select {
	case term = <-started:
	case <-time.After(timeout):
		t.Fatal("WhileLeader never called fn on a node that leads")
	}
	if term.Err() != nil {
		t.Errorf("fn's context ended at once: %v", term.Err())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WhileLeader() after ctx ended = %v, want nil", err)
	}
	if term.Err() == nil {
		t.Error("fn's context lives on after WhileLeader returned")
	}
}

func testClosed(t *testing.T, open Open) {
	c := start(t, open)
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := c.Apply(ctxFor(t), reg(c, "z1", "tz")); err == nil {
		t.Error("Apply after Close = nil error")
	}
	if err := c.WhileLeader(ctxFor(t), func(context.Context) { t.Error("fn called after Close") }); err == nil {
		t.Error("WhileLeader after Close = nil error")
	}
}
