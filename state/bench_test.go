package state_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/exchangekit/exchange/state"
)

// The registry benchmarks run at 1k, 10k and 100k channels: ten channels per
// target, spread over three nodes (so one node holds a third of them), each
// with one of five connector ids. Register and unregister must cost the same
// at every size; RemoveNodeChannels grows with the node's channels only.

var benchSizes = []int{1_000, 10_000, 100_000}

const benchPerTarget = 10

func benchChannel(i int) state.Channel {
	return state.Channel{
		ID:           fmt.Sprintf("ch-%07d", i),
		TargetID:     fmt.Sprintf("target-%06d", i/benchPerTarget),
		ConnectorID:  fmt.Sprint("conn-", i%5),
		NodeID:       fmt.Sprint("node-", i%3),
		Active:       true,
		RegisteredAt: time.Unix(1, 0),
	}
}

func benchRegister(b *testing.B, s *state.State, c state.Channel) {
	if _, err := s.Apply(state.Op{Register: &state.RegisterChannel{Channel: c}}); err != nil {
		b.Fatal(err)
	}
}

func benchUnregister(b *testing.B, s *state.State, id string) {
	if _, err := s.Apply(state.Op{Unregister: &state.UnregisterChannel{ChannelID: id}}); err != nil {
		b.Fatal(err)
	}
}

func benchState(b *testing.B, n int) *state.State {
	b.Helper()
	s := state.NewState()
	for i := range n {
		benchRegister(b, s, benchChannel(i))
	}
	return s
}

func benchName(n int) string { return fmt.Sprintf("channels=%dk", n/1000) }

// extras returns k channels to register on top of the first n, made before
// the timer runs. With newTargets false each joins an existing target (which
// keeps its primary), as a reconnecting connector's channel does; with
// newTargets true each is the first channel of a target of its own (and is
// elected).
func extras(n, k int, newTargets bool) []state.Channel {
	out := make([]state.Channel, k)
	for i := range out {
		out[i] = benchChannel(n + i)
		if newTargets {
			out[i].TargetID = fmt.Sprint("new-target-", i)
		} else {
			out[i].TargetID = benchChannel(i * benchPerTarget % n).TargetID
		}
	}
	return out
}

// chunk is the number of ops timed between two pauses of the timer (which
// are costly): small against n, so the registry stays about n channels.
func chunk(n int) int { return min(1000, n/10) }

// BenchmarkRegister registers one more channel in a registry of n: into a
// target that has a primary already, or as the first channel of a new target
// (then Elect runs).
func BenchmarkRegister(b *testing.B) {
	for _, kind := range []string{"existing-target", "new-target"} {
		for _, n := range benchSizes {
			b.Run(kind+"/"+benchName(n), func(b *testing.B) {
				s := benchState(b, n)
				k := chunk(n)
				cs := extras(n, k, kind == "new-target")
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += k {
					m := min(k, b.N-done)
					for _, c := range cs[:m] {
						benchRegister(b, s, c)
					}
					b.StopTimer()
					for _, c := range cs[:m] {
						benchUnregister(b, s, c.ID)
					}
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkUnregister unregisters one channel from a registry of n: one that
// is not its target's primary, or the primary of a target with a second
// channel (then Elect runs and elects that one).
func BenchmarkUnregister(b *testing.B) {
	for _, kind := range []string{"not-primary", "primary"} {
		for _, n := range benchSizes {
			b.Run(kind+"/"+benchName(n), func(b *testing.B) {
				s := benchState(b, n)
				k := chunk(n)
				primary := kind == "primary"
				cs := extras(n, k, primary)
				seconds := extras(n+k, k, primary)
				for i := range seconds {
					seconds[i].TargetID = cs[i].TargetID
				}
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += k {
					m := min(k, b.N-done)
					b.StopTimer()
					for i := range m {
						benchRegister(b, s, cs[i])
						if primary {
							benchRegister(b, s, seconds[i])
						}
					}
					b.StartTimer()
					for _, c := range cs[:m] {
						benchUnregister(b, s, c.ID)
					}
					if primary {
						b.StopTimer()
						for _, c := range seconds[:m] {
							benchUnregister(b, s, c.ID)
						}
						b.StartTimer()
					}
				}
			})
		}
	}
}

// BenchmarkRemoveNodeChannels removes the channels of a node holding a third
// of the registry (re-elections included); the timer is paused while they
// are registered again.
func BenchmarkRemoveNodeChannels(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			s := benchState(b, n)
			var again []state.Channel
			for i := 0; i < n; i += 3 {
				again = append(again, benchChannel(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				evs, err := s.Apply(state.Op{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: "node-0"}})
				if err != nil || len(evs) < n/3 {
					b.Fatalf("RemoveNodeChannels: %d events, %v", len(evs), err)
				}
				b.StopTimer()
				for _, c := range again {
					benchRegister(b, s, c)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkTargetChannels reads one target's ten channels.
func BenchmarkTargetChannels(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			s := benchState(b, n)
			targets := s.Targets()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if len(s.TargetChannels(targets[i%len(targets)])) != benchPerTarget {
					b.Fatal("wrong channel count")
				}
			}
		})
	}
}

// BenchmarkTargets lists the targets (a tenth of the channels), sorted.
func BenchmarkTargets(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			s := benchState(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if len(s.Targets()) != n/benchPerTarget {
					b.Fatal("wrong target count")
				}
			}
		})
	}
}

// BenchmarkTargetsPage reads a page of 1,000 target ids from the middle of
// the registry (GET /exchange/targets): its cost does not grow with the
// registry, unlike Targets'.
func BenchmarkTargetsPage(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			s := benchState(b, n)
			targets := s.Targets()
			after := targets[len(targets)/2]
			want := min(1000, len(targets)-len(targets)/2-1)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if len(s.TargetsAfter(after, 1000)) != want {
					b.Fatal("wrong page length")
				}
			}
		})
	}
}
