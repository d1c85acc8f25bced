package cluster_test

import (
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/state"
)

// TestStatsThreeNodes checks what GET /exchange/cluster is made of on a real
// cluster: every node of the raft configuration, joined with its gossip
// entry, and a follower's last contact with the leader.
func TestStatsThreeNodes(t *testing.T) {
	h := clustertest.NewHarness(t, 3, testLogger(t))
	leader := h.Leader()
	applyEach(t, leader.Node(), []state.Op{register("c1", "t1")})
	index := leader.Node().AppliedIndex()
	for _, m := range h.Nodes() {
		waitApplied(t, m.Node(), index)
		st := m.Node().Stats()
		if st.NodeID != m.ID || st.LeaderID != leader.ID || st.Term == 0 || st.CommitIndex < index || st.AppliedIndex < index {
			t.Errorf("%s: Stats() = %+v", m.ID, st)
		}
		switch {
		case m == leader && (st.State != "Leader" || !st.LastContact.IsZero()):
			t.Errorf("%s (leader): state %s, last contact %v; want Leader, none", m.ID, st.State, st.LastContact)
		case m != leader && (st.State != "Follower" || st.LastContact.IsZero() || time.Since(st.LastContact) > time.Minute):
			t.Errorf("%s (follower): state %s, last contact %v; want Follower, recent", m.ID, st.State, st.LastContact)
		}
		if len(st.Members) != 3 {
			t.Fatalf("%s: %d members, want 3: %+v", m.ID, len(st.Members), st.Members)
		}
		for i, mem := range st.Members {
			want := h.Nodes()[i]
			if mem.NodeID != want.ID || mem.Suffrage != "Voter" || mem.GossipState != "alive" || mem.GossipAddr == "" ||
				mem.GRPCAddr != want.GRPCAddr() || mem.Address != want.Node().RaftAddr() || mem.Leader != (want == leader) {
				t.Errorf("%s sees member %d = %+v, want %s alive, voter, at %s", m.ID, i, mem, want.ID, want.Node().RaftAddr())
			}
		}
	}
}
