package controller_test

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// stateLog records the state's events, one slice per change, as the store
// delivers them (with the replica locked, so nothing in between is visible).
type stateLog struct {
	mu      sync.Mutex
	changes [][]state.Event
}

func recordState(h *harness) *stateLog {
	l := &stateLog{}
	cancel := h.store.Subscribe(func(evs []state.Event) {
		l.mu.Lock()
		l.changes = append(l.changes, slices.Clone(evs))
		l.mu.Unlock()
		h.sig.fire()
	})
	h.t.Cleanup(cancel)
	return l
}

func (l *stateLog) all() [][]state.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.changes)
}

// checkNeverWithoutPrimary fails if target was ever left without a primary
// by a change while it had channels, and returns the change that removed
// channel gone.
func (l *stateLog) checkNeverWithoutPrimary(t *testing.T, target, gone string) []state.Event {
	t.Helper()
	var removal []state.Event
	for _, change := range l.all() {
		for _, e := range change {
			if e.TargetID == target && e.Kind == state.PrimaryEvicted {
				t.Errorf("target %s evicted its primary (epoch %d) in change %+v", target, e.Epoch, change)
			}
			if e.Kind == state.ChannelUnregistered && e.ChannelID == gone {
				removal = change
			}
		}
	}
	return removal
}

// A second channel of the same connector for the same target takes over the
// first at once: the first is unregistered and told GOOD_BYE{reconnect:false}
// and closed, and its primary role passes to the new channel with a higher
// epoch in the same state change, not to the other connector's older
// channel. The target is never without a primary.
func TestTakeOverOnOneNode(t *testing.T) {
	h := newHarness(t, fastConfig())
	rec := recordState(h)

	old := h.connect(connOpts{target: "t", connectorID: "gw"})
	h.waitRegistered(old.id(), true)
	before, _ := h.ctrl.Target("t")
	h.waitBelief(old, command.PrimaryPayload{Primary: true, Epoch: before.Epoch})
	other := h.connect(connOpts{target: "t", connectorID: "gw-2"})
	h.waitRegistered(other.id(), true)

	nw := h.connect(connOpts{target: "t", connectorID: "gw"})
	h.waitRegistered(old.id(), false)
	h.waitClosed(old)
	if got := old.goodbyeList(); len(got) != 1 || got[0] != (command.GoodByePayload{TargetID: "t", Reconnect: false}) {
		t.Errorf("old channel was told %+v, want one GOOD_BYE{reconnect:false}", got)
	}

	after, _ := h.ctrl.Target("t")
	if after.PrimaryID != nw.id() || after.Epoch <= before.Epoch {
		t.Fatalf("primary %s epoch %d after the take-over; want %s with an epoch above %d", after.PrimaryID, after.Epoch, nw.id(), before.Epoch)
	}
	if ids := channelIDs(after); !slices.Equal(ids, []string{other.id(), nw.id()}) {
		t.Errorf("channels of t = %v, want [%s %s]", ids, other.id(), nw.id())
	}
	h.waitBelief(nw, command.PrimaryPayload{Primary: true, Epoch: after.Epoch})

	change := rec.checkNeverWithoutPrimary(t, "t", old.id())
	want := []state.Event{
		{Kind: state.ChannelUnregistered, TargetID: "t", ChannelID: old.id(), NodeID: "node-a", ReplacedBy: nw.id()},
		{Kind: state.ChannelRegistered, TargetID: "t", ChannelID: nw.id(), NodeID: "node-a"},
		{Kind: state.PrimaryElected, TargetID: "t", ChannelID: nw.id(), NodeID: "node-a", Epoch: after.Epoch},
	}
	if !slices.Equal(change, want) {
		t.Errorf("take-over change = %+v\nwant %+v", change, want)
	}
	if other.ch.Err() != nil {
		t.Errorf("the other connector's channel closed: %v", other.ch.Err())
	}
}

// Channels without a connector id are anonymous: none takes another over.
func TestTakeOverNotForAnonymous(t *testing.T) {
	h := newHarness(t, fastConfig())
	a := h.connect(connOpts{target: "t"})
	h.waitRegistered(a.id(), true) // HELLO is answered before the registration: keep the order
	b := h.connect(connOpts{target: "t"})
	h.waitRegistered(b.id(), true)
	if ti, _ := h.ctrl.Target("t"); len(ti.Channels) != 2 || ti.PrimaryID != a.id() {
		t.Errorf("target t = %+v, want both channels, the first primary", ti)
	}
	if a.ch.Err() != nil {
		t.Errorf("first anonymous channel closed: %v", a.ch.Err())
	}
}

// A local channel that another node removes from the state (here an
// Unregister applied directly, as the leader's removal of a node it took for
// dead would be) is told GOOD_BYE{reconnect:true} and closed: left open, it
// would be neither health-checked, nor routed to, nor ever unregistered.
func TestChannelUnregisteredElsewhereIsClosed(t *testing.T) {
	h := newHarness(t, fastConfig())
	c := h.connect(connOpts{target: "t", connectorID: "gw"})
	h.waitRegistered(c.id(), true)
	if err := state.Err(h.store.Apply(t.Context(), state.Op{Unregister: &state.UnregisterChannel{ChannelID: c.id()}})); err != nil {
		t.Fatal(err)
	}
	h.waitClosed(c)
	if got := c.goodbyeList(); len(got) != 1 || !got[0].Reconnect {
		t.Errorf("channel was told %+v, want one GOOD_BYE{reconnect:true}", got)
	}
}

// nodeAs is the shared one-process cluster seen from another node: two
// controllers over one state play two nodes of a cluster.
type nodeAs struct {
	*standalone.Cluster
	id string
}

func (n nodeAs) NodeID() string { return n.id }

// The take-over is cluster-wide: a connector that reconnects to another
// node takes over its channel held by the first, which closes it.
func TestTakeOverAcrossNodes(t *testing.T) {
	shared := standalone.New("node-a")
	a := newHarness(t, fastConfig(), harnessOpts{store: shared})
	cfgB := fastConfig()
	cfgB.NodeID = "node-b"
	b := newHarness(t, cfgB, harnessOpts{store: nodeAs{Cluster: shared, id: "node-b"}})
	rec := recordState(a)

	old := a.connect(connOpts{target: "t", connectorID: "gw"})
	a.waitRegistered(old.id(), true)
	before, _ := a.ctrl.Target("t")

	nw := b.connect(connOpts{target: "t", connectorID: "gw"})
	a.waitClosed(old)
	if got := old.goodbyeList(); len(got) != 1 || got[0].Reconnect {
		t.Errorf("old channel was told %+v, want one GOOD_BYE{reconnect:false}", got)
	}
	after, _ := b.ctrl.Target("t")
	if after.PrimaryID != nw.id() || after.Epoch <= before.Epoch || len(after.Channels) != 1 {
		t.Fatalf("target t after the take-over = %+v; want only %s, primary, epoch above %d", after, nw.id(), before.Epoch)
	}
	b.waitBelief(nw, command.PrimaryPayload{Primary: true, Epoch: after.Epoch})
	if change := rec.checkNeverWithoutPrimary(t, "t", old.id()); len(change) == 0 || change[0].ReplacedBy != nw.id() {
		t.Errorf("take-over change = %+v, want the old channel replaced by %s", change, nw.id())
	}
}

func channelIDs(t controller.TargetInfo) []string {
	var ids []string
	for _, c := range t.Channels {
		ids = append(ids, c.ID)
	}
	return ids
}

// A take-over by a later attempt of the same connector instance is the
// connector continuing: the old channel is told GOOD_BYE{reconnect:true}
// (not to stop) and closed. A take-over by another instance keeps the rule
// of decision 0018: GOOD_BYE{reconnect:false}.
func TestTakeOverSameInstance(t *testing.T) {
	for _, tt := range []struct {
		name      string
		second    connOpts
		reconnect bool
	}{
		{"same instance, later attempt", connOpts{target: "t", connectorID: "gw", instance: "i1", attempt: 2}, true},
		{"another instance", connOpts{target: "t", connectorID: "gw", instance: "i2", attempt: 1}, false},
		{"no instance", connOpts{target: "t", connectorID: "gw"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, fastConfig())
			old := h.connect(connOpts{target: "t", connectorID: "gw", instance: "i1", attempt: 1})
			h.waitRegistered(old.id(), true)
			nw := h.connect(tt.second)
			h.waitRegistered(old.id(), false)
			h.waitClosed(old)
			if got := old.goodbyeList(); len(got) != 1 || got[0] != (command.GoodByePayload{TargetID: "t", Reconnect: tt.reconnect}) {
				t.Errorf("old channel was told %+v, want one GOOD_BYE{reconnect:%t}", got, tt.reconnect)
			}
			h.waitRegistered(nw.id(), true)
		})
	}
}

// A HELLO whose instance breaks the id rules is refused at the edge.
func TestHelloInstanceLimits(t *testing.T) {
	h := newHarness(t, fastConfig())
	_, err := h.dial(t.Context(), connOpts{target: "t", connectorID: "gw", instance: "bad\ninstance"})
	if err == nil || !strings.Contains(err.Error(), "instance") {
		t.Fatalf("HELLO with a bad instance = %v, want a refusal naming the instance", err)
	}
}
