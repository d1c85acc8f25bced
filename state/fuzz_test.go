package state_test

import (
	"encoding/json"
	"testing"

	"github.com/exchangekit/exchange/state"
)

// FuzzApply decodes arbitrary bytes as a sequence of ops, the way raft log
// entries are decoded, and applies them: Apply must never panic, and after
// every op a target has at most one primary, a registered active channel of
// its own, epochs never decrease (nor pass the State's counter), and the
// indexes are the ones a rebuild makes.
func FuzzApply(f *testing.F) {
	f.Add([]byte(`[{"register":{"channel":{"id":"a","targetId":"t","nodeId":"n","active":true}}},` +
		`{"register":{"channel":{"id":"b","targetId":"t","nodeId":"m","active":true}}},` +
		`{"unregister":{"channelId":"a"}},{"removeNodeChannels":{"nodeId":"m"}}]`))
	f.Add([]byte(`[{"setPrimary":{"targetId":"t","channelId":"zz"}},{}]`))
	f.Add([]byte(`[{"register":{"channel":{"id":"","targetId":""}}}]`))
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
		if _, err := state.Unmarshal(b); err != nil {
			t.Fatalf("snapshot of a reachable state does not restore: %v", err)
		}
	})
}
