package cluster_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster/clustertest"
)

// A node that leaves gracefully is removed from the raft voters by the
// leader, so the quorum no longer counts it; a leader that leaves hands its
// role over first.
func TestLeaveRemovesVoter(t *testing.T) {
	h := clustertest.NewHarness(t, 3, testLogger(t))
	leader := h.Leader()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := leader.Node().Leave(ctx); err != nil {
		t.Fatalf("Leave() = %v", err)
	}
	h.Stop(leader)
	var next *clustertest.Member
	for next == nil {
		if m := h.WaitReady(ctx); m != leader {
			next = m
		}
	}
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		members := next.Node().Stats().Members
		var voters []string
		for _, m := range members {
			if m.Suffrage == "Voter" {
				voters = append(voters, m.NodeID)
			}
		}
		if len(voters) == 2 && !slices.Contains(voters, leader.ID) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("voters never shrank to 2 after %s left: %+v", leader.ID, members)
		case <-poll.C:
		}
	}
}
