package state_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Op builders.
func reg(id, target, node string) state.Op {
	return state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
		ID: id, TargetID: target, NodeID: node, Active: true, RegisteredAt: time.Unix(1, 0),
	}}}
}

func regInactive(id, target string) state.Op {
	op := reg(id, target, "n1")
	op.Register.Channel.Active = false
	return op
}

func unreg(id string) state.Op {
	return state.Op{Unregister: &state.UnregisterChannel{ChannelID: id}}
}

func setPrimary(target, id string) state.Op {
	return state.Op{SetPrimary: &state.SetPrimary{TargetID: target, ChannelID: id}}
}

func removeNode(node string) state.Op {
	return state.Op{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: node}}
}

// Event builders.
func registered(target, id, node string) state.Event {
	return state.Event{Kind: state.ChannelRegistered, TargetID: target, ChannelID: id, NodeID: node}
}

func unregistered(target, id, node string) state.Event {
	return state.Event{Kind: state.ChannelUnregistered, TargetID: target, ChannelID: id, NodeID: node}
}

func elected(target, id, node string, epoch uint64) state.Event {
	return state.Event{Kind: state.PrimaryElected, TargetID: target, ChannelID: id, NodeID: node, Epoch: epoch}
}

func evicted(target string, epoch uint64) state.Event {
	return state.Event{Kind: state.PrimaryEvicted, TargetID: target, Epoch: epoch}
}

// applyAll applies ops to a fresh state and fails on any error.
func applyAll(t *testing.T, ops ...state.Op) *state.State {
	t.Helper()
	s := state.NewState()
	for i, op := range ops {
		if _, err := s.Apply(op); err != nil {
			t.Fatalf("setup op %d: Apply() = %v", i, err)
		}
	}
	return s
}

// restored is s after a snapshot round trip: Marshal, then Unmarshal.
func restored(t testing.TB, s *state.State) *state.State {
	t.Helper()
	b, err := s.Marshal()
	if err != nil {
		t.Fatalf("Marshal() = %v", err)
	}
	r, err := state.Unmarshal(b)
	if err != nil {
		t.Fatalf("Unmarshal(Marshal()) = %v", err)
	}
	return r
}

func primaries(s *state.State) map[string]state.Primary {
	out := map[string]state.Primary{}
	for t, p := range s.Primaries {
		out[t] = *p
	}
	return out
}

func TestElection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup []state.Op
		op    state.Op
		// want: the events of op, and every target's primary afterwards.
		events    []state.Event
		primaries map[string]state.Primary
	}{
		{
			name:      "first channel is elected at epoch 1",
			op:        reg("c1", "t1", "n1"),
			events:    []state.Event{registered("t1", "c1", "n1"), elected("t1", "c1", "n1", 1)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			name:      "a second channel does not steal the role",
			setup:     []state.Op{reg("c1", "t1", "n1")},
			op:        reg("c2", "t1", "n2"),
			events:    []state.Event{registered("t1", "c2", "n2")},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			name:      "a non-primary leaving changes nothing",
			setup:     []state.Op{reg("c1", "t1", "n1"), reg("c2", "t1", "n1")},
			op:        unreg("c2"),
			events:    []state.Event{unregistered("t1", "c2", "n1")},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			// "z" registered before "a": registration order decides, not the id.
			name:      "primary leaves: the longest-registered survivor is elected, epoch bumped",
			setup:     []state.Op{reg("p", "t1", "n1"), reg("z", "t1", "n2"), reg("a", "t1", "n1")},
			op:        unreg("p"),
			events:    []state.Event{unregistered("t1", "p", "n1"), elected("t1", "z", "n2", 2)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "z", Epoch: 2}},
		},
		{
			// The eviction takes an epoch; then the target's entry goes: the
			// State's epoch counter remembers the epochs handed out.
			name:      "last channel leaves: primary evicted, epoch bumped, entry dropped",
			setup:     []state.Op{reg("c1", "t1", "n1")},
			op:        unreg("c1"),
			events:    []state.Event{unregistered("t1", "c1", "n1"), evicted("t1", 2)},
			primaries: map[string]state.Primary{},
		},
		{
			name:      "a target that comes back gets a higher epoch",
			setup:     []state.Op{reg("c1", "t1", "n1"), unreg("c1")},
			op:        reg("c2", "t1", "n1"),
			events:    []state.Event{registered("t1", "c2", "n1"), elected("t1", "c2", "n1", 3)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c2", Epoch: 3}},
		},
		{
			name:      "unregistering an unknown channel is a no-op",
			setup:     []state.Op{reg("c1", "t1", "n1")},
			op:        unreg("ghost"),
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			name:      "inactive channels are never elected",
			setup:     []state.Op{regInactive("c0", "t1")},
			op:        reg("c1", "t1", "n1"),
			events:    []state.Event{registered("t1", "c1", "n1"), elected("t1", "c1", "n1", 1)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			// Epochs are global: a1 took 1, a2 2, b3 3; the elections of the op
			// take 4 and 5, in target order.
			name: "RemoveNodeChannels removes the node's channels and re-elects",
			setup: []state.Op{
				reg("a1", "t1", "n1"), reg("b1", "t1", "n2"), reg("a2", "t2", "n1"), reg("b3", "t3", "n2"),
			},
			op: removeNode("n1"),
			events: []state.Event{ // removals in channel id order, then one election per target
				unregistered("t1", "a1", "n1"), unregistered("t2", "a2", "n1"),
				elected("t1", "b1", "n2", 4), evicted("t2", 5),
			},
			primaries: map[string]state.Primary{
				"t1": {ChannelID: "b1", Epoch: 4}, "t3": {ChannelID: "b3", Epoch: 3},
			},
		},
		{
			name:      "every primary change takes the next global epoch",
			setup:     []state.Op{reg("a1", "t1", "n1"), reg("b1", "t2", "n1"), reg("a2", "t1", "n2")},
			op:        unreg("a1"),
			events:    []state.Event{unregistered("t1", "a1", "n1"), elected("t1", "a2", "n2", 3)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "a2", Epoch: 3}, "t2": {ChannelID: "b1", Epoch: 2}},
		},
		{
			name: "RemoveNodeChannels of a target's primary and runner-up elects once",
			setup: []state.Op{
				reg("a1", "t1", "n1"), reg("a2", "t1", "n1"), reg("b1", "t1", "n2"),
			},
			op: removeNode("n1"),
			events: []state.Event{
				unregistered("t1", "a1", "n1"), unregistered("t1", "a2", "n1"), elected("t1", "b1", "n2", 2),
			},
			primaries: map[string]state.Primary{"t1": {ChannelID: "b1", Epoch: 2}},
		},
		{
			name:      "RemoveNodeChannels of an unknown node is a no-op",
			setup:     []state.Op{reg("c1", "t1", "n1")},
			op:        removeNode("n9"),
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			name:      "SetPrimary moves the role and bumps the epoch",
			setup:     []state.Op{reg("c1", "t1", "n1"), reg("c2", "t1", "n2")},
			op:        setPrimary("t1", "c2"),
			events:    []state.Event{elected("t1", "c2", "n2", 2)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c2", Epoch: 2}},
		},
		{
			name:      "SetPrimary to the current primary changes nothing",
			setup:     []state.Op{reg("c1", "t1", "n1")},
			op:        setPrimary("t1", "c1"),
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 1}},
		},
		{
			name:      "SetPrimary to none evicts",
			setup:     []state.Op{reg("c1", "t1", "n1")},
			op:        setPrimary("t1", ""),
			events:    []state.Event{evicted("t1", 2)},
			primaries: map[string]state.Primary{"t1": {Epoch: 2}},
		},
		{
			// SetPrimary("") is sticky too: the next registry change of the
			// target elects again, by registration order.
			name:      "after SetPrimary to none, the next change elects again",
			setup:     []state.Op{reg("c1", "t1", "n1"), setPrimary("t1", "")},
			op:        reg("c2", "t1", "n1"),
			events:    []state.Event{registered("t1", "c2", "n1"), elected("t1", "c1", "n1", 3)},
			primaries: map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := applyAll(t, tt.setup...)
			evs, err := s.Apply(tt.op)
			if err != nil {
				t.Fatalf("Apply() = %v", err)
			}
			if !slices.Equal(evs, tt.events) {
				t.Errorf("events:\n got %+v\nwant %+v", evs, tt.events)
			}
			if got := primaries(s); !maps.Equal(got, tt.primaries) {
				t.Errorf("primaries = %+v, want %+v", got, tt.primaries)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup []state.Op
		op    state.Op
		want  error
	}{
		{name: "empty op", op: state.Op{}, want: state.ErrInvalid},
		{name: "register without id", op: reg("", "t1", "n1"), want: state.ErrInvalid},
		{name: "register without target", op: reg("c1", "", "n1"), want: state.ErrInvalid},
		{name: "register twice", setup: []state.Op{reg("c1", "t1", "n1")}, op: reg("c1", "t2", "n1"), want: state.ErrExists},
		{name: "set primary without target", op: setPrimary("", "c1"), want: state.ErrInvalid},
		{name: "set primary to an unknown channel", setup: []state.Op{reg("c1", "t1", "n1")}, op: setPrimary("t1", "c9"), want: state.ErrNotFound},
		{name: "set primary to another target's channel", setup: []state.Op{reg("c1", "t1", "n1"), reg("c2", "t2", "n1")},
			op: setPrimary("t1", "c2"), want: state.ErrNotFound},
		// FuzzApply found it: an inactive channel made primary by hand.
		{name: "set primary to an inactive channel", setup: []state.Op{reg("c1", "t1", "n1"), regInactive("c2", "t1")},
			op: setPrimary("t1", "c2"), want: state.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := applyAll(t, tt.setup...)
			before := primaries(s)
			evs, err := s.Apply(tt.op)
			if !errors.Is(err, tt.want) {
				t.Errorf("Apply() = %v, want %v", err, tt.want)
			}
			if len(evs) != 0 || !maps.Equal(primaries(s), before) {
				t.Errorf("a failed op changed the state: events %+v", evs)
			}
		})
	}
}

// Elect only reads the state.
func TestElectIsPure(t *testing.T) {
	t.Parallel()
	s := applyAll(t, reg("c1", "t1", "n1"), reg("c2", "t1", "n1"))
	s.Primaries["t1"].ChannelID = "gone" // as if the primary vanished
	before, _ := s.Marshal()
	for range 3 {
		if id, change := state.Elect(s, "t1"); id != "c1" || !change {
			t.Fatalf("Elect() = %q, %t; want c1, true", id, change)
		}
	}
	if after, _ := s.Marshal(); string(after) != string(before) {
		t.Errorf("Elect modified the state")
	}
	if id, change := state.Elect(s, "nobody"); id != "" || change {
		t.Errorf("Elect(nobody) = %q, %t", id, change)
	}
}

// checkInvariants verifies, after every op: at most one primary per target
// (structural) and it is a registered, active channel of that target; a
// target with active channels and no forced eviction has a primary; a target
// has a Primaries entry exactly when it has channels; a primary change takes
// an epoch from the State's counter (above every epoch handed out before the
// op, so a target's epochs grow even across an absence); an unchanged primary
// keeps its epoch; and the events report the new epochs. last holds the
// highest epoch each target ever had; checkInvariants updates it.
func checkInvariants(s *state.State, before map[string]state.Primary, epochBefore uint64, last map[string]uint64,
	evs []state.Event, forcedNone map[string]bool,
) error {
	if s.Epoch < epochBefore {
		return fmt.Errorf("epoch counter went back from %d to %d", epochBefore, s.Epoch)
	}
	for target, p := range s.Primaries {
		old, had := before[target]
		if p.Epoch > s.Epoch {
			return fmt.Errorf("target %s: epoch %d above the counter %d", target, p.Epoch, s.Epoch)
		}
		if p.Epoch < last[target] {
			return fmt.Errorf("target %s: epoch went back from %d to %d", target, last[target], p.Epoch)
		}
		changed := !had || p.ChannelID != old.ChannelID || p.Epoch != old.Epoch
		if had && p.ChannelID == old.ChannelID && p.Epoch != old.Epoch {
			return fmt.Errorf("target %s: epoch %d→%d but the primary stayed %q", target, old.Epoch, p.Epoch, p.ChannelID)
		}
		if changed && p.Epoch <= epochBefore {
			return fmt.Errorf("target %s: primary %q→%q took epoch %d, not above the %d handed out before",
				target, old.ChannelID, p.ChannelID, p.Epoch, epochBefore)
		}
		if len(s.TargetChannels(target)) == 0 {
			return fmt.Errorf("target %s has no channels but a Primaries entry", target)
		}
		last[target] = p.Epoch
		if p.ChannelID == "" {
			continue
		}
		c, ok := s.Channels[p.ChannelID]
		if !ok || c.TargetID != target || !c.Active {
			return fmt.Errorf("target %s: primary %s is not a registered active channel of it", target, p.ChannelID)
		}
	}
	for _, c := range s.Channels {
		p := s.Primaries[c.TargetID]
		if p == nil && c.Active {
			return fmt.Errorf("target %s has active channel %s but no Primaries entry", c.TargetID, c.ID)
		}
		if c.Active && p.ChannelID == "" && !forcedNone[c.TargetID] {
			return fmt.Errorf("target %s has active channel %s but no primary", c.TargetID, c.ID)
		}
	}
	for _, e := range evs {
		if e.Kind != state.PrimaryElected && e.Kind != state.PrimaryEvicted {
			continue
		}
		if e.Epoch <= epochBefore || e.Epoch > s.Epoch {
			return fmt.Errorf("event %+v: epoch outside (%d, %d]", e, epochBefore, s.Epoch)
		}
		if e.Epoch > last[e.TargetID] {
			last[e.TargetID] = e.Epoch // an eviction of a target that left
		}
	}
	return nil
}

// Property: over a long random sequence of ops, the invariants hold after
// every op. Seeded, so a failure is reproducible.
func TestElectionInvariantsRandomOps(t *testing.T) {
	t.Parallel()
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 42))
			s := state.NewState()
			targets := []string{"t0", "t1", "t2", "t3"}
			nodes := []string{"n0", "n1", "n2"}
			forcedNone := map[string]bool{} // SetPrimary("") leaves a target without primary until its next change
			last := map[string]uint64{}
			next := 0
			for i := range 2000 {
				var op state.Op
				ids := slices.Sorted(maps.Keys(s.Channels))
				switch r := rng.IntN(100); {
				case r < 45 || len(ids) == 0:
					next++
					op = reg(fmt.Sprint("c", next), targets[rng.IntN(len(targets))], nodes[rng.IntN(len(nodes))])
					if rng.IntN(10) == 0 {
						op.Register.Channel.Active = false
					}
					// Some registrations take over their connector's
					// other channels (anonymous ones never do).
					op.Register.Channel.ConnectorID = []string{"", "k0", "k1"}[rng.IntN(3)]
					op.Register.TakeOver = rng.IntN(3) == 0
				case r < 85:
					op = unreg(ids[rng.IntN(len(ids))])
				case r < 90:
					op = removeNode(nodes[rng.IntN(len(nodes))])
				case r < 97:
					c := s.Channels[ids[rng.IntN(len(ids))]]
					op = setPrimary(c.TargetID, c.ID)
					if !c.Active {
						before := primaries(s)
						if evs, err := s.Apply(op); !errors.Is(err, state.ErrInvalid) || len(evs) != 0 || !maps.Equal(primaries(s), before) {
							t.Fatalf("op %d %+v (an inactive channel): Apply() = %+v, %v; want ErrInvalid and no change", i, op, evs, err)
						}
						op = unreg(c.ID)
					}
				default:
					op = setPrimary(targets[rng.IntN(len(targets))], "")
				}
				before, epochBefore := primaries(s), s.Epoch
				evs, err := s.Apply(op)
				if err != nil {
					t.Fatalf("op %d %+v: Apply() = %v", i, op, err)
				}
				for _, e := range evs {
					switch e.Kind {
					case state.PrimaryElected:
						forcedNone[e.TargetID] = false
					case state.PrimaryEvicted:
						forcedNone[e.TargetID] = op.SetPrimary != nil
					}
				}
				if err := checkInvariants(s, before, epochBefore, last, evs, forcedNone); err != nil {
					t.Fatalf("after op %d %+v: %v", i, op, err)
				}
			}
		})
	}
}

// A snapshot keeps channels, registration order and epochs, and the restored
// state goes on from there: epochs never go backwards across a restart.
func TestSnapshotRoundTripKeepsEpochs(t *testing.T) {
	t.Parallel()
	s := applyAll(t,
		reg("c1", "t1", "n1"), reg("c2", "t1", "n2"), unreg("c1"), // t1: c2 at epoch 2
		reg("c3", "t2", "n1"), unreg("c3"), // t2: took 3, evicted at 4, gone
		reg("c4", "t3", "n1"), // t3: c4 at epoch 5
	)
	r := restored(t, s)
	if got, want := primaries(r), primaries(s); !maps.Equal(got, want) {
		t.Errorf("primaries after round trip = %+v, want %+v", got, want)
	}
	if r.Seq != s.Seq || len(r.Channels) != len(s.Channels) || r.Epoch != 5 {
		t.Errorf("seq %d, %d channels, epoch %d; want %d, %d, 5", r.Seq, len(r.Channels), r.Epoch, s.Seq, len(s.Channels))
	}
	for id, c := range s.Channels {
		rc := r.Channels[id]
		if rc == nil || rc.Seq != c.Seq || rc.TargetID != c.TargetID || rc.NodeID != c.NodeID || !rc.RegisteredAt.Equal(c.RegisteredAt) {
			t.Errorf("channel %s = %+v, want %+v", id, rc, c)
		}
	}

	// Life goes on after the restore.
	evs, err := r.Apply(reg("c5", "t2", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []state.Event{registered("t2", "c5", "n1"), elected("t2", "c5", "n1", 6)}; !slices.Equal(evs, want) {
		t.Errorf("events after restore = %+v, want %+v", evs, want)
	}
	if c := r.Channels["c5"]; c.Seq != s.Seq+1 {
		t.Errorf("new channel seq = %d, want %d", c.Seq, s.Seq+1)
	}
	evs, err = r.Apply(unreg("c2"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []state.Event{unregistered("t1", "c2", "n2"), evicted("t1", 7)}; !slices.Equal(evs, want) {
		t.Errorf("events of t1's last channel leaving = %+v, want %+v", evs, want)
	}
	if id, epoch := r.PrimaryOf("t1"); id != "" || epoch != 0 {
		t.Errorf("t1 after its last channel left = %q@%d, want no entry", id, epoch)
	}

	// An empty snapshot decodes to a usable state.
	e, err := state.Unmarshal([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(reg("c1", "t1", "n1")); err != nil {
		t.Errorf("Apply on a state from {} = %v", err)
	}
	if _, err := state.Unmarshal([]byte(`{`)); err == nil {
		t.Errorf("Unmarshal of garbage = nil error")
	}
}

// A target that leaves (and loses its Primaries entry) and comes back gets a
// higher epoch than it ever had, also when a snapshot restore happened while
// it was away.
func TestTargetComesBackWithHigherEpoch(t *testing.T) {
	t.Parallel()
	s := applyAll(t, reg("c1", "t1", "n1"), reg("c2", "t1", "n1"), setPrimary("t1", "c2"), reg("x", "t2", "n1"))
	_, high := s.PrimaryOf("t1")
	evs, err := s.Apply(removeNode("n1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Kind == state.PrimaryEvicted && e.TargetID == "t1" {
			high = max(high, e.Epoch)
		}
	}
	if _, ok := s.Primaries["t1"]; ok || len(s.Primaries) != 0 {
		t.Fatalf("primaries after every channel left = %+v, want none (no identity kept for dead targets)", primaries(s))
	}
	for round := range 3 {
		if round > 0 {
			s = restored(t, s)
		}
		id := fmt.Sprint("back", round)
		if _, err := s.Apply(reg(id, "t1", "n2")); err != nil {
			t.Fatal(err)
		}
		cur, epoch := s.PrimaryOf("t1")
		if cur != id || epoch <= high {
			t.Fatalf("round %d: t1 came back with %q@%d, want %s above %d", round, cur, epoch, id, high)
		}
		evs, err := s.Apply(unreg(id))
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[1].Kind != state.PrimaryEvicted || evs[1].Epoch <= epoch {
			t.Fatalf("round %d: leaving again: events %+v, want an eviction above %d", round, evs, epoch)
		}
		high = evs[1].Epoch
	}
}

// A snapshot written before the global epoch counter decodes: the counter
// starts above every epoch in it, and the entries of targets without
// channels are dropped.
func TestUnmarshalOldSnapshot(t *testing.T) {
	t.Parallel()
	old := `{"channels":{"c1":{"id":"c1","targetId":"t1","nodeId":"n1","active":true,"registeredAt":"2025-01-01T00:00:00Z","seq":4}},` +
		`"primaries":{"t1":{"channelId":"c1","epoch":3},"gone":{"epoch":9},"gone2":{"epoch":2}},"seq":4}`
	s, err := state.Unmarshal([]byte(old))
	if err != nil {
		t.Fatalf("Unmarshal() = %v", err)
	}
	if s.Epoch != 9 {
		t.Errorf("Epoch = %d, want 9 (the highest of the snapshot)", s.Epoch)
	}
	if want := map[string]state.Primary{"t1": {ChannelID: "c1", Epoch: 3}}; !maps.Equal(primaries(s), want) {
		t.Errorf("primaries = %+v, want %+v", primaries(s), want)
	}
	if got := s.TargetChannels("t1"); len(got) != 1 || got[0] != s.Channels["c1"] {
		t.Errorf("TargetChannels(t1) = %v, want c1 (indexes rebuilt)", got)
	}
	evs, err := s.Apply(reg("c2", "gone", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []state.Event{registered("gone", "c2", "n1"), elected("gone", "c2", "n1", 10)}; !slices.Equal(evs, want) {
		t.Errorf("events = %+v, want %+v", evs, want)
	}
}

// A snapshot whose primaries are not registered active channels of their
// targets (an operator's restore may say anything) is restored with those
// targets elected again, in target order, each with the next epoch: every
// node restoring the same bytes agrees, and a later restore of its Marshal
// changes nothing.
func TestUnmarshalReelectsInvalidPrimaries(t *testing.T) {
	t.Parallel()
	snap := `{"channels":{` +
		`"a1":{"targetId":"ta","nodeId":"n1","active":true,"seq":1},` +
		`"b1":{"targetId":"tb","nodeId":"n1","seq":2},"b2":{"targetId":"tb","nodeId":"n2","active":true,"seq":3},` +
		`"c1":{"targetId":"tc","nodeId":"n1","seq":4},` +
		`"d1":{"targetId":"td","nodeId":"n1","active":true,"seq":5}},` +
		`"primaries":{"ta":{"channelId":"missing","epoch":4},"tb":{"channelId":"b1","epoch":5},` +
		`"tc":{"channelId":"c1","epoch":6},"td":{"channelId":"a1","epoch":2}},"epoch":7,"seq":5}`
	s, err := state.Unmarshal([]byte(snap))
	if err != nil {
		t.Fatalf("Unmarshal() = %v", err)
	}
	// ta: gone → a1; tb: inactive b1 → b2; tc: its only channel inactive →
	// none; td: another target's channel → d1. Epochs 8, 9, 10, 11.
	want := map[string]state.Primary{"ta": {ChannelID: "a1", Epoch: 8}, "tb": {ChannelID: "b2", Epoch: 9},
		"tc": {Epoch: 10}, "td": {ChannelID: "d1", Epoch: 11}}
	if got := primaries(s); !maps.Equal(got, want) {
		t.Errorf("primaries = %+v, want %+v", got, want)
	}
	if s.Epoch != 11 || s.PrimaryCount() != 3 {
		t.Errorf("Epoch = %d, PrimaryCount() = %d; want 11 and 3", s.Epoch, s.PrimaryCount())
	}
	again := restored(t, s)
	if got := primaries(again); !maps.Equal(got, want) || again.Epoch != 11 {
		t.Errorf("restored again: primaries = %+v, epoch %d; want %+v, 11", got, again.Epoch, want)
	}
}

// Memory.Apply applies every op, joins the errors, and notifies subscribers
// in order.
func TestMemoryApplyAndSubscribe(t *testing.T) {
	m := state.NewMemory()
	var got [][]state.Event
	cancel := m.Subscribe(func(evs []state.Event) { got = append(got, evs) })
	err := state.Err(m.Apply(t.Context(), reg("c1", "t1", "n1"), reg("c1", "t1", "n1"), reg("c2", "t1", "n1")))
	if !errors.Is(err, state.ErrExists) {
		t.Errorf("Apply() = %v, want ErrExists for the duplicate", err)
	}
	m.View(func(s *state.State) {
		if len(s.Channels) != 2 {
			t.Errorf("%d channels, want 2 (the failed op does not stop the others)", len(s.Channels))
		}
	})
	want := []state.Event{registered("t1", "c1", "n1"), elected("t1", "c1", "n1", 1), registered("t1", "c2", "n1")}
	if len(got) != 1 || !slices.Equal(got[0], want) {
		t.Errorf("subscriber got %+v, want one batch %+v", got, want)
	}
	cancel()
	if err := state.Err(m.Apply(t.Context(), unreg("c1"))); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Errorf("subscriber called after cancel")
	}
}

// RemoveNodeChannels with UpToSeq spares the channels the node registered
// after the leader read the state: a node that came back keeps its new
// channels.
func TestRemoveNodeChannelsUpToSeq(t *testing.T) {
	t.Parallel()
	s := applyAll(t, reg("old1", "t1", "n1"), reg("old2", "t2", "n1"), reg("other", "t1", "n2"))
	upTo := s.Seq
	if _, err := s.Apply(reg("new1", "t1", "n1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(state.Op{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: "n1", UpToSeq: upTo}}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, id := range []string{"old1", "old2", "other", "new1"} {
		if _, ok := s.Channels[id]; ok {
			ids = append(ids, id)
		}
	}
	if got := strings.Join(ids, " "); got != "other new1" {
		t.Errorf("channels left = %s, want other new1", got)
	}
	if p, _ := s.PrimaryOf("t1"); p != "other" {
		t.Errorf("primary of t1 = %q, want other (the oldest left)", p)
	}
}
