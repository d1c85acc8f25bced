package state_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/exchangekit/exchange/state"
)

// walkCounts counts what the O(1) counters report, by walking the registry.
func walkCounts(s *state.State) (channels, active, targets, primaries int) {
	seen := map[string]bool{}
	for _, c := range s.Channels {
		channels++
		if c.Active {
			active++
		}
		seen[c.TargetID] = true
	}
	for _, p := range s.Primaries {
		if p.ChannelID != "" {
			primaries++
		}
	}
	return channels, active, len(seen), primaries
}

func checkCounts(t *testing.T, s *state.State, after string) {
	t.Helper()
	ch, act, tg, pr := walkCounts(s)
	got := [4]int{s.ChannelCount(), s.ActiveChannelCount(), s.TargetCount(), s.PrimaryCount()}
	if want := [4]int{ch, act, tg, pr}; got != want {
		t.Fatalf("after %s: counts (channels, active, targets, primaries) = %v, a walk says %v", after, got, want)
	}
}

// TestCountsMatchAWalk is a property test: after every op of random
// sequences of registrations (active or not, with take-overs),
// unregistrations, forced primaries and node removals, and after a snapshot
// round trip, the counters equal a full walk of the registry.
func TestCountsMatchAWalk(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := state.NewState()
		for i := range 400 {
			var op state.Op
			target := fmt.Sprintf("t%d", rng.IntN(8))
			ch := fmt.Sprintf("c%d", rng.IntN(60))
			switch k := rng.IntN(10); {
			case k < 5:
				op.Register = &state.RegisterChannel{TakeOver: rng.IntN(2) == 0, Channel: state.Channel{
					ID: ch, TargetID: target, ConnectorID: fmt.Sprintf("k%d", rng.IntN(4)),
					NodeID: fmt.Sprintf("n%d", rng.IntN(3)), Active: rng.IntN(3) > 0, RegisteredAt: time.Unix(1, 0)}}
			case k < 8:
				op.Unregister = &state.UnregisterChannel{ChannelID: ch}
			case k < 9:
				if rng.IntN(2) == 0 {
					ch = ""
				}
				op.SetPrimary = &state.SetPrimary{TargetID: target, ChannelID: ch}
			default:
				op.RemoveNodeChannels = &state.RemoveNodeChannels{NodeID: fmt.Sprintf("n%d", rng.IntN(3))}
			}
			_, _ = s.Apply(op) // refused ops (ErrExists, ErrNotFound) must leave the counts right too
			checkCounts(t, s, fmt.Sprintf("seed %d op %d %+v", seed, i, op))
		}
		checkCounts(t, restored(t, s), fmt.Sprintf("seed %d: snapshot round trip", seed))
	}
}
