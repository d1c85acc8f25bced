package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/testlog"
	"github.com/exchangekit/exchange/state"
)

// partitionTimeout bounds each partition test as a whole.
const partitionTimeout = 30 * time.Second

// Isolating the leader of 3 nodes: the other two elect a leader and keep
// accepting writes; the old leader steps down, its Applies fail and it is
// not ready; once gossip declares it dead, the new leader removes its
// channels. After Heal it rejoins (gossip and raft), catches up with the
// leader's state, and the cluster has one leader again.
func TestPartitionIsolateLeaderThenHeal(t *testing.T) {
	h := clustertest.NewHarness(t, 3, testLogger(t))
	ctx, cancel := context.WithTimeout(t.Context(), partitionTimeout)
	defer cancel()
	old := h.Leader()
	var majority []*clustertest.Member
	for _, m := range h.Nodes() {
		if m != old {
			majority = append(majority, m)
		}
	}
	apply(ctx, t, old.Node(), register("ch-old", "target-a", old.ID))

	start := time.Now()
	h.Network().Isolate(old.ID)

	var leader, follower *clustertest.Member
	waitUntil(ctx, t, "a leader on the majority side", func() error {
		for i, m := range majority {
			o := majority[1-i]
			if m.Node().Leader() && o.Node().LeaderID() == m.ID {
				leader, follower = m, o
				return nil
			}
		}
		return fmt.Errorf("majority: %s", describe(majority...))
	})
	elected := time.Since(start)
	apply(ctx, t, leader.Node(), register("ch-leader", "target-b", leader.ID))
	apply(ctx, t, follower.Node(), register("ch-follower", "target-b", follower.ID)) // over its link to the leader

	waitUntil(ctx, t, "the isolated leader stepping down", func() error {
		if old.Node().Leader() {
			return errors.New("still leader")
		}
		return nil
	})
	steppedDown := time.Since(start)
	actx, acancel := context.WithTimeout(ctx, time.Second)
	_, err := old.Node().Apply(actx, register("ch-lost", "target-c", old.ID))
	acancel()
	if err == nil {
		t.Fatal("Apply on the isolated node succeeded")
	}
	t.Logf("Apply on the isolated node: %v", err)
	if ctx.Err() != nil {
		t.Fatalf("Apply on the isolated node did not return within its ctx")
	}
	waitUntil(ctx, t, "the isolated node not ready", func() error {
		if old.Node().Ready() == nil {
			return errors.New("ready")
		}
		return nil
	})

	waitUntil(ctx, t, "the new leader removing the isolated node's channels", func() error {
		var held []string
		leader.Node().View(func(s *state.State) {
			for id, ch := range s.Channels {
				if ch.NodeID == old.ID {
					held = append(held, id)
				}
			}
		})
		if len(held) > 0 {
			return fmt.Errorf("channels still held by %s: %v", old.ID, held)
		}
		return nil
	})
	removed := time.Since(start)

	healed := time.Now()
	h.Network().Heal()
	caughtUp := waitCaughtUp(ctx, t, h)
	caughtUpIn := time.Since(healed)
	// The rejoining node must not take the leadership by disrupting the
	// majority (pre-vote). The majority's own leader may still change hands
	// between its two members on a loaded machine (a heartbeat late by more
	// than the election timeout), which is raft doing its job.
	switch caughtUp.ID {
	case leader.ID:
	case old.ID:
		t.Errorf("leader after heal = %s, the node that was isolated; want %s, elected by the majority", caughtUp.ID, leader.ID)
	default:
		t.Logf("leader after heal = %s: the majority's leadership moved from %s meanwhile", caughtUp.ID, leader.ID)
	}
	// Gossip and links are back both ways: the rejoined node reaches the
	// leader (an Apply over its link) and the leader reaches it (a forward).
	apply(ctx, t, old.Node(), register("ch-back", "target-a", old.ID))
	old.Node().HandleForward(func(_ context.Context, _ state.ChannelID, cmd *command.Command) (*command.Reply, error) {
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded}, nil
	})
	waitUntil(ctx, t, "a forward from the leader to the rejoined node", func() error {
		_, err := leader.Node().Forward(ctx, state.NodeID(old.ID), "ch-back", &command.Command{ID: command.NewID(), Type: command.TypeHealthCheck})
		return err
	})
	rejoined := time.Since(healed)
	t.Logf("isolated the leader: new leader in %v, old leader stepped down in %v, its channels removed in %v; "+
		"healed: caught up in %v, links both ways in %v",
		elected.Round(time.Millisecond), steppedDown.Round(time.Millisecond), removed.Round(time.Millisecond),
		caughtUpIn.Round(time.Millisecond), rejoined.Round(time.Millisecond))
}

// Splitting 5 nodes into 2 and 3: only the 3 have a leader and accept
// writes; after Heal all 5 agree on the leader and the state.
func TestPartitionSplitFiveThenHeal(t *testing.T) {
	h := clustertest.NewHarness(t, 5, testLogger(t))
	ctx, cancel := context.WithTimeout(t.Context(), partitionTimeout)
	defer cancel()
	first := h.Leader()
	// The leader goes to the minority side: the majority must elect.
	var minority, majority []*clustertest.Member
	minority = append(minority, first)
	for _, m := range h.Nodes() {
		switch {
		case m == first:
		case len(minority) < 2:
			minority = append(minority, m)
		default:
			majority = append(majority, m)
		}
	}
	apply(ctx, t, first.Node(), register("ch-before", "target-a", minority[1].ID))

	start := time.Now()
	h.Network().Partition(ids(minority), ids(majority))
	var leader *clustertest.Member
	waitUntil(ctx, t, "one leader on the majority side, agreed by its 3 nodes", func() error {
		leader = nil
		for _, m := range majority {
			if m.Node().Leader() {
				leader = m
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader: %s", describe(majority...))
		}
		for _, m := range majority {
			if m.Node().LeaderID() != leader.ID {
				return fmt.Errorf("not agreed: %s", describe(majority...))
			}
		}
		return nil
	})
	elected := time.Since(start)
	waitUntil(ctx, t, "no leader on the minority side", func() error {
		for _, m := range minority {
			if m.Node().Leader() || m.Node().LeaderID() != "" {
				return fmt.Errorf("minority: %s", describe(minority...))
			}
		}
		return nil
	})
	for i, m := range majority {
		apply(ctx, t, m.Node(), register(fmt.Sprintf("ch-major-%d", i), "target-b", m.ID))
	}
	for _, m := range minority {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		_, err := m.Node().Apply(actx, register("ch-minor-"+m.ID, "target-c", m.ID))
		acancel()
		if err == nil {
			t.Fatalf("Apply on minority node %s succeeded", m.ID)
		}
	}

	healed := time.Now()
	h.Network().Heal()
	waitCaughtUp(ctx, t, h)
	caughtUp := time.Since(healed)
	for _, m := range h.Nodes() {
		apply(ctx, t, m.Node(), register("ch-after-"+m.ID, "target-d", m.ID))
	}
	waitCaughtUp(ctx, t, h)
	t.Logf("split 2+3: majority leader in %v; healed: all 5 caught up in %v",
		elected.Round(time.Millisecond), caughtUp.Round(time.Millisecond))
}

// waitCaughtUp waits until every node is ready, they agree on one leader
// (no other node thinks it leads), and every replica's channels, primaries
// and epoch equal the leader's. It returns the leader.
func waitCaughtUp(ctx context.Context, t *testing.T, h *clustertest.Harness) *clustertest.Member {
	t.Helper()
	var leader *clustertest.Member
	waitUntil(ctx, t, "every node caught up with one leader", func() error {
		leader = nil
		for _, m := range h.Nodes() {
			n := m.Node()
			if err := n.Ready(); err != nil {
				return fmt.Errorf("%s not ready: %w", m.ID, err)
			}
			if n.Leader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.ID, m.ID)
				}
				leader = m
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		want := replica(leader.Node())
		for _, m := range h.Nodes() {
			if id := m.Node().LeaderID(); id != leader.ID {
				return fmt.Errorf("%s follows %q, not %s", m.ID, id, leader.ID)
			}
			if d := cmp.Diff(want, replica(m.Node())); d != "" {
				return fmt.Errorf("%s's replica differs from the leader's (-leader +%s):\n%s", m.ID, m.ID, d)
			}
		}
		return nil
	})
	return leader
}

// registry is the part of a replica the tests compare.
type registry struct {
	Channels  map[string]*state.Channel
	Primaries map[string]*state.Primary
	Epoch     uint64
}

// replica copies n's registry (through the state's persisted form, so it
// outlives View).
func replica(n *cluster.Node) registry {
	var b []byte
	var err error
	n.View(func(s *state.State) { b, err = s.Marshal() })
	if err != nil {
		panic(err)
	}
	s, err := state.Unmarshal(b)
	if err != nil {
		panic(err)
	}
	return registry{Channels: s.Channels, Primaries: s.Primaries, Epoch: s.Epoch}
}

func register(id, target, node string) state.Op {
	return state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
		ID: id, TargetID: target, ConnectorID: "conn-" + id, NodeID: node, Active: true,
		RegisteredAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}}}
}

// apply applies ops on n and fails the test if an op fails. A failure of
// the Apply as a whole is retried until ctx ends: the cluster runs with the
// production timings (a 150 ms leader lease), which a loaded -race run can
// miss, so a leader may step down and be re-elected at any time, and the
// Apply in flight then fails ("leadership lost"). An op that fails with
// ErrExists on a retry was applied by an earlier attempt.
func apply(ctx context.Context, t *testing.T, n *cluster.Node, ops ...state.Op) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for attempt := 0; ; attempt++ {
		rs, err := n.Apply(ctx, ops...)
		if err == nil {
			for _, r := range rs {
				if err := state.ResultsErr([]state.Result{r}); err != nil && (attempt == 0 || !errors.Is(err, state.ErrExists)) {
					t.Fatalf("Apply() on %s: %v", n.NodeID(), err)
				}
			}
			return
		}
		t.Logf("Apply() on %s = %v; retrying", n.NodeID(), err)
		select {
		case <-ctx.Done():
			t.Fatalf("Apply() on %s = %v", n.NodeID(), err)
		case <-tick.C:
		}
	}
}

// waitFor polls cond until it returns nil, failing the test with its last
// error when ctx ends.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() error) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-tick.C:
		}
	}
}

func ids(ms []*clustertest.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func describe(ms ...*clustertest.Member) string {
	var b strings.Builder
	for _, m := range ms {
		n := m.Node()
		fmt.Fprintf(&b, "[%s %s leader=%q] ", m.ID, n.RaftState(), n.LeaderID())
	}
	return b.String()
}

// testLogger returns a logger writing to t.Log until the test ends.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t, slog.LevelInfo) }
