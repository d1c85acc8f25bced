package state_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/state"
)

// regConn registers an active channel of connector conn, taking over that
// connector's other channels of the target when takeOver is set.
func regConn(id, target, conn, node string, takeOver bool) state.Op {
	op := reg(id, target, node)
	op.Register.Channel.ConnectorID = conn
	op.Register.TakeOver = takeOver
	return op
}

func replaced(target, id, node, by string) state.Event {
	e := unregistered(target, id, node)
	e.ReplacedBy = by
	return e
}

// A registration with TakeOver replaces the target's channels of the same
// connector in one change: the replaced channels go, and a replaced primary's
// role passes to the new channel with the next epoch, with no event in
// between that leaves the target without a primary.
func TestRegisterTakeOver(t *testing.T) {
	tests := []struct {
		name      string
		setup     []state.Op
		op        state.Op
		want      []state.Event
		channels  []string // the target's channels after, oldest first
		primary   string
		epoch     uint64
		wantError error
	}{{
		name:     "the primary is taken over: the new channel inherits the role, next epoch",
		setup:    []state.Op{regConn("a", "t", "gw", "n1", true), regConn("b", "t", "other", "n1", true)},
		op:       regConn("c", "t", "gw", "n2", true),
		want:     []state.Event{replaced("t", "a", "n1", "c"), registered("t", "c", "n2"), elected("t", "c", "n2", 2)},
		channels: []string{"b", "c"},
		primary:  "c", epoch: 2,
	}, {
		name:     "a channel that is not primary is taken over: the primary stays",
		setup:    []state.Op{regConn("a", "t", "other", "n1", true), regConn("b", "t", "gw", "n1", true)},
		op:       regConn("c", "t", "gw", "n2", true),
		want:     []state.Event{replaced("t", "b", "n1", "c"), registered("t", "c", "n2")},
		channels: []string{"a", "c"},
		primary:  "a", epoch: 1,
	}, {
		name: "several stale channels of the connector go at once",
		setup: []state.Op{regConn("a", "t", "gw", "n1", false), regConn("b", "t", "gw", "n2", false),
			regConn("x", "t", "other", "n1", true)},
		op: regConn("c", "t", "gw", "n1", true),
		want: []state.Event{replaced("t", "a", "n1", "c"), replaced("t", "b", "n2", "c"),
			registered("t", "c", "n1"), elected("t", "c", "n1", 2)},
		channels: []string{"x", "c"},
		primary:  "c", epoch: 2,
	}, {
		name:     "the only channel is taken over",
		setup:    []state.Op{regConn("a", "t", "gw", "n1", true)},
		op:       regConn("c", "t", "gw", "n1", true),
		want:     []state.Event{replaced("t", "a", "n1", "c"), registered("t", "c", "n1"), elected("t", "c", "n1", 2)},
		channels: []string{"c"},
		primary:  "c", epoch: 2,
	}, {
		name:     "the same connector on another target is left alone",
		setup:    []state.Op{regConn("a", "t2", "gw", "n1", true)},
		op:       regConn("c", "t", "gw", "n1", true),
		want:     []state.Event{registered("t", "c", "n1"), elected("t", "c", "n1", 2)},
		channels: []string{"c"},
		primary:  "c", epoch: 2,
	}, {
		name:     "without TakeOver both stay",
		setup:    []state.Op{regConn("a", "t", "gw", "n1", false)},
		op:       regConn("c", "t", "gw", "n1", false),
		want:     []state.Event{registered("t", "c", "n1")},
		channels: []string{"a", "c"},
		primary:  "a", epoch: 1,
	}, {
		name:     "anonymous channels are never taken over",
		setup:    []state.Op{regConn("a", "t", "", "n1", true)},
		op:       regConn("c", "t", "", "n1", true),
		want:     []state.Event{registered("t", "c", "n1")},
		channels: []string{"a", "c"},
		primary:  "a", epoch: 1,
	}, {
		name:  "an inactive new channel does not inherit: the next active one is elected",
		setup: []state.Op{regConn("a", "t", "gw", "n1", true), regConn("b", "t", "other", "n1", true)},
		op: func() state.Op {
			op := regConn("c", "t", "gw", "n1", true)
			op.Register.Channel.Active = false
			return op
		}(),
		want:     []state.Event{replaced("t", "a", "n1", "c"), registered("t", "c", "n1"), elected("t", "b", "n1", 2)},
		channels: []string{"b", "c"},
		primary:  "b", epoch: 2,
	}, {
		name:     "a retried take-over changes nothing",
		setup:    []state.Op{regConn("a", "t", "gw", "n1", true), regConn("c", "t", "gw", "n1", true)},
		op:       regConn("c", "t", "gw", "n1", true),
		channels: []string{"c"},
		primary:  "c", epoch: 2,
		wantError: state.ErrExists,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := applyAll(t, tt.setup...)
			got, err := s.Apply(tt.op)
			if !errors.Is(err, tt.wantError) {
				t.Fatalf("Apply() error = %v, want %v", err, tt.wantError)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			var ids []string
			for _, c := range s.TargetChannels("t") {
				ids = append(ids, c.ID)
			}
			if diff := cmp.Diff(tt.channels, ids); diff != "" {
				t.Errorf("channels of t (-want +got):\n%s", diff)
			}
			if p, e := s.PrimaryOf("t"); p != tt.primary || e != tt.epoch {
				t.Errorf("PrimaryOf(t) = %s, %d; want %s, %d", p, e, tt.primary, tt.epoch)
			}
			if err := state.CheckIndex(s); err != nil {
				t.Error(err)
			}
			// Determinism: the same ops on another replica, or through a
			// snapshot, give the same state.
			again := applyAll(t, tt.setup...)
			_, _ = again.Apply(tt.op)
			b1, _ := s.Marshal()
			b2, _ := again.Marshal()
			if string(b1) != string(b2) {
				t.Errorf("replicas differ:\n%s\n%s", b1, b2)
			}
		})
	}
}

// A registration over the identity limits is refused, and changes nothing,
// whoever proposed it: the state does not trust the node that did.
func TestRegisterIdentityLimits(t *testing.T) {
	big := map[string]string{}
	for i := range 33 {
		big[strings.Repeat("k", 1+i)] = "v"
	}
	tests := []struct {
		name string
		edit func(c *state.Channel)
		want string
	}{
		{"connector id too long", func(c *state.Channel) { c.ConnectorID = strings.Repeat("x", 129) }, "connectorId is 129 bytes; the limit is 128"},
		{"target id with a newline", func(c *state.Channel) { c.TargetID = "t\nforged" }, "targetId holds the character U+000A"},
		{"target id with an escape", func(c *state.Channel) { c.TargetID = "t\x1b[31m" }, "targetId holds the character U+001B"},
		{"connector id with NUL", func(c *state.Channel) { c.ConnectorID = "gw\x00" }, "connectorId holds the character U+0000"},
		{"connector id not UTF-8", func(c *state.Channel) { c.ConnectorID = "gw\xff" }, "connectorId is not valid UTF-8"},
		{"connector id padded", func(c *state.Channel) { c.ConnectorID = " gw" }, "connectorId starts or ends with white space"},
		{"channel id with a bidi override", func(c *state.Channel) { c.ID = "c\u202e1" }, "channel id holds the character U+202E"},
		{"node id too long", func(c *state.Channel) { c.NodeID = strings.Repeat("n", 200) }, "nodeId is 200 bytes"},
		{"too many metadata entries", func(c *state.Channel) { c.Metadata = big }, "metadata has 33 entries; the limit is 32"},
		{"metadata value too long", func(c *state.Channel) { c.Metadata = map[string]string{"k": strings.Repeat("v", 513)} }, `metadata["k"] is 513 bytes; the limit is 512`},
		{"metadata key too long", func(c *state.Channel) { c.Metadata = map[string]string{strings.Repeat("k", 65): "v"} }, "is 65 bytes; the limit is 64"},
		{"metadata key empty", func(c *state.Channel) { c.Metadata = map[string]string{"": "v"} }, `metadata key "" is empty`},
		{"metadata value with a control character", func(c *state.Channel) { c.Metadata = map[string]string{"k": "a\tb"} }, `metadata["k"] holds the character U+0009`},
		{"metadata too large in all", func(c *state.Channel) {
			c.Metadata = map[string]string{}
			for i := range 20 {
				c.Metadata[string(rune('a'+i))] = strings.Repeat("v", 500)
			}
		}, "metadata is 10020 bytes; the limit is 8192"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := regConn("c1", "t", "gw", "n1", true)
			tt.edit(&op.Register.Channel)
			s := applyAll(t, regConn("c0", "t", "gw", "n1", true))
			evs, err := s.Apply(op)
			if !errors.Is(err, state.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply() = %v, want ErrInvalid saying %q", err, tt.want)
			}
			if len(evs) != 0 || s.ChannelCount() != 1 || s.Seq != 1 {
				t.Errorf("a refused registration changed the state: events %v, %d channels, seq %d", evs, s.ChannelCount(), s.Seq)
			}
		})
	}

	// At the limits, everything is accepted ('/' and non-ASCII included).
	op := regConn("c1", strings.Repeat("t", 128), "site/gw-é", "n1", true)
	md := map[string]string{}
	for i := range 16 {
		md[strings.Repeat(string(rune('a'+i)), 64)] = strings.Repeat("v", 448) // 16 × 512 = 8 KiB
	}
	op.Register.Channel.Metadata = md
	op.Register.Channel.RegisteredAt = time.Unix(2, 0)
	if _, err := state.NewState().Apply(op); err != nil {
		t.Fatalf("Apply() at the limits = %v, want nil", err)
	}
}

// regAttempt registers, with TakeOver, an active channel of connector gw
// for target t on node n1, from connection attempt attempt of instance inst
// ("" and 0: a connector that does not say).
func regAttempt(id, inst string, attempt uint64) state.Op {
	op := regConn(id, "t", "gw", "n1", true)
	op.Register.Channel.Instance = inst
	op.Register.Channel.Attempt = attempt
	return op
}

// The take-over rule with connection attempts (decision 0018, "stale
// attempts"): a registration from an earlier attempt of the same instance
// than a registered channel is refused and changes nothing; every other
// registration takes over as before.
func TestRegisterTakeOverAttempts(t *testing.T) {
	tests := []struct {
		name      string
		setup     []state.Op
		op        state.Op
		want      []state.Event
		channels  []string
		wantError error
	}{{
		name:     "same instance, later attempt: takes over",
		setup:    []state.Op{regAttempt("a", "i1", 1)},
		op:       regAttempt("b", "i1", 2),
		want:     []state.Event{replaced("t", "a", "n1", "b"), registered("t", "b", "n1"), elected("t", "b", "n1", 2)},
		channels: []string{"b"},
	}, {
		name:      "same instance, earlier attempt applied late: refused, nothing changes",
		setup:     []state.Op{regAttempt("b", "i1", 2)},
		op:        regAttempt("a", "i1", 1),
		channels:  []string{"b"},
		wantError: state.ErrSuperseded,
	}, {
		name:      "same instance, earlier attempt, among several channels: refused",
		setup:     []state.Op{regAttempt("x", "", 0), func() state.Op { op := regAttempt("b", "i1", 7); op.Register.TakeOver = false; return op }()},
		op:        regAttempt("a", "i1", 3),
		channels:  []string{"x", "b"},
		wantError: state.ErrSuperseded,
	}, {
		name:     "same instance, same attempt: takes over (the log's order decides)",
		setup:    []state.Op{regAttempt("a", "i1", 4)},
		op:       regAttempt("b", "i1", 4),
		want:     []state.Event{replaced("t", "a", "n1", "b"), registered("t", "b", "n1"), elected("t", "b", "n1", 2)},
		channels: []string{"b"},
	}, {
		name:     "another instance with a lower attempt: takes over (two processes with one id)",
		setup:    []state.Op{regAttempt("a", "i1", 9)},
		op:       regAttempt("b", "i2", 1),
		want:     []state.Event{replaced("t", "a", "n1", "b"), registered("t", "b", "n1"), elected("t", "b", "n1", 2)},
		channels: []string{"b"},
	}, {
		name:     "new channel without an instance: takes over (old connector)",
		setup:    []state.Op{regAttempt("a", "i1", 9)},
		op:       regAttempt("b", "", 0),
		want:     []state.Event{replaced("t", "a", "n1", "b"), registered("t", "b", "n1"), elected("t", "b", "n1", 2)},
		channels: []string{"b"},
	}, {
		name:     "old channel without an instance: taken over",
		setup:    []state.Op{regAttempt("a", "", 0)},
		op:       regAttempt("b", "i1", 1),
		want:     []state.Event{replaced("t", "a", "n1", "b"), registered("t", "b", "n1"), elected("t", "b", "n1", 2)},
		channels: []string{"b"},
	}, {
		name:  "without TakeOver attempts are not compared",
		setup: []state.Op{regAttempt("b", "i1", 2)},
		op: func() state.Op {
			op := regAttempt("a", "i1", 1)
			op.Register.TakeOver = false
			return op
		}(),
		want:     []state.Event{registered("t", "a", "n1")},
		channels: []string{"b", "a"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := applyAll(t, tt.setup...)
			before, _ := s.Marshal()
			got, err := s.Apply(tt.op)
			if !errors.Is(err, tt.wantError) {
				t.Fatalf("Apply() error = %v, want %v", err, tt.wantError)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			var ids []string
			for _, c := range s.TargetChannels("t") {
				ids = append(ids, c.ID)
			}
			if diff := cmp.Diff(tt.channels, ids); diff != "" {
				t.Errorf("channels of t (-want +got):\n%s", diff)
			}
			if err := state.CheckIndex(s); err != nil {
				t.Error(err)
			}
			if tt.wantError != nil {
				if after, _ := s.Marshal(); string(after) != string(before) {
					t.Errorf("a refused registration changed the state:\n%s\n%s", before, after)
				}
				if oe := state.NewOpError("register", err); oe.Code != state.CodeSuperseded || !errors.Is(oe, state.ErrSuperseded) {
					t.Errorf("NewOpError = %+v, want code %s matching ErrSuperseded", oe, state.CodeSuperseded)
				}
			}
		})
	}
}

// The instance id is bounded like the other ids; the attempt number is a
// plain uint64 and needs no bound.
func TestRegisterInstanceLimits(t *testing.T) {
	for _, inst := range []string{strings.Repeat("i", 129), "i\n1", "i\xff"} {
		s := applyAll(t)
		if _, err := s.Apply(regAttempt("a", inst, 1)); !errors.Is(err, state.ErrInvalid) || !strings.Contains(err.Error(), "instance") {
			t.Errorf("instance %q: Apply() = %v, want ErrInvalid naming the instance", inst, err)
		}
	}
}
