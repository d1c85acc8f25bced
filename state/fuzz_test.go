package state_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/exchangekit/exchange/state"
)

// FuzzApply decodes arbitrary bytes as a sequence of ops, the way raft log
// entries are decoded, and applies them: Apply must never panic, and after
// every op a target has at most one primary, a registered active channel of
// its own, epochs never decrease (nor pass the State's counter), and the
// indexes are the ones a rebuild makes; the state it reaches restores from
// its snapshot unchanged.
func FuzzApply(f *testing.F) {
	f.Add([]byte(`[{"register":{"channel":{"id":"a","targetId":"t","nodeId":"n","active":true}}},` +
		`{"register":{"channel":{"id":"b","targetId":"t","nodeId":"m","active":true}}},` +
		`{"unregister":{"channelId":"a"}},{"removeNodeChannels":{"nodeId":"m"}}]`))
	f.Add([]byte(`[{"setPrimary":{"targetId":"t","channelId":"zz"}},{}]`))
	f.Add([]byte(`[{"register":{"channel":{"id":"","targetId":""}}}]`))
	f.Add([]byte(`[{"register":{"channel":{"id":"b","targetId":"t","connectorId":"gw","nodeId":"n","active":true,` +
		`"instance":"i","attempt":2},"takeOver":true}},` +
		`{"register":{"channel":{"id":"a","targetId":"t","connectorId":"gw","nodeId":"n","active":true,` +
		`"instance":"i","attempt":1},"takeOver":true}},` +
		`{"register":{"channel":{"id":"c","targetId":"t","connectorId":"gw","nodeId":"n","active":true,` +
		`"instance":"j","attempt":18446744073709551615},"takeOver":true}}]`))
	scenario, err := json.Marshal(state.BatchScenario(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(scenario) // batches: create, attempts, results, reset, delete
	f.Fuzz(func(t *testing.T, data []byte) {
		var ops []state.Op
		if json.Unmarshal(data, &ops) != nil {
			return
		}
		s := state.NewState()
		epochs := map[string]uint64{}
		for _, op := range ops {
			_, _ = s.Apply(op)
			if err := state.CheckIndex(s); err != nil {
				t.Fatalf("after %+v: %v", op, err)
			}
			for target, p := range s.Primaries {
				if p.Epoch > s.Epoch {
					t.Fatalf("epoch %d of %s above the counter %d", p.Epoch, target, s.Epoch)
				}
				if p.Epoch < epochs[target] {
					t.Fatalf("epoch of %s went back from %d to %d", target, epochs[target], p.Epoch)
				}
				epochs[target] = p.Epoch
				if p.ChannelID == "" {
					continue
				}
				c, ok := s.Channels[p.ChannelID]
				if !ok || c.TargetID != target || !c.Active {
					t.Fatalf("primary %s of %s is not a registered active channel of it", p.ChannelID, target)
				}
			}
		}
		b, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		r, err := state.Unmarshal(b)
		if err != nil {
			t.Fatalf("snapshot of a reachable state does not restore: %v", err)
		}
		again, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, again) {
			t.Fatalf("a reachable state changed in a snapshot round trip:\nbefore %s\nafter  %s", b, again)
		}
	})
}

// FuzzUnmarshal decodes arbitrary bytes as a snapshot, the way a node
// restores one: Unmarshal never panics, and whatever it accepts has the
// indexes a rebuild makes, no primary epoch above the counter, every primary
// a registered active channel of its target, and survives
// a round trip: Marshal, Unmarshal and Marshal again write the same bytes.
func FuzzUnmarshal(f *testing.F) {
	s := state.NewState()
	for _, op := range []state.Op{
		{Register: &state.RegisterChannel{Channel: state.Channel{ID: "a", TargetID: "t", NodeID: "n", Active: true, Metadata: map[string]string{"k": "v"}}}},
		{Register: &state.RegisterChannel{Channel: state.Channel{ID: "b", TargetID: "t", NodeID: "m", Active: true}}},
		{Register: &state.RegisterChannel{Channel: state.Channel{ID: "c", TargetID: "u", NodeID: "m"}}},
	} {
		if _, err := s.Apply(op); err != nil {
			f.Fatal(err)
		}
	}
	b, err := s.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"channels":{"x":{"targetId":"t","seq":7}},"primaries":{"t":{"channelId":"gone","epoch":3},"none":{"epoch":9}},"seq":1}`))
	f.Add([]byte(`{"channels":{"x":null},"primaries":{"t":null},"batches":null}`))
	f.Add([]byte(`{"channels":{"x":{"id":"y","targetId":"t","active":true}},"primaries":{"t":{"channelId":"x","epoch":18446744073709551615}}}`))
	f.Add([]byte(`{"batches":{"seq":1,"batches":[{"seq":1,"batch":{"id":"b1","targetId":"t","status":"PENDING"}}]}}`))
	f.Add([]byte(`{"seq":1e30}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := state.Unmarshal(data)
		if err != nil {
			return
		}
		if err := state.CheckIndex(s); err != nil {
			t.Fatalf("Unmarshal() built bad indexes: %v", err)
		}
		for target, p := range s.Primaries {
			if p.Epoch > s.Epoch {
				t.Fatalf("epoch %d of %s above the counter %d", p.Epoch, target, s.Epoch)
			}
			if c, ok := s.Channels[p.ChannelID]; p.ChannelID != "" && (!ok || c.TargetID != target || !c.Active) {
				t.Fatalf("restored primary %s of %s is not a registered active channel of it", p.ChannelID, target)
			}
		}
		first, err := s.Marshal()
		if err != nil {
			t.Fatalf("Marshal() of an accepted snapshot = %v", err)
		}
		again, err := state.Unmarshal(first)
		if err != nil {
			t.Fatalf("Unmarshal(Marshal()) = %v\n%s", err, first)
		}
		second, err := again.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("state changed in a round trip:\nfirst  %s\nsecond %s", first, second)
		}
	})
}
