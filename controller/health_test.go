package controller_test

import (
	"testing"
	"time"

	"github.com/exchangekit/exchange/controller"
)

// healthConfig runs the health loop every 20 ms.
func healthConfig(timeout time.Duration) controller.Config {
	cfg := fastConfig()
	cfg.HealthInterval = 20 * time.Millisecond
	cfg.HealthTimeout = timeout
	return cfg
}

// Reference ChannelManagerTest.should_receive_healthCheck_command: a healthy
// channel is checked every interval and stays registered.
func TestHealthCheckKeepsHealthyChannel(t *testing.T) {
	h := newHarness(t, healthConfig(5*time.Second))
	c := h.connect(connOpts{target: "t1"})
	h.waitFor("3 health checks", func() bool { return c.healthChecks() >= 3 })
	h.waitFor("LastHealthyAt", func() bool {
		info, ok := h.ctrl.Channel(c.id())
		return ok && !info.LastHealthyAt.IsZero()
	})
	if _, ok := h.ctrl.Channel(c.id()); !ok {
		t.Fatalf("healthy channel was unregistered")
	}
	if n := len(c.goodbyeList()); n != 0 {
		t.Errorf("healthy channel got %d GOOD_BYEs", n)
	}
}

// Reference ChannelManagerTest.should_unregister_receive_unhealthy_healthCheck_command.
func TestUnhealthyChannelIsEvicted(t *testing.T) {
	h := newHarness(t, healthConfig(5*time.Second))
	c := h.connect(connOpts{target: "t1", health: "unhealthy"})
	h.waitFor("eviction", func() bool { return h.metrics.count("health:unhealthy") == 1 })
	h.waitRegistered(c.id(), false)
	if got := c.goodbyeList(); len(got) != 1 || !got[0].Reconnect || got[0].TargetID != "t1" {
		t.Errorf("GOOD_BYEs = %+v, want one with reconnect", got)
	}
	h.waitClosed(c)
}

// A channel that never answers HEALTH_CHECK is evicted after the timeout.
func TestSilentChannelIsEvicted(t *testing.T) {
	h := newHarness(t, healthConfig(50*time.Millisecond))
	c := h.connect(connOpts{target: "t1", health: "silent"})
	h.waitFor("eviction", func() bool { return h.metrics.count("health:timeout") == 1 })
	h.waitRegistered(c.id(), false)
	if got := c.goodbyeList(); len(got) != 1 || !got[0].Reconnect {
		t.Errorf("GOOD_BYEs = %+v, want one with reconnect", got)
	}
	if _, ok := h.ctrl.Target("t1"); ok {
		t.Errorf("target still listed")
	}
}

// A connector with no HEALTH_CHECK handler answers UNKNOWN: an error.
func TestHealthCheckErrorEvicts(t *testing.T) {
	h := newHarness(t, healthConfig(5*time.Second))
	conn, err := h.dialer.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	hello, err := channelHello(t, conn, "t1")
	if err != nil {
		t.Fatal(err)
	}
	ch := newBareChannel(conn) // answers nothing: UNKNOWN to all
	defer ch.Close()
	h.waitFor("eviction", func() bool { return h.metrics.count("health:error") == 1 })
	h.waitRegistered(hello.ChannelID, false)
}

// A connection still in its handshake is never health-checked or evicted
// (reference weakness 25).
func TestHandshakeIsNotEvictedByHealthLoop(t *testing.T) {
	h := newHarness(t, healthConfig(5*time.Second))
	conn, err := h.dialer.Dial(t.Context()) // says nothing yet
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	witness := h.connect(connOpts{target: "t0"})
	h.waitFor("several health rounds", func() bool { return witness.healthChecks() >= 3 })

	late, err := h.attach(t.Context(), conn, connOpts{target: "t1"})
	if err != nil {
		t.Fatalf("late HELLO refused: %v", err)
	}
	defer late.close()
	h.waitRegistered(late.id(), true)
	if n := h.metrics.count("health:timeout") + h.metrics.count("health:error"); n != 0 {
		t.Errorf("%d health evictions", n)
	}
}
