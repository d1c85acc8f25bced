package state_test

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/state"
)

// stateCmp compares States by content: the batch table by its batches, the
// indexes by what they index (their Equal method).
var stateCmp = gocmp.Options{
	gocmp.AllowUnexported(state.State{}),
	gocmp.Transformer("batches", func(t *batch.Table) []batch.Batch { return t.List(batch.Filter{}) }),
}

// opSource turns a stream of bytes into registry ops over small pools of
// ids, so that random or fuzzed input hits the same channels, targets, nodes
// and connectors again and again.
type opSource struct {
	b []byte
}

func (o *opSource) next(n int) int {
	if len(o.b) == 0 {
		return 0
	}
	v := int(o.b[0]) % n
	o.b = o.b[1:]
	return v
}

// op returns the next op, or restore true for a snapshot-and-restore step.
func (o *opSource) op() (op state.Op, restore bool) {
	id := fmt.Sprint("c", o.next(40))
	target := fmt.Sprint("t", o.next(6))
	node := fmt.Sprint("n", o.next(4))
	switch r := o.next(100); {
	case r < 45:
		op = reg(id, target, node)
		op.Register.Channel.ConnectorID = fmt.Sprint("k", o.next(3))
		op.Register.Channel.Active = o.next(10) != 0
		op.Register.TakeOver = o.next(4) == 0
	case r < 80:
		op = unreg(id)
	case r < 86:
		op = removeNode(node)
	case r < 94:
		op = setPrimary(target, id)
	case r < 97:
		op = setPrimary(target, "")
	default:
		return state.Op{}, true
	}
	return op, false
}

// checkReplica verifies the indexes of r's state against a rebuild and
// against naive scans of the channels, and that a Marshal→Unmarshal round
// trip gives an equal state.
func checkReplica(t *testing.T, r *state.Replica) {
	t.Helper()
	r.View(func(s *state.State) {
		if err := state.CheckIndex(s); err != nil {
			t.Fatalf("indexes: %v", err)
		}
		checkAccessors(t, s)
		u := restored(t, s)
		if d := gocmp.Diff(s, u, stateCmp); d != "" {
			t.Fatalf("Marshal→Unmarshal changed the state (-before +after):\n%s", d)
		}
	})
}

// checkAccessors compares the indexed readers with scans of s.Channels.
func checkAccessors(t *testing.T, s *state.State) {
	t.Helper()
	all := slices.SortedFunc(maps.Values(s.Channels), func(a, b *state.Channel) int { return cmp.Compare(a.Seq, b.Seq) })
	filter := func(keep func(*state.Channel) bool) []*state.Channel {
		var out []*state.Channel
		for _, c := range all {
			if keep(c) {
				out = append(out, c)
			}
		}
		return out
	}
	targets := map[string]bool{}
	for _, c := range all {
		targets[c.TargetID] = true
	}
	if got, want := s.Targets(), slices.Sorted(maps.Keys(targets)); !slices.Equal(got, want) {
		t.Fatalf("Targets() = %v, want %v", got, want)
	}
	// Pages of every size, from every cursor (known or not), are the
	// matching slices of the sorted ids.
	sorted := slices.Sorted(maps.Keys(targets))
	for limit := range 4 {
		for _, after := range append([]string{"", "t", "t2x", "u"}, sorted...) {
			from, _ := slices.BinarySearch(sorted, after)
			if from < len(sorted) && sorted[from] == after {
				from++
			}
			want := sorted[from:min(len(sorted), from+limit)]
			if got := s.TargetsAfter(after, limit); !slices.Equal(got, want) && (len(got) > 0 || len(want) > 0) {
				t.Fatalf("TargetsAfter(%q, %d) = %v, want %v", after, limit, got, want)
			}
		}
	}
	if s.TargetCount() != len(targets) || s.ChannelCount() != len(all) {
		t.Fatalf("TargetCount() %d, ChannelCount() %d; want %d, %d", s.TargetCount(), s.ChannelCount(), len(targets), len(all))
	}
	for i := range 6 {
		target := fmt.Sprint("t", i)
		if got, want := s.TargetChannels(target), filter(func(c *state.Channel) bool { return c.TargetID == target }); !slices.Equal(got, want) {
			t.Fatalf("TargetChannels(%s) = %v, want %v", target, got, want)
		}
		for k := range 3 {
			conn := fmt.Sprint("k", k)
			want := filter(func(c *state.Channel) bool { return c.TargetID == target && c.ConnectorID == conn })
			if got := s.ConnectorChannels(target, conn); !slices.Equal(got, want) {
				t.Fatalf("ConnectorChannels(%s, %s) = %v, want %v", target, conn, got, want)
			}
		}
		if _, ok := s.Primaries[target]; ok && !targets[target] {
			t.Fatalf("target %s has a Primaries entry but no channels", target)
		}
	}
	for i := range 4 {
		node := fmt.Sprint("n", i)
		if got, want := s.NodeChannels(node), filter(func(c *state.Channel) bool { return c.NodeID == node }); !slices.Equal(got, want) {
			t.Fatalf("NodeChannels(%s) = %v, want %v", node, got, want)
		}
	}
}

// runReplica applies the ops of data one at a time to a Replica, restoring
// it from its own snapshot now and then, and checks it after every step.
func runReplica(t *testing.T, data []byte) {
	r := state.NewReplica()
	src := &opSource{b: data}
	for len(src.b) > 0 {
		op, restore := src.op()
		if restore {
			b, err := r.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			s, err := state.Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			r.Restore(s)
		} else {
			r.Apply([]state.Op{op})
		}
		checkReplica(t, r)
	}
}

// Property: over random op sequences, after every step the indexes equal
// indexes rebuilt from scratch (and the naive scans), and a snapshot round
// trip gives an equal state. Seeded, so a failure is reproducible.
func TestReplicaIndexesRandomOps(t *testing.T) {
	t.Parallel()
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 7))
			data := make([]byte, 6*500)
			for i := range data {
				data[i] = byte(rng.IntN(256))
			}
			runReplica(t, data)
		})
	}
}

// FuzzReplicaIndexes is TestReplicaIndexesRandomOps driven by the fuzzer.
func FuzzReplicaIndexes(f *testing.F) {
	f.Add([]byte{1, 1, 1, 0, 0, 5, 1, 1, 1, 50, 1, 1, 1, 0})
	f.Add([]byte{3, 2, 1, 10, 2, 1, 4, 2, 1, 10, 0, 1, 0, 3, 2, 1, 84, 0, 0, 0, 99})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 6*300 {
			return
		}
		runReplica(t, data)
	})
}
