package clustertest_test

import (
	"context"
	"testing"

	"github.com/exchangekit/exchange/state"
)

// epochs reads every target's epoch and the state's epoch counter in m's
// replica.
func (e *env) epochs(id string) (map[string]uint64, uint64) {
	out := map[string]uint64{}
	var counter uint64
	e.member(id).Node().View(func(s *state.State) {
		for target, p := range s.Primaries {
			out[target] = p.Epoch
		}
		counter = s.Epoch
	})
	return out, counter
}

// TestFullClusterRestart: every node crashes and comes back; no acknowledged
// batch is lost (finished ones stay finished, waiting ones finish once their
// target's connector comes), and no epoch goes back.
func TestFullClusterRestart(t *testing.T) {
	e := newEnv(t, 3)
	nodes := e.h.Nodes()
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitTimeout)
	defer cancel()

	st := newStepper(false)
	c1 := e.connect("t-r1", nodes[0], connOpts{mux: st.mux()})
	c2 := e.connect("t-r2", nodes[1], connOpts{})
	e.waitPrimary("t-r1", e.waitConnected(c1))
	e.waitPrimary("t-r2", e.waitConnected(c2))

	var done, waiting []string
	for i := range 3 {
		r := e.ctl(nodes[i]).runner
		b, err := r.AwaitBatch(ctx, execute(t, ctx, r, steps("t-r1", 3)).ID)
		if err != nil {
			t.Fatal(err)
		}
		checkSucceeded(t, b)
		done = append(done, b.ID)
		waiting = append(waiting, execute(t, ctx, r, steps("t-later", 2)).ID)
	}
	before, counterBefore := e.epochs(e.leader().ID)
	t.Logf("before: epochs %v, counter %d", before, counterBefore)

	for _, m := range nodes {
		e.Stop(m)
	}
	// One at a time, as an orchestrator may bring them back: a node that
	// holds raft state must start without waiting for a gossip peer.
	for _, m := range nodes {
		e.Restart(m)
	}
	// Ready means caught up: right after it, every replica holds every
	// acknowledged change.
	leader := e.leader()

	for _, m := range nodes {
		after, counter := e.epochs(m.ID)
		if counter < counterBefore {
			t.Errorf("%s: the epoch counter went back from %d to %d", m.ID, counterBefore, counter)
		}
		for target, ep := range after {
			if ep < before[target] {
				t.Errorf("%s: %s's epoch went back from %d to %d", m.ID, target, before[target], ep)
			}
		}
		r := e.ctl(m).runner
		for _, id := range done {
			b, err := r.GetBatch(id)
			if err != nil {
				t.Fatalf("%s: finished batch %s lost: %v", m.ID, id, err)
			}
			checkSucceeded(t, b)
		}
		for _, id := range waiting {
			b, err := r.GetBatch(id)
			if err != nil {
				t.Fatalf("%s: waiting batch %s lost: %v", m.ID, id, err)
			}
			if b.Status.Terminal() {
				t.Fatalf("%s: batch %s for a target that never connected is %s", m.ID, id, b.Status)
			}
		}
	}

	// The connectors come back (they fail over until their node is up) and
	// are elected again, at higher epochs.
	for _, c := range []*conn{c1, c2} {
		target := c.c.TargetID()
		waitFor(t, target+" primary again above its epoch before the restart", func() bool {
			p, ep := e.primaryOf(leader, target)
			return p != "" && ep > before[target]
		})
	}

	// The waiting batches run once their target connects.
	later := e.connect("t-later", nodes[2], connOpts{mux: newStepper(false).mux()})
	e.waitConnected(later)
	r := e.ctl(nodes[1]).runner
	for _, id := range waiting {
		b, err := r.AwaitBatch(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		checkSucceeded(t, b)
	}
	// Batches finished before the restart were not run again.
	if n := len(st.ran()); n != 3*3 {
		t.Fatalf("the t-r1 connector ran %d commands, want 9 (none again after the restart)", n)
	}
}
