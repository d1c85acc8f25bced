package batch

import (
	"fmt"
	"slices"
)

// SetJitter replaces the runner's jitter source (tests make backoff exact).
// Call it before Run.
func SetJitter(r *Runner, f func() float64) { r.jitter = f }

// CheckTable verifies t's indexes against a Table rebuilt from its batches,
// and the invariants the runner relies on.
func CheckTable(t *Table) error {
	n := Table{seq: t.seq}
	n.init()
	var last uint64
	for _, e := range t.all() {
		if e.seq <= last || e.seq > t.seq {
			return fmt.Errorf("batch %s: seq %d out of order (last %d, table %d)", e.b.ID, e.seq, last, t.seq)
		}
		last = e.seq
		n.insert(&entry{seq: e.seq, b: e.b})
	}
	ids := func(es []*entry) []string {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.b.ID
		}
		return out
	}
	same := func(name string, a, b map[string][]*entry) error {
		if len(a) != len(b) {
			return fmt.Errorf("%s: %d keys, want %d", name, len(a), len(b))
		}
		for k, v := range b {
			if !slices.Equal(ids(a[k]), ids(v)) {
				return fmt.Errorf("%s[%q] = %v, want %v", name, k, ids(a[k]), ids(v))
			}
		}
		return nil
	}
	if err := same("byTarget", t.byTarget, n.byTarget); err != nil {
		return err
	}
	if err := same("open", t.open, n.open); err != nil {
		return err
	}
	if err := same("byKey", t.byKey, n.byKey); err != nil {
		return err
	}
	if !slices.Equal(ids(t.ended), ids(n.ended)) {
		return fmt.Errorf("ended = %v, want %v", ids(t.ended), ids(n.ended))
	}
	if len(t.byStatus) != len(n.byStatus) {
		return fmt.Errorf("byStatus: %d statuses, want %d", len(t.byStatus), len(n.byStatus))
	}
	for s, m := range n.byStatus {
		if len(t.byStatus[s]) != len(m) {
			return fmt.Errorf("byStatus[%s]: %d batches, want %d", s, len(t.byStatus[s]), len(m))
		}
		for id := range m {
			if t.byStatus[s][id] != t.byID[id] {
				return fmt.Errorf("byStatus[%s] misses %s", s, id)
			}
		}
	}
	for target, es := range t.open {
		for _, e := range es {
			if e.b.Status.Terminal() || e.b.TargetID != target || t.byID[e.b.ID] != e {
				return fmt.Errorf("open[%q] holds %s (%s)", target, e.b.ID, e.b.Status)
			}
		}
		for _, e := range es[1:] {
			if e.b.Status == StatusInProgress {
				return fmt.Errorf("target %q: %s is in progress but not the oldest open batch", target, e.b.ID)
			}
		}
	}
	return nil
}
