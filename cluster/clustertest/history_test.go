package clustertest_test

import (
	"fmt"
	"strings"
	"testing"
)

// The history of a run, and the checker of the primary invariants over it.
//
// A replica observation is what one node's replica said about one target at
// one moment: its primary channel ("" for none) and the target's epoch. A
// replica is one incarnation of a node (a restarted node starts a new
// replica: it replays the log, so it may show an older state for a while).
// A connector call is one OnPrimary callback of one connector.
//
// The invariants:
//  1. one primary per (target, epoch): no two replicas, and no two moments
//     of one replica, name different channels primary of a target at the
//     same epoch;
//  2. per replica and target, the epoch never goes back, and a change of
//     primary comes with a strictly higher epoch;
//  3. a connector never acts as primary with an epoch lower than one it
//     already saw;
//  4. no two connectors are told primary of a target at the same epoch.
//
// A hand-written checker is enough here: these invariants are properties of
// each observation against the ones before it, not a linearizability
// question over concurrent operations, so porcupine would add a dependency
// and a model without checking more.

// obs is one replica observation.
type obs struct {
	Replica string
	Target  string
	Channel string
	Epoch   uint64
}

// call is one OnPrimary callback of a connector.
type call struct {
	Connector string
	Target    string
	Primary   bool
	Epoch     uint64
}

// history is what a run observed, in the order it observed it (per replica
// and per connector; the order across them does not matter to the checker).
type history struct {
	Obs   []obs
	Calls []call
}

// check returns the violations of the invariants, at most max of them.
func (h *history) check(max int) []string {
	var bad []string
	add := func(format string, args ...any) {
		if len(bad) < max {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	type te struct {
		target string
		epoch  uint64
	}
	owner := map[te]string{} // (target, epoch) → the primary channel
	type rt struct{ replica, target string }
	last := map[rt]obs{}
	for i, o := range h.Obs {
		if o.Channel != "" {
			k := te{o.Target, o.Epoch}
			if ch, ok := owner[k]; ok && ch != o.Channel {
				add("obs %d: target %s epoch %d: %s names %s primary, %s was named before", i, o.Target, o.Epoch, o.Replica, o.Channel, ch)
			} else if !ok {
				owner[k] = o.Channel
			}
		}
		k := rt{o.Replica, o.Target}
		if p, ok := last[k]; ok {
			switch {
			case o.Epoch < p.Epoch:
				add("obs %d: %s target %s: epoch went back from %d to %d", i, o.Replica, o.Target, p.Epoch, o.Epoch)
			case o.Channel != p.Channel && o.Epoch == p.Epoch:
				add("obs %d: %s target %s: primary changed from %q to %q at the same epoch %d", i, o.Replica, o.Target, p.Channel, o.Channel, o.Epoch)
			}
		}
		last[k] = o
	}
	seen := map[string]uint64{} // connector → highest epoch seen
	told := map[te]string{}     // (target, epoch) → the connector told primary
	for i, c := range h.Calls {
		if c.Primary {
			if c.Epoch < seen[c.Connector] {
				add("call %d: connector %s acts as primary of %s at epoch %d after seeing epoch %d", i, c.Connector, c.Target, c.Epoch, seen[c.Connector])
			}
			k := te{c.Target, c.Epoch}
			if o, ok := told[k]; ok && o != c.Connector {
				add("call %d: connectors %s and %s both told primary of %s at epoch %d", i, o, c.Connector, c.Target, c.Epoch)
			} else if !ok {
				told[k] = c.Connector
			}
		}
		seen[c.Connector] = max64(seen[c.Connector], c.Epoch)
	}
	return bad
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// TestHistoryChecker: the checker finds each kind of violation, and passes
// a good history.
func TestHistoryChecker(t *testing.T) {
	good := history{
		Obs: []obs{
			{"n1", "t", "", 0}, {"n1", "t", "a", 1}, {"n2", "t", "a", 1}, {"n1", "t", "b", 3},
			{"n2", "t", "b", 3}, {"n2#2", "t", "a", 1}, {"n2#2", "t", "b", 3},
		},
		Calls: []call{{"c1", "t", true, 1}, {"c1", "t", false, 3}, {"c2", "t", true, 3}, {"c1", "t", true, 5}},
	}
	if bad := good.check(10); len(bad) != 0 {
		t.Fatalf("good history: %v", bad)
	}
	for _, tc := range []struct {
		name string
		h    history
		want string
	}{
		{"two primaries at one epoch", history{Obs: []obs{{"n1", "t", "a", 1}, {"n2", "t", "b", 1}}}, "was named before"},
		{"epoch back", history{Obs: []obs{{"n1", "t", "a", 2}, {"n1", "t", "a", 1}}}, "went back"},
		{"change without a new epoch", history{Obs: []obs{{"n1", "t", "a", 2}, {"n1", "t", "", 2}}}, "same epoch"},
		{"stale primary", history{Calls: []call{{"c1", "t", false, 4}, {"c1", "t", true, 3}}}, "after seeing epoch 4"},
		{"two connectors", history{Calls: []call{{"c1", "t", true, 4}, {"c2", "t", true, 4}}}, "both told primary"},
	} {
		bad := tc.h.check(10)
		if len(bad) != 1 || !strings.Contains(bad[0], tc.want) {
			t.Errorf("%s: check = %q, want one violation containing %q", tc.name, bad, tc.want)
		}
	}
}
