package controller_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
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

// A connector busy with as many slow commands as the channel lets be in
// flight still answers health checks (control commands have capacity of
// their own): it is not evicted, and its commands complete.
func TestBusyConnectorPassesHealthChecks(t *testing.T) {
	const n = channel.DefaultMaxInFlight
	h := newHarness(t, healthConfig(5*time.Second))
	var started atomic.Int32
	release := make(chan struct{})
	slow := command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		started.Add(1)
		h.sig.fire()
		select {
		case <-release:
			return command.Succeeded(cmd, "done")
		case <-ctx.Done():
			return nil, fmt.Errorf("slow handler: %w", ctx.Err())
		}
	})
	c := h.connect(connOpts{target: "t1", handlers: map[command.Type]command.Handler{"SLOW": slow}})
	h.waitRegistered(c.id(), true)

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var (
		wg       sync.WaitGroup
		failed   atomic.Int32
		firstErr atomic.Pointer[error]
	)
	defer wg.Wait()
	defer cancel() // on a failure, do not wait for the slow commands
	for i := range n {
		wg.Go(func() {
			r, err := h.ctrl.Send(ctx, "t1", command.MustCommand("SLOW", i))
			if err == nil && !r.Succeeded() {
				err = fmt.Errorf("reply %+v", r)
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				h.sig.fire()
			}
		})
	}
	checkFailed := func() {
		t.Helper()
		if k := failed.Load(); k != 0 {
			t.Fatalf("%d of %d slow commands failed, want all to complete; first: %v", k, n, *firstErr.Load())
		}
	}
	evicted := func() bool {
		_, ok := h.ctrl.Channel(c.id())
		return !ok || h.metrics.count("health:error")+h.metrics.count("health:timeout") > 0
	}
	h.waitFor(fmt.Sprintf("%d slow commands running, or an eviction", n), func() bool {
		return started.Load() == n || evicted() || failed.Load() != 0
	})
	checkFailed()
	if evicted() {
		t.Fatalf("busy channel evicted with %d slow commands running (health failures: error %d, timeout %d)",
			started.Load(), h.metrics.count("health:error"), h.metrics.count("health:timeout"))
	}
	before := c.healthChecks()
	h.waitFor("3 more health checks answered, or an eviction", func() bool {
		info, ok := h.ctrl.Channel(c.id())
		return c.healthChecks() >= before+3 && ok && !info.LastHealthyAt.IsZero() || evicted()
	})
	if evicted() || len(c.goodbyeList()) != 0 {
		t.Fatalf("busy channel evicted (health failures: error %d, timeout %d; GOOD_BYEs %+v)",
			h.metrics.count("health:error"), h.metrics.count("health:timeout"), c.goodbyeList())
	}

	close(release)
	wg.Wait()
	checkFailed()
}

// A busy answer to a health check (a peer that reserves no capacity for
// control commands answers 429 with a retry-after) is not unhealthiness:
// the check is inconclusive and the channel stays.
func TestBusyHealthCheckIsInconclusive(t *testing.T) {
	h := newHarness(t, healthConfig(5*time.Second))
	busy := command.HandlerFunc(func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		r := command.Failed(cmd, "busy: 1024 commands already being handled")
		r.Code, r.RetryAfter = 429, 100*time.Millisecond
		return r, nil
	})
	c := h.connect(connOpts{target: "t1", handlers: map[command.Type]command.Handler{command.TypeHealthCheck: busy}})
	h.waitRegistered(c.id(), true)
	h.waitFor("3 busy health checks, or an eviction", func() bool {
		return c.receivedCount(command.TypeHealthCheck) >= 3 || h.metrics.count("health:error") > 0
	})
	if _, ok := h.ctrl.Channel(c.id()); !ok {
		t.Fatal("channel evicted for a busy health check")
	}
	if k := h.metrics.count("health:error") + h.metrics.count("health:timeout"); k != 0 || len(c.goodbyeList()) != 0 {
		t.Errorf("health failures %d, GOOD_BYEs %+v; want none", k, c.goodbyeList())
	}
	if info, _ := h.ctrl.Channel(c.id()); !info.LastHealthyAt.IsZero() {
		t.Errorf("LastHealthyAt = %v after busy checks only, want zero (inconclusive is not healthy)", info.LastHealthyAt)
	}
}

// TestHealthSweepAndPendingNoticesReported: every health round reports its
// duration, and the primary notifier reports its pending notices, back to
// zero once the channel believes its role.
func TestHealthSweepAndPendingNoticesReported(t *testing.T) {
	h := newHarness(t, healthConfig(5*time.Second))
	c := h.connect(connOpts{target: "t1"})
	h.waitFor("2 health rounds", func() bool { return h.metrics.count("sweep") >= 2 })
	h.waitFor("PRIMARY delivered, nothing pending", func() bool {
		b, ok := c.belief()
		return ok && b.Primary && h.metrics.count("pending") == 0
	})
	if got := h.metrics.count("pendingMax"); got < 1 {
		t.Errorf("pending notices peaked at %d, want ≥ 1 (the notice in flight)", got)
	}
}
