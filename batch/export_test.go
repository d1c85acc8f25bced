package batch

import (
	"fmt"
	"slices"

	"github.com/google/btree"
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
	inOrder := func(tr *btree.BTreeG[*entry]) []string {
		var out []string
		if tr != nil {
			tr.Ascend(func(e *entry) bool { out = append(out, e.b.ID); return true })
		}
		return out
	}
	for s, m := range n.byStatus {
		if got, want := inOrder(t.byStatus[s]), inOrder(m); !slices.Equal(got, want) {
			return fmt.Errorf("byStatus[%s] = %v, want %v", s, got, want)
		}
		var bad error
		t.byStatus[s].Ascend(func(e *entry) bool {
			if t.byID[e.b.ID] != e || e.b.Status != s {
				bad = fmt.Errorf("byStatus[%s] holds %s (%s), not the table's", s, e.b.ID, e.b.Status)
			}
			return bad == nil
		})
		if bad != nil {
			return bad
		}
	}
	if got, want := inOrder(t.listing), inOrder(n.listing); !slices.Equal(got, want) {
		return fmt.Errorf("listing = %v, want %v", got, want)
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
