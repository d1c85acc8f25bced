package state_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/state"
)

// An OpError survives a JSON round trip with its meaning: errors.Is matches
// the sentinels of its code, this package's and package batch's.
func TestOpErrorCrossesTheWire(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code  state.ErrorCode
		match []error
	}{
		{state.CodeNotFound, []error{state.ErrNotFound, batch.ErrNotFound}},
		{state.CodeExists, []error{state.ErrExists, batch.ErrExists}},
		{state.CodeInvalid, []error{state.ErrInvalid, batch.ErrInvalid}},
		{state.CodeConflict, []error{batch.ErrConflict}},
		{state.CodeInternal, nil},
	}
	all := []error{state.ErrNotFound, batch.ErrNotFound, state.ErrExists, batch.ErrExists,
		state.ErrInvalid, batch.ErrInvalid, batch.ErrConflict}
	for _, tt := range tests {
		in := []state.Result{{}, {Err: &state.OpError{Code: tt.code, Op: "register", Message: "register channel c1: boom"}}}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out []state.Result
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(in, out); d != "" {
			t.Errorf("%s: JSON round trip (-want +got):\n%s", tt.code, d)
		}
		err = state.ResultsErr(out)
		if err == nil || err.Error() != "register channel c1: boom" {
			t.Errorf("%s: ResultsErr() = %v, want the message", tt.code, err)
		}
		for _, s := range all {
			if got, want := errors.Is(err, s), slices.Contains(tt.match, s); got != want {
				t.Errorf("%s: errors.Is(err, %v) = %t, want %t", tt.code, s, got, want)
			}
		}
	}
	if err := state.ResultsErr([]state.Result{{}, {}}); err != nil {
		t.Errorf("ResultsErr(all applied) = %v, want nil", err)
	}
}

// Replica.Apply returns one Result per op, classified, and Memory.Apply joins
// them with the same texts as State.Apply's errors.
func TestReplicaApplyResults(t *testing.T) {
	t.Parallel()
	r := state.NewReplica()
	var calls [][]state.Event
	defer r.Subscribe(func(evs []state.Event) { calls = append(calls, evs) })()
	rs := r.Apply([]state.Op{
		reg("c1", "t1", "n1"), reg("c1", "t1", "n1"), {}, setPrimary("t1", "zz"), unreg("c1"),
	})
	want := []state.Result{
		{},
		{Err: &state.OpError{Code: state.CodeExists, Op: "register", Message: "register channel c1: state: already exists"}},
		{Err: &state.OpError{Code: state.CodeInvalid, Message: "state: invalid op: no operation set"}},
		{Err: &state.OpError{Code: state.CodeNotFound, Op: "setPrimary", Message: "set primary of t1 to zz: channel state: not found for that target"}},
		{},
	}
	if d := cmp.Diff(want, rs); d != "" {
		t.Errorf("Apply() results (-want +got):\n%s", d)
	}
	wantEvs := []state.Event{registered("t1", "c1", "n1"), elected("t1", "c1", "n1", 1),
		unregistered("t1", "c1", "n1"), evicted("t1", 2)}
	if len(calls) != 1 || !slices.Equal(calls[0], wantEvs) {
		t.Errorf("subscriber calls = %+v, want one with %+v", calls, wantEvs)
	}
	if rs := r.Apply([]state.Op{unreg("ghost")}); len(rs) != 1 || !rs[0].OK() || len(calls) != 1 {
		t.Errorf("a no-op Apply: results %+v, %d subscriber calls; want OK and no call", rs, len(calls))
	}

	b, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s, err := state.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(reg("c2", "t1", "n1")); err != nil {
		t.Fatal(err)
	}
	r.Restore(s)
	if len(calls) != 2 || !slices.Equal(calls[1], []state.Event{{Kind: state.StateRestored}}) {
		t.Errorf("after Restore: subscriber calls %+v, want a StateRestored", calls)
	}
	r.View(func(s *state.State) {
		if id, epoch := s.PrimaryOf("t1"); id != "c2" || epoch != 3 {
			t.Errorf("restored state: primary of t1 %q@%d, want c2@3", id, epoch)
		}
	})
}

func TestMemoryApplyResults(t *testing.T) {
	m := state.NewMemory()
	rs, err := m.Apply(t.Context(), reg("c1", "t1", "n1"), reg("c1", "t1", "n1"))
	if err != nil || len(rs) != 2 || !rs[0].OK() || rs[1].Err == nil || rs[1].Err.Code != state.CodeExists {
		t.Errorf("ApplyResults() = %+v, %v; want ok, exists", rs, err)
	}
	s := state.NewState()
	_, _ = s.Apply(reg("c1", "t1", "n1"))
	_, serr := s.Apply(reg("c1", "t1", "n1"))
	if merr := state.Err(m.Apply(t.Context(), reg("c1", "t1", "n1"))); merr == nil || merr.Error() != serr.Error() {
		t.Errorf("Memory.Apply() = %v, want the text of State.Apply's %v", merr, serr)
	}
}
