package controller_test

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
)

// cutOffStore is a one-node cluster whose leader can go silent.
type cutOffStore struct {
	*standalone.Cluster
	cut atomic.Bool
}

func (s *cutOffStore) LeaderContact() time.Time {
	if s.cut.Load() {
		return time.Time{}
	}
	return time.Now()
}

// A node cut off from the leader longer than IsolationTimeout sends its
// connectors away (GOOD_BYE with reconnect) and refuses new ones, retryably,
// until it hears the leader again.
func TestIsolatedNodeSendsConnectorsAway(t *testing.T) {
	store := &cutOffStore{Cluster: standalone.New("node-a")}
	cfg := fastConfig()
	cfg.IsolationTimeout = 50 * time.Millisecond
	h := newHarness(t, cfg, harnessOpts{store: store})
	c := h.connect(connOpts{target: "t1"})
	h.waitRegistered(c.id(), true)

	store.cut.Store(true)
	h.waitFor("GOOD_BYE{reconnect:true}", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.goodbyes) == 1 && c.goodbyes[0].Reconnect
	})
	h.waitClosed(c)
	h.waitFor("node_isolated event", func() bool { return hasEvent(h, controller.EventIsolated) })
	// Refused before HELLO (over gRPC: RESOURCE_EXHAUSTED, which connectors
	// retry on their next endpoint; the embedded twin just closes).
	if c2, err := h.dial(t.Context(), connOpts{target: "t1"}); err == nil {
		c2.close()
		t.Error("a connector was accepted while the node is isolated")
	} else if rej := (*channel.HelloRejectedError)(nil); errors.As(err, &rej) {
		t.Errorf("dial while isolated = %v: a rejected HELLO stops a connector for good", err)
	}

	store.cut.Store(false)
	h.waitFor("node_rejoined event", func() bool { return hasEvent(h, controller.EventRejoined) })
	c2 := h.connect(connOpts{target: "t1"})
	h.waitRegistered(c2.id(), true)
}

func hasEvent(h *harness, k controller.EventKind) bool {
	return slices.ContainsFunc(h.events.all(), func(e controller.Event) bool { return e.Kind == k })
}
