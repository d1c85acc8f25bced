package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/state"
)

// Node is the twin of state.Memory behind state.Store.
var (
	_ state.Store = (*cluster.Node)(nil)
	_ state.Store = (*state.Memory)(nil)
)

// TestApplyViewSubscribe applies registrations and unregistrations and checks
// that View and the subscribers see exactly what state.Memory, the in-memory
// twin, shows for the same Apply calls.
func TestApplyViewSubscribe(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	if !n.Leader() || n.RaftState() != "Leader" || n.LeaderID() != "node-1" {
		t.Fatalf("after Open: Leader() = %v, RaftState() = %q, LeaderID() = %q; want a leader node-1",
			n.Leader(), n.RaftState(), n.LeaderID())
	}
	mem := state.NewMemory()
	var nodeEvents, memEvents recorder
	defer n.Subscribe(nodeEvents.record)()
	defer mem.Subscribe(memEvents.record)()

	calls := [][]state.Op{
		{register("c1", "t1")},
		{register("c2", "t1"), register("c3", "t2")}, // two ops, one entry
		{unregister("c1")},                           // primary of t1 moves to c2, epoch 3 (c3 took 2)
		{unregister("nope")},                         // no-op: no events, no subscriber call
		{register("c4", "t2"), unregister("c3")},
	}
	for i, ops := range calls {
		if err := state.Err(n.Apply(ctx, ops...)); err != nil {
			t.Fatalf("Apply(call %d) = %v", i, err)
		}
		if err := state.Err(mem.Apply(ctx, ops...)); err != nil {
			t.Fatalf("Memory.Apply(call %d) = %v", i, err)
		}
	}
	if d := cmp.Diff(memEvents.get(), nodeEvents.get()); d != "" {
		t.Errorf("subscriber events (-memory +node):\n%s", d)
	}
	got := snapshotOf(t, n)
	mem.View(func(s *state.State) {
		if d := diffState(s, got); d != "" {
			t.Errorf("View() state differs from Memory's:\n%s", d)
		}
	})
	if d := diffState(replay(flatten(calls)...), got); d != "" {
		t.Errorf("View() state differs from a replay:\n%s", d)
	}
	n.View(func(s *state.State) {
		if id, ep := s.PrimaryOf("t1"); id != "c2" || ep != 3 {
			t.Errorf("PrimaryOf(t1) = %q, %d; want c2, 3", id, ep)
		}
	})
}

func flatten(calls [][]state.Op) []state.Op {
	var ops []state.Op
	for _, c := range calls {
		ops = append(ops, c...)
	}
	return ops
}

// TestApplyErrorsKeepSentinels checks that op errors cross the FSM boundary
// with their sentinels, and that every op of an Apply is attempted.
func TestApplyErrorsKeepSentinels(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	if err := state.Err(n.Apply(ctx, register("c1", "t1"))); err != nil {
		t.Fatalf("Apply() = %v", err)
	}

	err := state.Err(n.Apply(ctx, register("c1", "t1")))
	if !errors.Is(err, state.ErrExists) {
		t.Errorf("Apply(duplicate register) = %v, want errors.Is(err, state.ErrExists)", err)
	}

	// One entry, three ops: the middle one succeeds although the others fail.
	err = state.Err(n.Apply(ctx,
		state.Op{}, // no operation set
		register("c2", "t1"),
		state.Op{SetPrimary: &state.SetPrimary{TargetID: "t1", ChannelID: "missing"}},
	))
	for _, want := range []error{state.ErrInvalid, state.ErrNotFound} {
		if !errors.Is(err, want) {
			t.Errorf("Apply(invalid, ok, missing) = %v, want errors.Is(err, %v)", err, want)
		}
	}
	if errors.Is(err, state.ErrExists) {
		t.Errorf("Apply(invalid, ok, missing) = %v, wrongly errors.Is(err, state.ErrExists)", err)
	}
	n.View(func(s *state.State) {
		if _, ok := s.Channels["c2"]; !ok {
			t.Errorf("channel c2 missing: every op of an Apply must be attempted")
		}
	})
	// The twin returns the same errors.
	mem := state.NewMemory()
	_ = state.Err(mem.Apply(ctx, register("c1", "t1")))
	merr := state.Err(mem.Apply(ctx, register("c1", "t1")))
	if nerr := state.Err(n.Apply(ctx, register("c1", "t1"))); nerr.Error() != merr.Error() {
		t.Errorf("Apply(duplicate) = %q, Memory.Apply = %q; want the same", nerr, merr)
	}
}

// TestApplyResults checks that ApplyResults returns one plain-data result per
// op, the same as state.Memory's twin.
func TestApplyResults(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	mem := state.NewMemory()
	ops := []state.Op{
		register("c1", "t1"), register("c1", "t1"), {},
		{SetPrimary: &state.SetPrimary{TargetID: "t1", ChannelID: "missing"}}, unregister("c1"),
	}
	got, err := n.Apply(ctx, ops...)
	if err != nil {
		t.Fatalf("ApplyResults() = %v", err)
	}
	want, err := mem.Apply(ctx, ops...)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ApplyResults() (-memory +node):\n%s", d)
	}
	codes := []state.ErrorCode{"", state.CodeExists, state.CodeInvalid, state.CodeNotFound, ""}
	for i, r := range got {
		var c state.ErrorCode
		if r.Err != nil {
			c = r.Err.Code
		}
		if c != codes[i] {
			t.Errorf("result %d: code %q, want %q", i, c, codes[i])
		}
	}
	if rs, err := n.Apply(ctx); rs != nil || err != nil {
		t.Errorf("ApplyResults() of no ops = %v, %v; want nothing", rs, err)
	}
}

// TestReopen closes a node and reopens its data directory: the state is
// identical (channels, primaries and their epochs) and epochs keep growing.
func TestReopen(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n := open(t, testConfig(t, dir))
	ops := []state.Op{
		register("a1", "ta"), register("a2", "ta"), register("b1", "tb"),
		unregister("a1"), register("a3", "ta"), unregister("a2"), // ta: a1 → a2 → a3, epoch 4 (b1 took 2)
	}
	for _, op := range ops {
		if err := state.Err(n.Apply(ctx, op)); err != nil {
			t.Fatalf("Apply() = %v", err)
		}
	}
	before := snapshotOf(t, n)
	oldAddr := n.RaftAddr()
	closeNode(t, n)

	n = open(t, testConfig(t, dir))
	if d := diffState(before, snapshotOf(t, n)); d != "" {
		t.Fatalf("state after reopen differs:\n%s", d)
	}
	if d := diffState(replay(ops...), snapshotOf(t, n)); d != "" {
		t.Fatalf("state after reopen differs from a replay:\n%s", d)
	}
	_, epochBefore := before.PrimaryOf("ta")
	if epochBefore != 4 {
		t.Fatalf("epoch of ta before restart = %d, want 4", epochBefore)
	}
	if err := state.Err(n.Apply(ctx, unregister("a3"))); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	if err := state.Err(n.Apply(ctx, register("a4", "ta"))); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	n.View(func(s *state.State) {
		if id, ep := s.PrimaryOf("ta"); id != "a4" || ep != epochBefore+2 {
			t.Errorf("PrimaryOf(ta) after restart = %q, %d; want a4, %d (fencing tokens never go backwards)",
				id, ep, epochBefore+2)
		}
		if s.Channels["a4"].Seq <= before.Seq {
			t.Errorf("Seq of a4 = %d, want > %d", s.Channels["a4"].Seq, before.Seq)
		}
	})

	// The node came back on another port: the raft configuration follows.
	st := n.Stats()
	want := []cluster.Member{{NodeID: "node-1", Address: n.RaftAddr(), Suffrage: "Voter", Leader: true}}
	if d := cmp.Diff(want, st.Members); d != "" {
		t.Errorf("Stats().Members (-want +got), old address %s:\n%s", oldAddr, d)
	}
	if st.NodeID != "node-1" || st.State != "Leader" || st.LeaderID != "node-1" || st.AppliedIndex < st.LastIndex-1 {
		t.Errorf("Stats() = %+v", st)
	}
}

// TestApplyContextCanceled checks that an Apply returns when its ctx ends,
// even while raft is stuck applying its entry, and that the entry still
// applies afterwards.
func TestApplyContextCanceled(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))

	applyCtx, cancelApply := context.WithCancel(ctx)
	defer cancelApply()
	release := make(chan struct{})
	var once sync.Once
	unsubscribe := n.Subscribe(func([]state.Event) {
		// Runs on raft's FSM goroutine: cancel the Apply while its entry
		// is being applied, and hold the FSM until the test releases it.
		once.Do(func() {
			cancelApply()
			<-release
		})
	})
	defer unsubscribe()
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce() // before Close (t.Cleanup), which waits for the entry

	err := state.Err(n.Apply(applyCtx, register("c1", "t1")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply(canceled while applying) = %v, want context.Canceled", err)
	}
	if err := state.Err(n.Apply(applyCtx, register("c2", "t1"))); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply(canceled ctx) = %v, want context.Canceled", err)
	}
	releaseOnce()
	// The canceled Apply's entry was committed: a later Apply sees it.
	if err := state.Err(n.Apply(ctx, register("c1", "t1"))); !errors.Is(err, state.ErrExists) {
		t.Errorf("Apply(c1 again) = %v, want state.ErrExists (the canceled Apply still applied)", err)
	}
}

// TestClose checks that Close is idempotent and that a closed node refuses
// work with ErrClosed.
func TestClose(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	if err := state.Err(n.Apply(ctx, register("c1", "t1"))); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	closeNode(t, n)
	closeNode(t, n)
	if err := state.Err(n.Apply(ctx, register("c2", "t1"))); !errors.Is(err, cluster.ErrClosed) || !errors.Is(err, state.ErrClosed) {
		t.Errorf("Apply() after Close = %v, want cluster.ErrClosed, also state.ErrClosed", err)
	}
	if err := n.Snapshot(ctx); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Snapshot() after Close = %v, want cluster.ErrClosed", err)
	}
	if n.Leader() || n.RaftState() != "Shutdown" {
		t.Errorf("after Close: Leader() = %v, RaftState() = %q; want false, Shutdown", n.Leader(), n.RaftState())
	}
	n.View(func(s *state.State) { // the last state stays readable
		if len(s.Channels) != 1 {
			t.Errorf("View() after Close: %d channels, want 1", len(s.Channels))
		}
	})
}

// TestConcurrentApply runs many Applies, Views and subscribers at once (for
// the race detector) and checks that nothing is lost.
func TestConcurrentApply(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	var rec recorder
	defer n.Subscribe(rec.record)()

	const workers, each = 32, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("c-%d-%d", w, i)
				if err := state.Err(n.Apply(ctx, register(id, fmt.Sprintf("t-%d", w)))); err != nil {
					errs <- fmt.Errorf("Apply(%s) = %w", id, err)
				}
				n.View(func(s *state.State) { _ = s.Channels[id] })
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n.View(func(s *state.State) {
		if len(s.Channels) != workers*each || s.Seq != workers*each {
			t.Errorf("after concurrent Applies: %d channels, Seq %d; want %d", len(s.Channels), s.Seq, workers*each)
		}
	})
	registered := 0
	for _, evs := range rec.get() {
		for _, e := range evs {
			if e.Kind == state.ChannelRegistered {
				registered++
			}
		}
	}
	if registered != workers*each {
		t.Errorf("subscriber saw %d registrations, want %d", registered, workers*each)
	}
	st := n.Stats()
	t.Logf("%d entries in %d log writes", st.LogEntries, st.LogWrites)
}

// TestCloseDuringApplies closes a node while Applies stream in: every Apply
// returns (nil or ErrClosed), Close waits for them, and every acknowledged op
// is there after a restart.
func TestCloseDuringApplies(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n := open(t, testConfig(t, dir))

	var (
		mu      sync.Mutex
		acked   []string
		started = make(chan struct{})
		once    sync.Once
		wg      sync.WaitGroup
	)
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("c-%d-%d", w, i)
				err := state.Err(n.Apply(ctx, register(id, fmt.Sprintf("t-%d", w))))
				if errors.Is(err, cluster.ErrClosed) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("Apply(%s) = %w, want nil or ErrClosed", id, err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				if len(acked) == 100 {
					once.Do(func() { close(started) })
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatalf("Applies did not get going: %v", ctx.Err())
	}
	closeNode(t, n)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	n = open(t, testConfig(t, dir))
	n.View(func(s *state.State) {
		for _, id := range acked {
			if _, ok := s.Channels[id]; !ok {
				t.Errorf("acknowledged channel %s lost by Close", id)
			}
		}
		t.Logf("%d acknowledged before Close, %d after restart", len(acked), len(s.Channels))
	})
}
