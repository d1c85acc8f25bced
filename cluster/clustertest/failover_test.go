package clustertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/exchangekit/exchange/state"
)

// TestNodeLoss: a follower holding the primary channel of a target crashes;
// memberlist declares it dead, the leader removes its channels, the primary
// is re-elected on the target's channel on another node with a higher epoch,
// and commands flow again.
func TestNodeLoss(t *testing.T) {
	e := newEnv(t, 3)
	leader := e.leader()
	fs := e.followers()
	lost, other := fs[0], fs[1]

	first := e.connect("t-loss", lost, connOpts{only: true})
	ch1 := e.waitConnected(first)
	epoch1 := e.waitPrimary("t-loss", ch1)
	second := e.connect("t-loss", other, connOpts{only: true})
	ch2 := e.waitConnected(second)
	if p, _ := e.primaryOf(leader, "t-loss"); p != ch1 {
		t.Fatalf("primary %s, want the first channel %s (a new channel never steals the role)", p, ch1)
	}

	stopped := time.Now()
	e.Stop(lost)
	var told time.Duration
	waitFor(t, "the surviving connector told primary with a higher epoch", func() bool {
		for _, c := range second.calls() {
			if c.Primary && c.Epoch > epoch1 {
				told = c.At.Sub(stopped)
				return true
			}
		}
		return false
	})
	t.Logf("node %s stopped: the connector on %s was told primary %v later", lost.ID, other.ID, told)

	waitFor(t, "every replica to drop the lost node's channels", func() bool {
		gone := true
		for _, m := range []string{leader.ID, other.ID} {
			e.member(m).Node().View(func(s *state.State) { gone = gone && len(s.NodeChannels(lost.ID)) == 0 })
		}
		return gone
	})
	e.waitPrimary("t-loss", ch2)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, m := range []string{leader.ID, other.ID} {
		if _, err := e.ctl(e.member(m)).ctrl.SendPrimary(ctx, "t-loss", echo("after")); err != nil {
			t.Fatalf("SendPrimary from %s after the node loss: %v", m, err)
		}
	}
}
