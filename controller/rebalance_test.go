package controller_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/controller"
)

// After a node joins, a node holding more than its fair share asks some of
// its connectors to reconnect elsewhere: never the primary's, never one with
// commands in flight; each move is an event.
func TestRebalanceAfterJoin(t *testing.T) {
	var live atomic.Int32
	live.Store(1)
	cfg := fastConfig()
	cfg.RebalanceDelay = 50 * time.Millisecond
	cfg.ClusterInfo = func() controller.ClusterInfo {
		info := controller.ClusterInfo{NodeID: "node-a", LeaderID: "node-a", State: "Leader"}
		for i := range int(live.Load()) {
			info.Members = append(info.Members, controller.MemberInfo{NodeID: string(rune('a' + i)), State: "alive"})
		}
		return info
	}
	h := newHarness(t, cfg)
	var conns []*connector
	for range 4 {
		c := h.connect(connOpts{target: "t1"})
		h.waitRegistered(c.id(), true)
		conns = append(conns, c)
	}
	ti, _ := h.ctrl.Target("t1")
	primary := ti.PrimaryID

	live.Store(2) // a node joined: fair share 2 of 4
	h.waitFor("two channels moved", func() bool {
		n := 0
		for _, e := range h.events.all() {
			if e.Kind == controller.EventChannelMoved {
				n++
			}
		}
		return n == 2
	})
	moved := 0
	for _, c := range conns {
		c.mu.Lock()
		told := len(c.goodbyes) > 0 && c.goodbyes[0].Reconnect
		c.mu.Unlock()
		if told {
			moved++
			if c.id() == primary {
				t.Errorf("the primary channel %s was moved", primary)
			}
		}
	}
	if moved != 2 {
		t.Errorf("%d connectors told to reconnect, want 2", moved)
	}
}
