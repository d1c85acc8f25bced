package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/state"
)

// churn returns ops that register channels on a few targets and unregister
// some of them, so that primaries move and epochs grow.
func churn(prefix string, channels int) []state.Op {
	var ops []state.Op
	for i := range channels {
		ops = append(ops, register(fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("t%d", i%4)))
		if i%3 == 2 {
			ops = append(ops, unregister(fmt.Sprintf("%s%d", prefix, i-2)))
		}
	}
	return ops
}

func applyEach(t *testing.T, n *cluster.Node, ops []state.Op) {
	t.Helper()
	ctx := testCtx(t)
	for _, op := range ops {
		if err := state.Err(n.Apply(ctx, op)); err != nil {
			t.Fatalf("Apply() = %v", err)
		}
	}
}

// TestSnapshotPlusTailEqualsReplay is the twin principle for persistence: a
// node restarted from a snapshot plus the log tail after it has exactly the
// state that replaying every op on a fresh state.State gives.
func TestSnapshotPlusTailEqualsReplay(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.TrailingLogs = 0 // a snapshot compacts the whole log: what it covers must come from it
	n := open(t, cfg)

	head, tail := churn("a", 30), churn("b", 20)
	tail = append(tail, unregister("a29"), unregister("a27"), register("a0", "t0"))
	applyEach(t, n, head)
	if err := n.Snapshot(testCtx(t)); err != nil {
		t.Fatalf("Snapshot() = %v", err)
	}
	snapIndex := n.Stats().LastSnapshotIndex
	applyEach(t, n, tail)
	closeNode(t, n)

	n = open(t, cfg)
	want := replay(append(append([]state.Op(nil), head...), tail...)...)
	if d := diffState(want, snapshotOf(t, n)); d != "" {
		t.Errorf("snapshot + tail differs from a replay of every op:\n%s", d)
	}
	first, err := cluster.FirstLogIndex(n)
	if err != nil {
		t.Fatalf("FirstLogIndex() = %v", err)
	}
	if snapIndex < uint64(len(head)) || first <= snapIndex {
		t.Errorf("snapshot index %d, first log index %d: want the head (%d entries) only in the snapshot",
			snapIndex, first, len(head))
	}
	if got := n.Stats().LastSnapshotIndex; got != snapIndex {
		t.Errorf("LastSnapshotIndex after reopen = %d, want %d", got, snapIndex)
	}
}

// TestRestoreNotifiesSubscribers restores an older snapshot into a running
// node (raft's operator restore, which is also what a lagging follower goes
// through): the state is replaced and subscribers get one StateRestored.
func TestRestoreNotifiesSubscribers(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	applyEach(t, n, churn("a", 9))
	r := cluster.RaftOf(n)
	f := r.Snapshot()
	if err := wait(t, f.Error); err != nil {
		t.Fatalf("raft.Snapshot() = %v", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		t.Fatalf("Open(snapshot) = %v", err)
	}
	defer rc.Close()
	want := snapshotOf(t, n)
	applyEach(t, n, churn("b", 6))

	var rec recorder
	defer n.Subscribe(rec.record)()
	if err := wait(t, func() error { return r.Restore(meta, rc, defaultTestTimeout) }); err != nil {
		t.Fatalf("raft.Restore() = %v", err)
	}
	if d := cmp.Diff([][]state.Event{{{Kind: state.StateRestored}}}, rec.get()); d != "" {
		t.Errorf("subscriber events (-want +got):\n%s", d)
	}
	if d := diffState(want, snapshotOf(t, n)); d != "" {
		t.Errorf("state after restore differs from the snapshot's:\n%s", d)
	}
	// The node keeps working from the restored state.
	if err := state.Err(n.Apply(ctx, register("b0", "t0"))); err != nil {
		t.Errorf("Apply(b0) after restore = %v, want nil (b0 came after the snapshot)", err)
	}
	if err := state.Err(n.Apply(ctx, register("a1", "t1"))); !errors.Is(err, state.ErrExists) {
		t.Errorf("Apply(a1) after restore = %v, want state.ErrExists", err)
	}
}

// TestBadEntry checks the log envelope: an entry of an unknown version is
// rejected the same way on every node, never half-applied.
func TestBadEntry(t *testing.T) {
	ctx := testCtx(t)
	n := open(t, testConfig(t, t.TempDir()))
	b, err := cluster.EncodeEntry([]state.Op{register("c1", "t1")})
	if err != nil {
		t.Fatalf("EncodeEntry() = %v", err)
	}
	ops, err := cluster.DecodeEntry(b)
	if err != nil || len(ops) != 1 || ops[0].Register.Channel.ID != "c1" {
		t.Fatalf("DecodeEntry(EncodeEntry(c1)) = %+v, %v", ops, err)
	}
	for _, data := range []string{`{"v":2,"ops":[{"register":{"channel":{"id":"c1","targetId":"t1"}}}]}`, `{"v":`} {
		f := cluster.RaftOf(n).Apply([]byte(data), defaultTestTimeout)
		if err := wait(t, f.Error); err != nil {
			t.Fatalf("raft.Apply(%s) = %v", data, err)
		}
		if err := cluster.ApplyResultError(f.Response()); !errors.Is(err, cluster.ErrBadEntry) {
			t.Errorf("FSM response to %s = %v, want cluster.ErrBadEntry", data, err)
		}
	}
	n.View(func(s *state.State) {
		if len(s.Channels) != 0 {
			t.Errorf("bad entries changed the state: %d channels", len(s.Channels))
		}
	})
	if err := state.Err(n.Apply(ctx, register("c1", "t1"))); err != nil {
		t.Errorf("Apply() after bad entries = %v", err)
	}
}

// TestRaftErrors checks how raft's future errors map to this package's.
func TestRaftErrors(t *testing.T) {
	n := open(t, testConfig(t, t.TempDir()))
	var nl *cluster.NotLeaderError
	if err := cluster.RaftError(n, raft.ErrNotLeader); !errors.Is(err, cluster.ErrNotLeader) || !errors.As(err, &nl) {
		t.Errorf("RaftError(ErrNotLeader) = %v, want a *NotLeaderError", err)
	} else if nl.LeaderID != "node-1" || nl.LeaderAddress != n.RaftAddr() {
		t.Errorf("NotLeaderError = %+v, want leader node-1 at %s", nl, n.RaftAddr())
	}
	for _, tc := range []struct{ in, want error }{
		{raft.ErrLeadershipLost, cluster.ErrLeadershipLost},
		{raft.ErrRaftShutdown, cluster.ErrClosed},
		{raft.ErrEnqueueTimeout, context.DeadlineExceeded},
	} {
		if err := cluster.RaftError(n, tc.in); !errors.Is(err, tc.want) {
			t.Errorf("RaftError(%v) = %v, want errors.Is(err, %v)", tc.in, err, tc.want)
		}
	}
}
