package controller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// Reference ChannelManagerTest.should_register_new_channel.
func TestRegisterNewChannel(t *testing.T) {
	h := newHarness(t, fastConfig())
	c1 := h.connect(connOpts{target: "t1", connectorID: "gw-1", metadata: map[string]string{"zone": "eu"}})
	if c1.hello.TargetID != "t1" || c1.hello.ChannelID == "" || c1.hello.NodeID != "node-a" ||
		c1.hello.ProtocolVersion != command.ProtocolVersion || c1.hello.HeartbeatMs != time.Hour.Milliseconds() {
		t.Fatalf("hello reply = %+v", c1.hello)
	}
	if c1.hello.Limits.MaxFrameBytes <= 0 || c1.hello.Limits.MaxInFlight <= 0 {
		t.Errorf("hello limits = %+v, want positive", c1.hello.Limits)
	}
	h.waitRegistered(c1.id(), true)

	info, _ := h.ctrl.Channel(c1.id())
	if info.TargetID != "t1" || info.ConnectorID != "gw-1" || info.NodeID != "node-a" || !info.Active ||
		!info.Local || info.RegisteredAt.IsZero() || info.Metadata["zone"] != "eu" {
		t.Errorf("Channel() = %+v", info)
	}
	if _, ok := h.ctrl.Channel("nope"); ok {
		t.Errorf("Channel(nope) found")
	}
	if got := h.ctrl.NodeID(); got != "node-a" {
		t.Errorf("NodeID() = %q", got)
	}
	cl := h.ctrl.Cluster()
	if cl.NodeID != "node-a" || cl.LeaderID != "node-a" || cl.State != "Leader" || len(cl.Members) != 1 || !cl.Members[0].Leader {
		t.Errorf("Cluster() = %+v", cl)
	}
}

// Reference ChannelManagerTest.should_receive_primary_command_after_register_new_primary_channel.
func TestFirstChannelIsToldPrimary(t *testing.T) {
	h := newHarness(t, fastConfig())
	c1 := h.connect(connOpts{target: "t1"})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
	info, _ := h.ctrl.Channel(c1.id())
	if !info.Primary || info.Epoch != 1 {
		t.Errorf("Channel() = %+v, want primary with epoch 1", info)
	}
}

// Reference ChannelManagerTest.should_return_metrics_for_target and
// should_return_metrics_for_channel.
func TestInfosForTwoTargets(t *testing.T) {
	h := newHarness(t, fastConfig())
	c1 := h.connect(connOpts{target: "t1"})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
	c2 := h.connect(connOpts{target: "t1"})
	c3 := h.connect(connOpts{target: "t2"})
	h.waitBelief(c2, command.PrimaryPayload{Primary: false, Epoch: 1})
	h.waitBelief(c3, command.PrimaryPayload{Primary: true, Epoch: 2}) // epochs are global: t1 took 1

	type row struct {
		id      string
		primary bool
	}
	rows := func(ti controller.TargetInfo) []row {
		var out []row
		for _, c := range ti.Channels {
			out = append(out, row{c.ID, c.Primary})
		}
		return out
	}
	targets := h.ctrl.Targets()
	if len(targets) != 2 || targets[0].ID != "t1" || targets[1].ID != "t2" {
		t.Fatalf("Targets() = %+v", targets)
	}
	if ids := h.ctrl.TargetIDs(); !slices.Equal(ids, []string{"t1", "t2"}) {
		t.Errorf("TargetIDs() = %v, want [t1 t2]", ids)
	}
	for after, want := range map[string][]string{"": {"t1"}, "t1": {"t2"}, "t": {"t1"}, "t2": nil} {
		if ids := h.ctrl.TargetIDsAfter(after, 1); !slices.Equal(ids, want) {
			t.Errorf("TargetIDsAfter(%q, 1) = %v, want %v", after, ids, want)
		}
	}
	if got, want := rows(targets[0]), []row{{c1.id(), true}, {c2.id(), false}}; !slices.Equal(got, want) {
		t.Errorf("t1 channels = %v, want %v", got, want)
	}
	if got, want := rows(targets[1]), []row{{c3.id(), true}}; !slices.Equal(got, want) {
		t.Errorf("t2 channels = %v, want %v", got, want)
	}
	if targets[0].PrimaryID != c1.id() || targets[0].Epoch != 1 {
		t.Errorf("t1 = %+v, want primary %s epoch 1", targets[0], c1.id())
	}
	t1, ok := h.ctrl.Target("t1")
	if !ok || len(t1.Channels) != 2 {
		t.Errorf("Target(t1) = %+v, %t", t1, ok)
	}
	if _, ok := h.ctrl.Target("unknown"); ok {
		t.Errorf("Target(unknown) found")
	}
	// Several at once (Target reads one so), as the whole registry's read
	// shows them (the local figures included), in the order asked, without
	// the unknown.
	if diff := cmp.Diff([]controller.TargetInfo{targets[1], targets[0]}, h.ctrl.TargetsOf([]string{"t2", "unknown", "t1"})); diff != "" {
		t.Errorf("TargetsOf(t2, unknown, t1) differs from Targets' (-Targets +TargetsOf):\n%s", diff)
	}
	if got := h.ctrl.TargetsOf(nil); len(got) != 0 {
		t.Errorf("TargetsOf(nil) = %v, want none", got)
	}
	all := h.ctrl.Channels()
	var ids []string
	for _, c := range all {
		ids = append(ids, c.ID)
	}
	if want := []string{c1.id(), c2.id(), c3.id()}; !slices.Equal(ids, want) {
		t.Errorf("Channels() ids = %v, want %v (by target, then registration)", ids, want)
	}
}

// Reference PrimaryChannelManagerTest.should_reelect_after_evicted_primary_channel,
// repeated 10 times, with our additions: the joining channel is told
// primary:false (weakness 15) and the epoch grows. Epochs are global: each
// round's target takes three (elected, re-elected, evicted when c2 leaves).
func TestReelection(t *testing.T) {
	h := newHarness(t, fastConfig())
	for i := range 10 {
		target := fmt.Sprintf("t%d", i)
		base := uint64(3 * i)
		c1 := h.connect(connOpts{target: target})
		h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: base + 1})
		c2 := h.connect(connOpts{target: target})
		h.waitBelief(c2, command.PrimaryPayload{Primary: false, Epoch: base + 1})
		if got, _ := c1.belief(); !got.Primary {
			t.Fatalf("round %d: c1 lost the role when c2 joined", i)
		}

		c1.close()
		h.waitBelief(c2, command.PrimaryPayload{Primary: true, Epoch: base + 2})
		ti, ok := h.ctrl.Target(target)
		if !ok || ti.PrimaryID != c2.id() || ti.Epoch != base+2 || len(ti.Channels) != 1 {
			t.Fatalf("round %d: Target() = %+v, want c2 primary at epoch %d, alone", i, ti, base+2)
		}
		c2.close()
		h.waitFor("target gone", func() bool { _, ok := h.ctrl.Target(target); return !ok })
	}
}

// A PRIMARY that fails is retried until the channel has heard it (weakness 14).
func TestFailedPrimaryIsRetried(t *testing.T) {
	h := newHarness(t, fastConfig())
	c1 := h.connect(connOpts{target: "t1", failPrimary: 2})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
}

func TestEventsInOrder(t *testing.T) {
	h := newHarness(t, fastConfig())
	c1 := h.connect(connOpts{target: "t1"})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
	c2 := h.connect(connOpts{target: "t1"})
	h.waitBelief(c2, command.PrimaryPayload{Primary: false, Epoch: 1})
	c1.close()
	h.waitBelief(c2, command.PrimaryPayload{Primary: true, Epoch: 2})
	c2.close()

	want := []controller.Event{
		{Kind: controller.EventChannelRegistered, TargetID: "t1", ChannelID: c1.id(), NodeID: "node-a"},
		{Kind: controller.EventPrimaryElected, TargetID: "t1", ChannelID: c1.id(), NodeID: "node-a", Epoch: 1},
		{Kind: controller.EventChannelRegistered, TargetID: "t1", ChannelID: c2.id(), NodeID: "node-a"},
		{Kind: controller.EventChannelUnregistered, TargetID: "t1", ChannelID: c1.id(), NodeID: "node-a"},
		{Kind: controller.EventPrimaryElected, TargetID: "t1", ChannelID: c2.id(), NodeID: "node-a", Epoch: 2},
		{Kind: controller.EventChannelUnregistered, TargetID: "t1", ChannelID: c2.id(), NodeID: "node-a"},
		{Kind: controller.EventPrimaryEvicted, TargetID: "t1", Epoch: 3},
	}
	h.waitFor("7 events", func() bool { return len(h.events.all()) >= len(want) })
	if got := h.events.all(); !slices.Equal(got, want) {
		t.Errorf("events:\n got %+v\nwant %+v", got, want)
	}
}

// Close says GOOD_BYE{reconnect:true} to every channel and leaves the
// registry empty; Run returns nil; Close is idempotent.
func TestCloseSaysGoodByeAndUnregisters(t *testing.T) {
	h := newHarness(t, fastConfig())
	var cs []*connector
	for i := range 3 {
		c := h.connect(connOpts{target: fmt.Sprintf("t%d", i%2)})
		h.waitRegistered(c.id(), true)
		cs = append(cs, c)
	}
	if err := h.ctrl.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for _, c := range cs {
		if got := c.goodbyeList(); len(got) != 1 || !got[0].Reconnect || got[0].TargetID != c.hello.TargetID {
			t.Errorf("channel %s got GOOD_BYEs %+v, want one with reconnect", c.id(), got)
		}
		h.waitClosed(c)
	}
	h.store.View(func(s *state.State) {
		if len(s.Channels) != 0 {
			t.Errorf("state still has %d channels", len(s.Channels))
		}
	})
	if err := h.wait(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if err := h.ctrl.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if err := h.ctrl.Run(t.Context()); err != nil {
		t.Errorf("Run after Close = %v, want nil", err)
	}
	if _, err := h.ctrl.Send(t.Context(), "t0", command.MustCommand("ECHO", nil)); !errors.Is(err, controller.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
	// The last events (unregistrations, evictions) were delivered before Close returned.
	evs := h.events.all()
	if last := evs[len(evs)-1]; last.Kind != controller.EventPrimaryEvicted {
		t.Errorf("last event = %+v, want a primary eviction", last)
	}
}

// Cancelling Run's context shuts the controller down like Close.
func TestRunStopsWhenContextIsDone(t *testing.T) {
	h := newHarness(t, fastConfig())
	c := h.connect(connOpts{target: "t1"})
	h.waitRegistered(c.id(), true)
	h.cancel()
	if err := h.wait(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if got := c.goodbyeList(); len(got) != 1 {
		t.Errorf("GOOD_BYEs = %+v, want one", got)
	}
	if n := len(h.ctrl.Channels()); n != 0 {
		t.Errorf("%d channels left", n)
	}
}

// crashStore fails every Apply once crashed: the node "dies" without
// unregistering its channels.
type crashStore struct {
	*standalone.Cluster
	crashed atomic.Bool
}

func (s *crashStore) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	if s.crashed.Load() {
		return nil, errors.New("node crashed")
	}
	return s.Cluster.Apply(ctx, ops...)
}

// Restarting with the same store and node id removes the channels the
// previous run held (ARCHITECTURE §3), and no other node's.
func TestRestartRemovesStaleChannels(t *testing.T) {
	mem := standalone.New("node-a")
	other := state.Channel{ID: "remote-1", TargetID: "t1", NodeID: "node-b", Active: true}
	if err := state.Err(mem.Apply(t.Context(), state.Op{Register: &state.RegisterChannel{Channel: other}})); err != nil {
		t.Fatal(err)
	}
	cs := &crashStore{Cluster: mem}

	// First run: a channel registers, then the node crashes (its Close
	// cannot unregister anything).
	h1 := newHarness(t, fastConfig(), harnessOpts{store: cs})
	c1 := h1.connect(connOpts{target: "t1"})
	h1.waitRegistered(c1.id(), true)
	cs.crashed.Store(true)
	h1.closeErrOK = true
	if err := h1.ctrl.Close(); err == nil {
		t.Fatalf("Close() on a crashed store = nil, want the failed unregistration")
	}
	cs.crashed.Store(false)
	if _, ok := h1.ctrl.Channel(c1.id()); !ok {
		t.Fatalf("crashed node's channel should linger in the state")
	}

	// Second run, same node id: the stale channel goes, node-b's stays.
	h2 := newHarness(t, fastConfig(), harnessOpts{store: mem})
	h2.waitRegistered(c1.id(), false)
	if _, ok := h2.ctrl.Channel("remote-1"); !ok {
		t.Errorf("another node's channel was removed")
	}
	ti, _ := h2.ctrl.Target("t1")
	if ti.PrimaryID != "remote-1" || ti.Epoch < 1 {
		t.Errorf("Target(t1) = %+v, want remote-1 primary", ti)
	}
}

// New starts nothing; Close without Run is fine; the default node id is the
// host name plus a suffix.
func TestNewWithoutRun(t *testing.T) {
	ctrl, err := controller.New(controller.Config{Logger: testLogger(t)}, embedded.Listen(), standalone.New(""))
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if id := ctrl.NodeID(); !strings.HasPrefix(id, host+"-") || len(id) != len(host)+7 {
		t.Errorf("NodeID() = %q, want %s-xxxxxx", id, host)
	}
	if err := ctrl.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if _, err := controller.New(controller.Config{}, nil, standalone.New("")); err == nil {
		t.Errorf("New without a listener = nil error")
	}
}

// A listener closed under the controller ends Run with an error, after a
// clean shutdown.
func TestListenerClosedUnderRun(t *testing.T) {
	h := newHarness(t, fastConfig())
	c := h.connect(connOpts{target: "t1"})
	h.waitRegistered(c.id(), true)
	_ = h.lis.Close()
	err := h.wait()
	if !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("Run() = %v, want an error wrapping channel.ErrClosed", err)
	}
	h.runResult = nil // checked: the cleanup must not report it again
	if got := c.goodbyeList(); len(got) != 1 {
		t.Errorf("GOOD_BYEs = %+v, want one", got)
	}
}
