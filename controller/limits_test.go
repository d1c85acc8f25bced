package controller_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/channel"
)

// A node at MaxChannels refuses the next connection before its HELLO, so
// the connector tries another node; one channel leaving makes room again.
func TestMaxChannelsPerNode(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxChannels = 2
	h := newHarness(t, cfg)
	a := h.connect(connOpts{target: "t1"})
	h.waitRegistered(a.id(), true)
	b := h.connect(connOpts{target: "t2"})
	h.waitRegistered(b.id(), true)
	if c, err := h.dial(t.Context(), connOpts{target: "t3"}); err == nil {
		c.close()
		t.Fatal("a third channel was accepted on a node limited to 2")
	} else if rej := (*channel.HelloRejectedError)(nil); errors.As(err, &rej) {
		t.Errorf("refusal = %v: a rejected HELLO stops a connector for good; this one must be retryable", err)
	}
	a.close()
	h.waitRegistered(a.id(), false)
	c := h.connect(connOpts{target: "t3"})
	h.waitRegistered(c.id(), true)
}

// A target at MaxChannelsPerTarget refuses one more channel (code 429), but
// not a reconnecting connector, which takes its own channel over.
func TestMaxChannelsPerTarget(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxChannelsPerTarget = 2
	h := newHarness(t, cfg)
	a := h.connect(connOpts{target: "t", connectorID: "a"})
	h.waitRegistered(a.id(), true)
	b := h.connect(connOpts{target: "t", connectorID: "b"})
	h.waitRegistered(b.id(), true)
	_, err := h.dial(t.Context(), connOpts{target: "t", connectorID: "c"})
	var rej *channel.HelloRejectedError
	if !errors.As(err, &rej) || rej.Code != 429 || !strings.Contains(rej.Reason, `target "t" already has 2 channels`) {
		t.Fatalf("third connector of t: %v, want a HELLO refused with code 429 naming the limit", err)
	}
	a2 := h.connect(connOpts{target: "t", connectorID: "a"}) // a reconnects: takes its channel over
	h.waitRegistered(a2.id(), true)
	h.waitRegistered(a.id(), false)
	other := h.connect(connOpts{target: "u"}) // other targets are not affected
	h.waitRegistered(other.id(), true)
}
