package batch_test

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

// prepared returns a stored-ready batch id for target with n commands.
func prepared(t testing.TB, id, target, key string, n int) batch.Batch {
	t.Helper()
	in := batch.Batch{ID: id, TargetID: target, Key: key}
	for i := range n {
		in.Commands = append(in.Commands, cmd(fmt.Sprintf("%s-c%d", id, i+1), "A", `{"n":1}`))
	}
	b, err := batch.Prepare(in, t0, 5, ids())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func createOp(b batch.Batch) batch.Op { return batch.Op{Create: &batch.CreateBatch{Batch: b}} }
func startOp(id string, at time.Duration) batch.Op {
	return batch.Op{Start: &batch.StartAttempt{ID: id, Now: t0.Add(at)}}
}
func okOp(id string, attempt int, cmdID string, at time.Duration) batch.Op {
	return batch.Op{Result: &batch.CommandResult{ID: id, Attempt: attempt, CommandID: cmdID, Now: t0.Add(at),
		Status: batch.StatusSucceeded, Reply: &command.Reply{Status: command.StatusSucceeded, Payload: []byte(`{"ok":true}`)}}}
}
func failOp(id string, attempt int, cmdID string, at, delay time.Duration) batch.Op {
	return batch.Op{Result: &batch.CommandResult{ID: id, Attempt: attempt, CommandID: cmdID, Now: t0.Add(at),
		Status: batch.StatusError, Error: "connector replied ERROR: no", RetryDelay: delay,
		Reply: &command.Reply{Status: command.StatusError, Error: "no"}}}
}
func deleteOp(id string) batch.Op { return batch.Op{Delete: &batch.DeleteBatch{ID: id}} }
func resetOp(id string, at time.Duration) batch.Op {
	return batch.Op{Reset: &batch.ResetInProgress{ID: id, Now: t0.Add(at)}}
}

func TestTableApply(t *testing.T) {
	t.Parallel()
	type ev = batch.Event
	s := time.Second
	b1 := prepared(t, "b1", "t1", "k", 2)
	b2 := prepared(t, "b2", "t1", "k", 1)
	b3 := prepared(t, "b3", "t2", "", 1)
	steps := []struct {
		op      batch.Op
		wantErr error
		want    []batch.Event
	}{
		{createOp(b1), nil, []ev{{Kind: batch.EventCreated, BatchID: "b1", TargetID: "t1", Status: batch.StatusCreated}}},
		{createOp(b1), batch.ErrExists, nil},
		{createOp(batch.Batch{ID: "bad", TargetID: "t1"}), batch.ErrInvalid, nil},
		{createOp(b2), nil, []ev{{Kind: batch.EventCreated, BatchID: "b2", TargetID: "t1", Status: batch.StatusCreated}}},
		{createOp(b3), nil, []ev{{Kind: batch.EventCreated, BatchID: "b3", TargetID: "t2", Status: batch.StatusCreated}}},
		// b2 must wait for b1, the older batch of t1.
		{startOp("b2", 0), batch.ErrConflict, nil},
		{startOp("nope", 0), batch.ErrNotFound, nil},
		{startOp("b1", 0), nil, []ev{{Kind: batch.EventStarted, BatchID: "b1", TargetID: "t1", Status: batch.StatusInProgress}}},
		{startOp("b3", 0), nil, []ev{{Kind: batch.EventStarted, BatchID: "b3", TargetID: "t2", Status: batch.StatusInProgress}}},
		{startOp("b1", 0), batch.ErrConflict, nil},
		{okOp("b1", 1, "b1-c1", s), nil, nil},
		{okOp("b1", 1, "b1-c1", s), batch.ErrConflict, nil}, // duplicate result
		{failOp("b1", 1, "b1-c2", 2*s, s), nil, []ev{{Kind: batch.EventPending, BatchID: "b1", TargetID: "t1", Status: batch.StatusPending}}},
		{startOp("b2", 3*s), batch.ErrConflict, nil}, // b1 is only waiting for a retry
		// A reset of everything IN_PROGRESS: only b3.
		{batch.Op{Reset: &batch.ResetInProgress{Now: t0.Add(4 * s)}}, nil, []ev{{Kind: batch.EventPending, BatchID: "b3", TargetID: "t2", Status: batch.StatusPending}}},
		{resetOp("b1", 4*s), nil, nil}, // PENDING: nothing to reset
		{startOp("b1", 5*s), nil, []ev{{Kind: batch.EventStarted, BatchID: "b1", TargetID: "t1", Status: batch.StatusInProgress}}},
		{failOp("b1", 1, "b1-c2", 6*s, s), batch.ErrConflict, nil}, // a deposed leader's result for attempt 1
		{okOp("b1", 2, "b1-c2", 6*s), nil, []ev{{Kind: batch.EventTerminal, BatchID: "b1", TargetID: "t1", Status: batch.StatusSucceeded}}},
		{startOp("b2", 7*s), nil, []ev{{Kind: batch.EventStarted, BatchID: "b2", TargetID: "t1", Status: batch.StatusInProgress}}},
		{deleteOp("b2"), nil, []ev{{Kind: batch.EventDeleted, BatchID: "b2", TargetID: "t1", Status: batch.StatusInProgress}}},
		{deleteOp("b2"), batch.ErrNotFound, nil},
		{okOp("b2", 1, "b2-c1", 8*s), batch.ErrNotFound, nil},
		{batch.Op{}, batch.ErrInvalid, nil},
	}
	var tab batch.Table // the zero Table is ready to use
	for i, st := range steps {
		before, _ := json.Marshal(&tab)
		evs, err := tab.Apply(st.op)
		if !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
			t.Fatalf("step %d: Apply() error = %v, want %v", i, err, st.wantErr)
		}
		if diff := gocmp.Diff(st.want, evs); diff != "" {
			t.Fatalf("step %d: events mismatch (-want +got):\n%s", i, diff)
		}
		if err != nil {
			if after, _ := json.Marshal(&tab); string(after) != string(before) {
				t.Fatalf("step %d: a failing op changed the table", i)
			}
		}
		if err := batch.CheckTable(&tab); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got, ok := tab.Get("b1")
	if !ok || got.Status != batch.StatusSucceeded || got.Attempts != 2 || got.Retry != 1 || got.UpdatedAt != t0.Add(6*s) {
		t.Errorf("Get(b1) = %+v, %v", got, ok)
	}
	if string(got.Commands[1].Reply.Payload) != `{"ok":true}` {
		t.Errorf("b1 reply payload = %q", got.Commands[1].Reply.Payload)
	}
	got.Commands[0].Status = batch.StatusError // a copy
	if again, _ := tab.Get("b1"); again.Commands[0].Status != batch.StatusSucceeded {
		t.Error("Get returns a batch that shares memory with the table")
	}
	if tab.Len() != 2 {
		t.Errorf("Len() = %d, want 2", tab.Len())
	}
}

func TestTableList(t *testing.T) {
	t.Parallel()
	var tab batch.Table
	for i, spec := range []struct{ id, target, key string }{
		{"a", "t1", "x"}, {"b", "t2", "x"}, {"c", "t1", "y"}, {"d", "t3", ""}, {"e", "t1", "x"},
	} {
		if _, err := tab.Apply(createOp(prepared(t, spec.id, spec.target, spec.key, 1))); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	mustApply(t, &tab, startOp("a", 0), okOp("a", 1, "a-c1", time.Second), startOp("b", 0), failOp("b", 1, "b-c1", 0, time.Second))
	list := func(f batch.Filter) []string {
		var out []string
		for _, b := range tab.List(f) {
			out = append(out, b.ID)
		}
		return out
	}
	tests := []struct {
		f    batch.Filter
		want []string
	}{
		{batch.Filter{}, []string{"a", "b", "c", "d", "e"}},
		{batch.Filter{TargetID: "t1"}, []string{"a", "c", "e"}},
		{batch.Filter{Key: "x"}, []string{"a", "b", "e"}},
		{batch.Filter{Status: batch.StatusCreated}, []string{"c", "d", "e"}},
		{batch.Filter{Status: batch.StatusSucceeded}, []string{"a"}},
		{batch.Filter{Status: batch.StatusPending, Key: "x"}, []string{"b"}},
		// Per batch, not per target group (reference weakness 34).
		{batch.Filter{Status: batch.StatusCreated, TargetID: "t1"}, []string{"c", "e"}},
		{batch.Filter{Status: batch.StatusError}, nil},
		{batch.Filter{TargetID: "nope"}, nil},
	}
	for _, tt := range tests {
		if diff := gocmp.Diff(tt.want, list(tt.f)); diff != "" {
			t.Errorf("List(%+v) mismatch (-want +got):\n%s", tt.f, diff)
		}
	}
	if got := tab.List(batch.Filter{TargetID: "nope"}); got == nil {
		t.Error("List() = nil, want an empty slice (encodes as [])")
	}
}

func mustApply(t testing.TB, tab *batch.Table, ops ...batch.Op) {
	t.Helper()
	for i, op := range ops {
		if _, err := tab.Apply(op); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
}

func TestTableJSONRejectsCorruption(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"seq":1,"batches":[{"seq":1,"batch":{"id":"","targetId":"t","status":"CREATED"}}]}`,
		`{"seq":2,"batches":[{"seq":1,"batch":{"id":"a","targetId":"t","status":"CREATED"}},{"seq":2,"batch":{"id":"a","targetId":"t","status":"CREATED"}}]}`,
		`{"seq":1,"batches":[{"seq":1,"batch":{"id":"a","targetId":"t"}}]}`,
		`{"seq":1,"batches":[{"seq":3,"batch":{"id":"a","targetId":"t","status":"CREATED"}}]}`,
		`{"seq":1,"batches":[{"seq":1,"batch":{"id":"a","targetId":"t","status":"DONE"}}]}`,
		`[]`,
	} {
		var tab batch.Table
		if err := json.Unmarshal([]byte(in), &tab); err == nil {
			t.Errorf("Unmarshal(%s) = nil, want an error", in)
		}
	}
}

// TestTableReplayVersusSnapshot applies random op sequences, and at random
// points encodes the table and decodes it into a twin; the twin then follows
// the same ops. The two must agree on every op's result and events, and end
// identical (their JSON, their listings and their indexes).
func TestTableReplayVersusSnapshot(t *testing.T) {
	t.Parallel()
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var a batch.Table
		var b *batch.Table
		targets := []string{"t1", "t2", "t3"}
		n := 0
		for step := range 300 {
			op := randomOp(t, rng, &a, targets, &n, time.Duration(step)*time.Second)
			evA, errA := a.Apply(op)
			if b != nil {
				evB, errB := b.Apply(op)
				if fmt.Sprint(errA) != fmt.Sprint(errB) {
					t.Fatalf("seed %d step %d: errors differ: %v vs %v", seed, step, errA, errB)
				}
				if diff := gocmp.Diff(evA, evB); diff != "" {
					t.Fatalf("seed %d step %d: events differ:\n%s", seed, step, diff)
				}
			}
			if err := batch.CheckTable(&a); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			if b == nil && rng.IntN(100) == 0 || step == 150 {
				data, err := json.Marshal(&a)
				if err != nil {
					t.Fatal(err)
				}
				b = &batch.Table{}
				if err := json.Unmarshal(data, b); err != nil {
					t.Fatalf("seed %d: Unmarshal() = %v", seed, err)
				}
			}
		}
		ja, _ := json.Marshal(&a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("seed %d: tables differ:\n%s\n%s", seed, ja, jb)
		}
		if diff := gocmp.Diff(a.List(batch.Filter{}), b.List(batch.Filter{})); diff != "" {
			t.Fatalf("seed %d: listings differ:\n%s", seed, diff)
		}
		if err := batch.CheckTable(b); err != nil {
			t.Fatalf("seed %d: restored twin: %v", seed, err)
		}
	}
}

// randomOp returns a plausible op (mostly valid, sometimes stale or wrong).
func randomOp(t testing.TB, rng *rand.Rand, tab *batch.Table, targets []string, n *int, now time.Duration) batch.Op {
	all := tab.List(batch.Filter{})
	pick := func() (batch.Batch, bool) {
		if len(all) == 0 {
			return batch.Batch{}, false
		}
		return all[rng.IntN(len(all))], true
	}
	switch r := rng.IntN(20); {
	case r < 4 || len(all) == 0:
		*n++
		return createOp(prepared(t, fmt.Sprintf("b%d", *n), targets[rng.IntN(len(targets))], []string{"", "k1", "k2"}[rng.IntN(3)], 1+rng.IntN(3)))
	case r < 8:
		b, _ := pick()
		return startOp(b.ID, now)
	case r < 15:
		b, _ := pick()
		cmdID := b.Commands[rng.IntN(len(b.Commands))].Command.ID
		for _, c := range b.Commands {
			if c.Status == batch.StatusInProgress && rng.IntN(5) > 0 {
				cmdID = c.Command.ID
			}
		}
		attempt := b.Attempts
		if rng.IntN(10) == 0 {
			attempt--
		}
		switch rng.IntN(3) {
		case 0:
			return failOp(b.ID, attempt, cmdID, now, time.Duration(rng.IntN(5))*time.Second)
		case 1:
			op := failOp(b.ID, attempt, cmdID, now, time.Minute)
			op.Result.Offline = true
			return op
		}
		return okOp(b.ID, attempt, cmdID, now)
	case r < 16:
		return batch.Op{Reset: &batch.ResetInProgress{Now: t0.Add(now)}}
	case r < 17:
		b, _ := pick()
		return batch.Op{Finish: &batch.FinishAttempt{ID: b.ID, Attempt: b.Attempts, Now: t0.Add(now), Error: "stop"}}
	case r < 19:
		b, _ := pick()
		return deleteOp(b.ID)
	}
	b, _ := pick()
	return resetOp(b.ID, now)
}

func TestOpJSONRoundTrip(t *testing.T) {
	t.Parallel()
	b := prepared(t, "b1", "t1", "k", 2)
	b.Commands[0].Command.Payload = []byte{0, 1, 2}
	ops := []batch.Op{
		createOp(b),
		startOp("b1", time.Second),
		okOp("b1", 1, "b1-c1", 2*time.Second),
		failOp("b1", 1, "b1-c2", 3*time.Second, 1500*time.Millisecond),
		{Finish: &batch.FinishAttempt{ID: "b1", Attempt: 2, Now: t0, Error: "x", Offline: true, RetryDelay: time.Minute}},
		resetOp("", 4*time.Second),
		deleteOp("b1"),
	}
	for i, op := range ops {
		data, err := json.Marshal(op)
		if err != nil {
			t.Fatalf("op %d: Marshal() = %v", i, err)
		}
		var got batch.Op
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("op %d: Unmarshal() = %v", i, err)
		}
		if diff := gocmp.Diff(op, got); diff != "" {
			t.Errorf("op %d mismatch (-want +got):\n%s\n%s", i, diff, data)
		}
	}
}

// FuzzCommandJSON checks that any payload survives a batch command's JSON.
func FuzzCommandJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, "{ }", `"x"`, "<b>", "\xff\x00", "", "null", "[1, 2]"} {
		f.Add([]byte(s), []byte(s))
	}
	f.Fuzz(func(t *testing.T, payload, reply []byte) {
		c := batch.Command{
			Command: &command.Command{ID: "c1", Type: "A", Payload: payload},
			Status:  batch.StatusSucceeded,
			Reply:   &command.Reply{Status: command.StatusSucceeded, Payload: reply},
		}
		if len(payload) == 0 {
			c.Command.Payload = nil
		}
		if len(reply) == 0 {
			c.Reply.Payload = nil
		}
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var got batch.Command
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if diff := gocmp.Diff(c, got); diff != "" {
			t.Fatalf("round trip mismatch:\n%s\n%s", diff, data)
		}
	})
}

// Page returns what List returns, in the listings' order (creation time,
// then id), after the position and at most limit: for every filter, every
// position (each batch's, before and between them, past the last) and
// several limits, over tables of random histories where batches share
// creation times.
func TestTablePage(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3) {
		rng := rand.New(rand.NewPCG(seed, 11))
		var tab batch.Table
		targets := []string{"t1", "t2", "t3"}
		n := 0
		for step := range 80 {
			op := randomOp(t, rng, &tab, targets, &n, time.Duration(step)*time.Second)
			if op.Create != nil { // creation times that batches share, out of id order
				op.Create.Batch.CreatedAt = t0.Add(time.Duration(rng.IntN(4)) * time.Second)
			}
			_, _ = tab.Apply(op)
		}
		all := tab.List(batch.Filter{})
		listed := func(f batch.Filter) []batch.Batch {
			out := tab.List(f)
			slices.SortFunc(out, func(a, b batch.Batch) int {
				return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
			})
			return out
		}
		positions := []*batch.Position{nil, {CreatedAt: t0.Add(-time.Second)}, {CreatedAt: t0.Add(time.Hour)}}
		for i := range 4 { // before every batch of a time
			positions = append(positions, &batch.Position{CreatedAt: t0.Add(time.Duration(i) * time.Second)})
		}
		for _, b := range all { // a batch's own, and between it and the next
			positions = append(positions, &batch.Position{CreatedAt: b.CreatedAt, ID: b.ID},
				&batch.Position{CreatedAt: b.CreatedAt, ID: b.ID + "~"})
		}
		var filters []batch.Filter
		for _, s := range []batch.Status{0, batch.StatusCreated, batch.StatusPending, batch.StatusSucceeded} {
			filters = append(filters, batch.Filter{Status: s}, batch.Filter{Status: s, TargetID: "t2"}, batch.Filter{Status: s, Key: "k1"})
		}
		for _, f := range filters {
			want := listed(f)
			for _, pos := range positions {
				after := want
				if pos != nil {
					after = slices.DeleteFunc(slices.Clone(want), func(b batch.Batch) bool {
						return cmp.Or(b.CreatedAt.Compare(pos.CreatedAt), strings.Compare(b.ID, pos.ID)) <= 0
					})
				}
				for _, limit := range []int{1, 3, 1000} {
					got, want := tab.Page(f, pos, limit), after[:min(limit, len(after))]
					if pos == nil && limit == 1000 { // the batches themselves, once per filter
						if diff := gocmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
							t.Fatalf("seed %d: Page(%+v, nil, %d) differs from the listing (-want +got):\n%s", seed, f, limit, diff)
						}
					}
					if !slices.Equal(idsOf(got), idsOf(want)) {
						t.Fatalf("seed %d: Page(%+v, %+v, %d) = %v, want %v", seed, f, pos, limit, idsOf(got), idsOf(want))
					}
				}
			}
		}
	}
	var zero batch.Table // empty and ready
	if got := zero.Page(batch.Filter{}, nil, 10); got == nil || len(got) != 0 {
		t.Errorf("Page of the zero Table = %v, want an empty page", got)
	}
}

func idsOf(bs []batch.Batch) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

// BenchmarkTablePage reads the first page of 1,000 batches, and the page
// after the middle one, out of 1k, 10k and 100k, with Page and as the
// listings did before it (List, every batch copied, then a page taken): a
// page must cost the same at every size.
func BenchmarkTablePage(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		var tab batch.Table
		for i := range n {
			in := batch.Batch{ID: fmt.Sprintf("b%07d", i), TargetID: fmt.Sprintf("t%d", i%1000),
				Commands: []batch.Command{{Command: &command.Command{ID: "c", Type: "A", Payload: []byte(`{"n":1}`)}}}}
			bt, err := batch.Prepare(in, t0.Add(time.Duration(i)*time.Millisecond), 3, ids())
			if err != nil {
				b.Fatal(err)
			}
			mustApply(b, &tab, createOp(bt))
		}
		mid := &batch.Position{CreatedAt: t0.Add(time.Duration(n/2) * time.Millisecond), ID: fmt.Sprintf("b%07d", n/2)}
		b.Run(fmt.Sprintf("page/batches=%dk", n/1000), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(tab.Page(batch.Filter{}, nil, 1000)) != 1000 || len(tab.Page(batch.Filter{}, mid, 1000)) != min(1000, n-n/2-1) {
					b.Fatal("wrong page length")
				}
			}
		})
		b.Run(fmt.Sprintf("list/batches=%dk", n/1000), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(tab.List(batch.Filter{})) != n {
					b.Fatal("wrong listing length")
				}
			}
		})
	}
}
