package clustertest

import (
	"sync/atomic"
	"testing"
)

type closeCounter struct{ n atomic.Int32 }

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

// Partition puts unlisted nodes in one group together, replaces any earlier
// partition, and closes the tracked connections that cross the new cut
// (only those); Heal reconnects everyone.
func TestNetworkPartition(t *testing.T) {
	nw := NewNetwork()
	ab, ac, cd := &closeCounter{}, &closeCounter{}, &closeCounter{}
	nw.track("a", "b", "", ab)
	untrack := nw.track("a", "c", "", ac)
	nw.track("c", "d", "", cd)

	check := func(step string, want map[[2]string]bool) {
		t.Helper()
		for pair, cut := range want {
			for _, p := range [][2]string{pair, {pair[1], pair[0]}} {
				if got := nw.Cut(p[0], p[1]); got != cut {
					t.Errorf("%s: Cut(%s, %s) = %v, want %v", step, p[0], p[1], got, cut)
				}
			}
		}
	}
	check("healed", map[[2]string]bool{{"a", "b"}: false, {"a", "c"}: false, {"c", "d"}: false})

	nw.Partition([]string{"a", "b"}, []string{"c"}) // d is in no group
	check("a,b | c | d", map[[2]string]bool{{"a", "b"}: false, {"a", "c"}: true, {"c", "d"}: true, {"a", "d"}: true, {"a", "a"}: false, {"a", ""}: false})
	if ab.n.Load() != 0 || ac.n.Load() != 1 || cd.n.Load() != 1 {
		t.Errorf("closed a→b %d, a→c %d, c→d %d times; want 0, 1, 1", ab.n.Load(), ac.n.Load(), cd.n.Load())
	}

	untrack()
	nw.Isolate("b") // replaces the partition: a, c, d together
	check("isolate b", map[[2]string]bool{{"a", "b"}: true, {"a", "c"}: false, {"c", "d"}: false, {"b", "d"}: true})
	if ab.n.Load() != 1 || ac.n.Load() != 1 {
		t.Errorf("closed a→b %d, a→c %d times; want 1, 1 (a→c no longer tracked)", ab.n.Load(), ac.n.Load())
	}

	nw.Heal()
	check("healed again", map[[2]string]bool{{"a", "b"}: false, {"b", "d"}: false})
}
