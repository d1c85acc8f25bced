package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

var batchT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// batchCmpOpts compare States: the batch table by its batches (in creation
// order); the tests compare the tables' JSON too, which includes the
// creation sequence numbers.
var batchCmpOpts = cmp.Options{
	cmp.AllowUnexported(State{}),
	cmp.Transformer("batches", func(t *batch.Table) []batch.Batch { return t.List(batch.Filter{}) }),
}

func batchPrepared(t testing.TB, id, target string, n int) batch.Batch {
	t.Helper()
	in := batch.Batch{ID: id, TargetID: target, Key: "k-" + target}
	for i := range n {
		in.Commands = append(in.Commands, batch.Command{Command: &command.Command{
			ID: fmt.Sprintf("%s-c%d", id, i+1), Type: "ECHO", Payload: []byte(`{"i":1}`), Metadata: map[string]string{"m": "v"}}})
	}
	n2 := 0
	b, err := batch.Prepare(in, batchT0, 5, func() string { n2++; return fmt.Sprintf("gen-%d", n2) })
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func batchOp(op batch.Op) Op { return Op{batchOps: batchOps{Batch: &op}} }

func batchResult(id string, attempt int, cmdID string, at time.Duration, ok bool) Op {
	r := &batch.CommandResult{ID: id, Attempt: attempt, CommandID: cmdID, Now: batchT0.Add(at), RetryDelay: time.Second}
	if ok {
		r.Status, r.Reply = batch.StatusSucceeded, &command.Reply{Status: command.StatusSucceeded, Payload: []byte{0xff, 1}, Code: 200}
	} else {
		r.Status, r.Error, r.Reply = batch.StatusError, "connector replied ERROR: no", &command.Reply{Status: command.StatusError, Error: "no"}
	}
	return batchOp(batch.Op{Result: r})
}

// batchScenario is a history mixing registry and batch ops.
func batchScenario(t testing.TB) []Op {
	s := time.Second
	reg := func(id, target string) Op {
		return Op{Register: &RegisterChannel{Channel: Channel{ID: id, TargetID: target, NodeID: "n1", Active: true, RegisteredAt: batchT0}}}
	}
	return []Op{
		reg("ch1", "t1"),
		batchOp(batch.Op{Create: &batch.CreateBatch{Batch: batchPrepared(t, "b1", "t1", 2)}}),
		batchOp(batch.Op{Create: &batch.CreateBatch{Batch: batchPrepared(t, "b2", "t1", 1)}}),
		batchOp(batch.Op{Create: &batch.CreateBatch{Batch: batchPrepared(t, "b3", "t2", 3)}}),
		batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b1", Now: batchT0.Add(s)}}),
		batchResult("b1", 1, "b1-c1", 2*s, true),
		batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b3", Now: batchT0.Add(2 * s)}}),
		reg("ch2", "t2"),
		batchResult("b1", 1, "b1-c2", 3*s, false),
		batchResult("b3", 1, "b3-c1", 3*s, true),
		batchOp(batch.Op{Reset: &batch.ResetInProgress{Now: batchT0.Add(4 * s)}}),
		batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b1", Now: batchT0.Add(5 * s)}}),
		batchResult("b1", 2, "b1-c2", 6*s, true),
		{Unregister: &UnregisterChannel{ChannelID: "ch1"}},
		batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b2", Now: batchT0.Add(7 * s)}}),
		batchOp(batch.Op{Create: &batch.CreateBatch{Batch: batchPrepared(t, "b4", "t3", 1)}}),
		batchOp(batch.Op{Delete: &batch.DeleteBatch{ID: "b1"}}),
		batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b4", Now: batchT0.Add(8 * s)}}),
		batchResult("b4", 1, "b4-c1", 9*s, true),
		batchOp(batch.Op{Finish: &batch.FinishAttempt{ID: "b2", Attempt: 1, Now: batchT0.Add(9 * s), Error: "stopped", RetryDelay: s}}),
	}
}

func TestBatchOpsThroughState(t *testing.T) {
	s := NewState()
	b1 := batchPrepared(t, "b1", "t1", 1)
	steps := []struct {
		op      Op
		want    []Event
		wantErr []error
	}{
		{batchOp(batch.Op{Create: &batch.CreateBatch{Batch: b1}}), []Event{{Kind: BatchCreated, TargetID: "t1", BatchID: "b1"}}, nil},
		{batchOp(batch.Op{Create: &batch.CreateBatch{Batch: b1}}), nil, []error{ErrExists, batch.ErrExists}},
		{batchOp(batch.Op{Start: &batch.StartAttempt{ID: "nope", Now: batchT0}}), nil, []error{ErrNotFound, batch.ErrNotFound}},
		{batchOp(batch.Op{Create: &batch.CreateBatch{Batch: batch.Batch{ID: "x"}}}), nil, []error{ErrInvalid, batch.ErrInvalid}},
		{batchOp(batch.Op{}), nil, []error{ErrInvalid, batch.ErrInvalid}},
		{batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b1", Now: batchT0}}), []Event{{Kind: BatchStarted, TargetID: "t1", BatchID: "b1"}}, nil},
		{batchResult("b1", 1, "b1-c1", time.Second, false), []Event{{Kind: BatchPending, TargetID: "t1", BatchID: "b1"}}, nil},
		{batchResult("b1", 1, "b1-c1", time.Second, true), nil, []error{batch.ErrConflict}},
		{batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b1", Now: batchT0}}), []Event{{Kind: BatchStarted, TargetID: "t1", BatchID: "b1"}}, nil},
		{batchResult("b1", 2, "b1-c1", time.Second, true), []Event{{Kind: BatchSucceeded, TargetID: "t1", BatchID: "b1"}}, nil},
		{batchOp(batch.Op{Delete: &batch.DeleteBatch{ID: "b1"}}), []Event{{Kind: BatchDeleted, TargetID: "t1", BatchID: "b1"}}, nil},
	}
	for i, st := range steps {
		evs, err := s.Apply(st.op)
		for _, want := range st.wantErr {
			if !errors.Is(err, want) {
				t.Errorf("step %d: Apply() error = %v, want it to match %v", i, err, want)
			}
		}
		if st.wantErr == nil && err != nil {
			t.Errorf("step %d: Apply() = %v", i, err)
		}
		for _, e := range evs {
			if e.Batch == nil || e.Batch.BatchID != e.BatchID || e.Batch.TargetID != e.TargetID {
				t.Errorf("step %d: event %+v does not carry the batch table's own event", i, e)
			}
		}
		if diff := cmp.Diff(st.want, evs, cmpopts.IgnoreFields(Event{}, "Batch")); diff != "" {
			t.Errorf("step %d: events mismatch (-want +got):\n%s", i, diff)
		}
	}
	// A batch that ends in ERROR reports BatchFailed.
	b2 := batchPrepared(t, "b2", "t1", 1)
	b2.MaxRetry = new(0)
	mustApplyBatch(t, s, batchOp(batch.Op{Create: &batch.CreateBatch{Batch: b2}}), batchOp(batch.Op{Start: &batch.StartAttempt{ID: "b2", Now: batchT0}}))
	evs, err := s.Apply(batchResult("b2", 1, "b2-c1", time.Second, false))
	if err != nil || len(evs) != 1 || evs[0].Kind != BatchFailed {
		t.Errorf("final failure: events %v, error %v; want one BatchFailed", evs, err)
	}
}

func mustApplyBatch(t *testing.T, s *State, ops ...Op) {
	t.Helper()
	for i, op := range ops {
		if _, err := s.Apply(op); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
}

func TestBatchSnapshotRoundTrip(t *testing.T) {
	s := NewState()
	mustApplyBatch(t, s, batchScenario(t)...)
	if s.Batches.Len() != 3 {
		t.Fatalf("scenario left %d batches, want 3", s.Batches.Len())
	}
	data, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got, batchCmpOpts); diff != "" {
		t.Errorf("snapshot round trip mismatch (-want +got):\n%s", diff)
	}
	again, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Errorf("re-encoded snapshot differs:\n%s\n%s", data, again)
	}
	// A snapshot without batches (older, or empty) restores an empty table.
	old, err := Unmarshal([]byte(`{"channels":{},"primaries":{},"seq":0}`))
	if err != nil || old.Batches == nil || old.Batches.Len() != 0 {
		t.Errorf("Unmarshal(no batches) = %v, %v", old, err)
	}
	null, err := Unmarshal([]byte(`{"channels":{},"primaries":{},"seq":0,"batches":null}`))
	if err != nil || null.Batches == nil {
		t.Errorf("Unmarshal(batches null) = %v, %v", null, err)
	}
}

// TestBatchReplayVersusSnapshot is the FSM twin test: replaying the whole
// log, and restoring a snapshot taken at any point then replaying the rest,
// must give identical States (and identical events on the way). The ops go
// through JSON, as raft log entries do.
func TestBatchReplayVersusSnapshot(t *testing.T) {
	ops := batchScenario(t)
	viaJSON := func(op Op) Op {
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		var out Op
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	replay := NewState()
	var replayEvents [][]Event
	for _, op := range ops {
		evs, err := replay.Apply(viaJSON(op))
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		replayEvents = append(replayEvents, evs)
	}
	want, err := replay.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for k := range len(ops) + 1 {
		s := NewState()
		for _, op := range ops[:k] {
			if _, err := s.Apply(op); err != nil {
				t.Fatal(err)
			}
		}
		snap, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		restored, err := Unmarshal(snap)
		if err != nil {
			t.Fatalf("k=%d: %v", k, err)
		}
		for i, op := range ops[k:] {
			evs, err := restored.Apply(viaJSON(op))
			if err != nil {
				t.Fatalf("k=%d op %d: %v", k, k+i, err)
			}
			if diff := cmp.Diff(replayEvents[k+i], evs); diff != "" {
				t.Fatalf("k=%d op %d: events differ (-replay +restored):\n%s", k, k+i, diff)
			}
		}
		if diff := cmp.Diff(replay, restored, batchCmpOpts); diff != "" {
			t.Fatalf("k=%d: states differ (-replay +restored):\n%s", k, diff)
		}
		got, err := restored.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("k=%d: snapshots differ:\n%s\n%s", k, want, got)
		}
	}
}

func TestBatchStoreAdapter(t *testing.T) {
	mem := NewMemory()
	bs := NewBatchStore(mem)
	var got []batch.Event
	cancel := bs.Subscribe(func(evs []batch.Event) { got = append(got, evs...) })
	defer cancel()
	ctx := t.Context()
	if err := bs.Apply(ctx,
		batch.Op{Create: &batch.CreateBatch{Batch: batchPrepared(t, "b1", "t1", 1)}},
		batch.Op{Start: &batch.StartAttempt{ID: "b1", Now: batchT0}},
	); err != nil {
		t.Fatal(err)
	}
	if err := Err(mem.Apply(ctx, Op{Register: &RegisterChannel{Channel: Channel{ID: "c1", TargetID: "t1", NodeID: "n", Active: true}}})); err != nil {
		t.Fatal(err)
	}
	if err := bs.Apply(ctx, batch.Op{Delete: &batch.DeleteBatch{ID: "nope"}}); !errors.Is(err, batch.ErrNotFound) {
		t.Errorf("Apply(delete nope) = %v, want batch.ErrNotFound", err)
	}
	want := []batch.Event{
		{Kind: batch.EventCreated, BatchID: "b1", TargetID: "t1", Status: batch.StatusCreated},
		{Kind: batch.EventStarted, BatchID: "b1", TargetID: "t1", Status: batch.StatusInProgress},
		{Kind: batch.EventChannelRegistered, TargetID: "t1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	var status batch.Status
	bs.View(func(tab *batch.Table) {
		b, _ := tab.Get("b1")
		status = b.Status
	})
	if status != batch.StatusInProgress {
		t.Errorf("View: b1 is %v, want IN_PROGRESS", status)
	}
	for _, tt := range []struct {
		in   Event
		want batch.Event
		ok   bool
	}{
		{Event{Kind: StateRestored}, batch.Event{Kind: batch.EventRestored}, true},
		{Event{Kind: ChannelRegistered, TargetID: "t", ChannelID: "c"}, batch.Event{Kind: batch.EventChannelRegistered, TargetID: "t"}, true},
		{Event{Kind: BatchSucceeded, BatchID: "b", TargetID: "t", Batch: &batch.Event{Kind: batch.EventTerminal, BatchID: "b", TargetID: "t", Status: batch.StatusSucceeded}},
			batch.Event{Kind: batch.EventTerminal, BatchID: "b", TargetID: "t", Status: batch.StatusSucceeded}, true},
		{Event{Kind: BatchDeleted, BatchID: "b", Batch: &batch.Event{Kind: batch.EventDeleted, BatchID: "b", TargetID: "t", Status: batch.StatusPending}},
			batch.Event{Kind: batch.EventDeleted, BatchID: "b", TargetID: "t", Status: batch.StatusPending}, true},
		{Event{Kind: PrimaryElected, TargetID: "t"}, batch.Event{}, false},
		{Event{Kind: ChannelUnregistered, TargetID: "t"}, batch.Event{}, false},
	} {
		got, ok := batchEvent(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("batchEvent(%v) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
