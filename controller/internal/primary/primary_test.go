package primary

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestPlan(t *testing.T) {
	t.Parallel()
	type step struct {
		at      time.Duration   // since t0
		want    map[string]Want // input to Plan
		limit   int             // Plan's limit
		done    map[string]bool // outcomes reported (Done) for the notices of this step
		notices []Notice        // expected from Plan
		next    time.Duration   // expected next retry (since t0), -1: none
		told    map[string]Want // expected Told after the outcomes
	}
	yes := func(e uint64) Want { return Want{Primary: true, Epoch: e} }
	no := func(e uint64) Want { return Want{Primary: false, Epoch: e} }
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "first channel is told it is primary", steps: []step{
			{want: map[string]Want{"a": yes(1)}, done: map[string]bool{"a": true},
				notices: []Notice{{"a", yes(1)}}, next: -1, told: map[string]Want{"a": yes(1)}},
			{want: map[string]Want{"a": yes(1)}, next: -1, told: map[string]Want{"a": yes(1)}}, // nothing new
		}},
		{name: "joiner told primary:false (weakness 15)", steps: []step{
			{want: map[string]Want{"a": yes(1)}, done: map[string]bool{"a": true}, notices: []Notice{{"a", yes(1)}}, next: -1},
			{want: map[string]Want{"a": yes(1), "b": no(1)}, done: map[string]bool{"b": true},
				notices: []Notice{{"b", no(1)}}, next: -1, told: map[string]Want{"a": yes(1), "b": no(1)}},
		}},
		{name: "re-election: survivor promoted at the new epoch", steps: []step{
			{want: map[string]Want{"a": yes(1), "b": no(1)}, done: map[string]bool{"a": true, "b": true},
				notices: []Notice{{"a", yes(1)}, {"b", no(1)}}, next: -1},
			{want: map[string]Want{"b": yes(2)}, done: map[string]bool{"b": true},
				notices: []Notice{{"b", yes(2)}}, next: -1, told: map[string]Want{"b": yes(2)}},
		}},
		{name: "epoch change alone is notified", steps: []step{
			{want: map[string]Want{"b": no(1)}, done: map[string]bool{"b": true}, notices: []Notice{{"b", no(1)}}, next: -1},
			{want: map[string]Want{"b": no(3)}, done: map[string]bool{"b": true}, notices: []Notice{{"b", no(3)}}, next: -1},
		}},
		{name: "failure retried after backoff (weakness 14)", steps: []step{
			{want: map[string]Want{"a": yes(1)}, done: map[string]bool{"a": false}, notices: []Notice{{"a", yes(1)}}, next: -1},
			{at: 10 * time.Millisecond, want: map[string]Want{"a": yes(1)}, next: 100 * time.Millisecond}, // held back
			{at: 100 * time.Millisecond, want: map[string]Want{"a": yes(1)}, done: map[string]bool{"a": false},
				notices: []Notice{{"a", yes(1)}}, next: -1},
			{at: 150 * time.Millisecond, want: map[string]Want{"a": yes(1)}, next: 300 * time.Millisecond}, // doubled
			{at: 300 * time.Millisecond, want: map[string]Want{"a": yes(1)}, done: map[string]bool{"a": true},
				notices: []Notice{{"a", yes(1)}}, next: -1, told: map[string]Want{"a": yes(1)}},
		}},
		{name: "in flight: no second notice until done", steps: []step{
			{want: map[string]Want{"a": yes(1)}, notices: []Notice{{"a", yes(1)}}, next: -1},
			{want: map[string]Want{"a": yes(2)}, next: -1}, // a still in flight
		}},
		{name: "limit holds the rest back", steps: []step{
			{want: map[string]Want{"a": yes(1), "b": yes(1), "c": yes(1)}, limit: 2, done: map[string]bool{"a": true, "b": true},
				notices: []Notice{{"a", yes(1)}, {"b", yes(1)}}, next: -1},
			{want: map[string]Want{"a": yes(1), "b": yes(1), "c": yes(1)}, limit: 2, notices: []Notice{{"c", yes(1)}}, next: -1},
		}},
		{name: "gone channels are forgotten", steps: []step{
			{want: map[string]Want{"a": yes(1)}, done: map[string]bool{"a": true}, notices: []Notice{{"a", yes(1)}}, next: -1},
			{want: map[string]Want{}, next: -1, told: map[string]Want{}},
			{want: map[string]Want{"a": yes(1)}, notices: []Notice{{"a", yes(1)}}, next: -1}, // back: told again
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := NewTracker(100*time.Millisecond, time.Second)
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				notices, next := tr.Plan(now, s.want, s.limit)
				if !slices.Equal(notices, s.notices) {
					t.Fatalf("step %d: Plan() notices = %v, want %v", i, notices, s.notices)
				}
				wantNext := time.Time{}
				if s.next >= 0 {
					wantNext = t0.Add(s.next)
				}
				if !next.Equal(wantNext) {
					t.Fatalf("step %d: Plan() next = %v, want %v", i, next, wantNext)
				}
				for _, n := range notices {
					if ok, reported := s.done[n.ChannelID]; reported {
						tr.Done(now, n.ChannelID, n.Want, ok)
					}
				}
				for id, w := range s.told {
					if got, ok := tr.Told(id); !ok || got != w {
						t.Errorf("step %d: Told(%s) = %v, %t; want %v", i, id, got, ok, w)
					}
				}
				if s.told != nil && len(s.told) == 0 {
					if _, ok := tr.Told("a"); ok {
						t.Errorf("step %d: a still remembered", i)
					}
				}
			}
		})
	}
}

func TestDoneForUnknownChannel(t *testing.T) {
	t.Parallel()
	tr := NewTracker(time.Millisecond, time.Second)
	tr.Done(t0, "ghost", Want{Primary: true}, true) // no panic, nothing remembered
	if _, ok := tr.Told("ghost"); ok {
		t.Errorf("ghost remembered")
	}
	if tr.InFlight() != 0 {
		t.Errorf("InFlight() = %d", tr.InFlight())
	}
}

// TestRetryDelays pins the retry schedule: base, doubling, up to ceiling,
// reset by a success.
func TestRetryDelays(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tests := []struct {
		name          string
		base, ceiling time.Duration
		outcomes      string // f: failure, s: success
		want          []time.Duration
	}{
		{"doubles to the ceiling", 50 * ms, 5 * time.Second, "fffffffff",
			[]time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5 * time.Second, 5 * time.Second}},
		{"success resets", 100 * ms, time.Second, "ffsff",
			[]time.Duration{100 * ms, 200 * ms, 0, 100 * ms, 200 * ms}},
		{"ceiling below base is raised to base", time.Second, ms, "fff",
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"zero base waits the ceiling", 0, time.Second, "ff",
			[]time.Duration{time.Second, time.Second}},
		{"nothing at all", 0, 0, "ff", []time.Duration{0, 0}},
	}
	for _, tt := range tests {
		tr := NewTracker(tt.base, tt.ceiling)
		now := t0
		w := map[string]Want{"a": {Primary: true, Epoch: 1}}
		notices, _ := tr.Plan(now, w, 0)
		for i, o := range tt.outcomes {
			if len(notices) != 1 {
				t.Fatalf("%s: step %d: Plan() = %v, want one notice", tt.name, i, notices)
			}
			tr.Done(now, "a", w["a"], o == 's')
			if o == 's' {
				w = map[string]Want{"a": {Primary: true, Epoch: w["a"].Epoch + 1}} // something new to tell
			}
			var next time.Time
			notices, next = tr.Plan(now, w, 0)
			got := time.Duration(0)
			if !next.IsZero() {
				got = next.Sub(now)
			}
			if got != tt.want[i] {
				t.Errorf("%s: step %d (%c): retry in %v, want %v", tt.name, i, o, got, tt.want[i])
			}
			if !next.IsZero() {
				now = next
				notices, _ = tr.Plan(now, w, 0)
			}
		}
	}
}

// TestPlanMarked: an incremental plan compares the marked channels only,
// keeps those beyond the limit marked, and compares a channel again once its
// notification is done.
func TestPlanMarked(t *testing.T) {
	t.Parallel()
	want := map[string]Want{"a": {true, 1}, "b": {false, 1}, "c": {false, 1}}
	lookup := func(id string) (Want, bool) { w, ok := want[id]; return w, ok }
	tr := NewTracker(time.Millisecond, time.Second)

	if n, _ := tr.PlanMarked(t0, lookup, 0); len(n) != 0 {
		t.Fatalf("nothing marked: PlanMarked() = %v, want none", n)
	}
	tr.Mark("b")
	tr.Mark("a")
	tr.Mark("b") // once
	n, _ := tr.PlanMarked(t0, lookup, 1)
	if !slices.Equal(n, []Notice{{"b", want["b"]}}) {
		t.Fatalf("PlanMarked(limit 1) = %v, want b only", n)
	}
	if got := tr.Pending(); got != 2 { // b in flight, a still marked
		t.Errorf("Pending() = %d, want 2", got)
	}
	want["b"] = Want{true, 2} // changed while in flight
	tr.Done(t0, "b", Want{false, 1}, true)
	n, _ = tr.PlanMarked(t0, lookup, 0)
	if !slices.Equal(n, []Notice{{"a", want["a"]}, {"b", want["b"]}}) {
		t.Fatalf("PlanMarked() = %v, want a, then b's new want", n)
	}
	tr.Done(t0, "a", want["a"], true)
	tr.Done(t0, "b", want["b"], true)
	if n, _ := tr.PlanMarked(t0, lookup, 0); len(n) != 0 {
		t.Fatalf("after delivery: PlanMarked() = %v, want none (c was never marked)", n)
	}
	delete(want, "a")
	tr.Mark("a")
	tr.PlanMarked(t0, lookup, 0)
	if _, ok := tr.Told("a"); ok {
		t.Errorf("a, no longer wanted, is remembered")
	}
	if got := tr.Pending(); got != 0 {
		t.Errorf("Pending() = %d, want 0", got)
	}
}
