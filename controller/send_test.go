package controller_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// Reference ChannelManagerTest.should_send_command_to_channel.
func TestSendReachesHandler(t *testing.T) {
	h := newHarness(t, fastConfig())
	c := h.connect(connOpts{target: "t1", handlers: map[command.Type]command.Handler{"ECHO": echo}})
	h.waitRegistered(c.id(), true)
	reply, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand("ECHO", map[string]string{"say": "hi"}))
	if err != nil {
		t.Fatalf("Send() = %v", err)
	}
	got, err := command.Decode[map[string]string](reply.Payload)
	if err != nil || got["say"] != "hi" || !reply.Succeeded() {
		t.Errorf("reply = %+v (%v)", reply, err)
	}
	if c.receivedCount("ECHO") != 1 {
		t.Errorf("connector saw %d ECHO", c.receivedCount("ECHO"))
	}
}

// Reference ChannelManagerTest.should_return_error_when_sending_command_without_channel:
// at once, never a timeout (weaknesses 3, 4).
func TestSendWithoutChannel(t *testing.T) {
	h := newHarness(t, fastConfig())
	start := time.Now()
	_, err := h.ctrl.Send(t.Context(), "nobody", command.MustCommand("ECHO", nil))
	var nc *controller.NoChannelError
	if !errors.As(err, &nc) || nc.TargetID != "nobody" || nc.Primary || !errors.Is(err, controller.ErrNoChannel) {
		t.Fatalf("Send() = %v, want *NoChannelError", err)
	}
	_, err = h.ctrl.SendPrimary(t.Context(), "nobody", command.MustCommand("ECHO", nil))
	if !errors.As(err, &nc) || !nc.Primary {
		t.Fatalf("SendPrimary() = %v, want *NoChannelError{Primary}", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("no-channel errors took %s", d)
	}
}

// Send picks the local channel with the fewest commands in flight
// (weakness 10).
func TestSendPicksLeastBusyChannel(t *testing.T) {
	h := newHarness(t, fastConfig())
	release := make(chan struct{})
	slow := command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &command.Reply{Status: command.StatusSucceeded}, nil
	})
	handlers := map[command.Type]command.Handler{"SLOW": slow, "ECHO": echo}
	c1 := h.connect(connOpts{target: "t1", handlers: handlers})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
	c2 := h.connect(connOpts{target: "t1", handlers: handlers})
	h.waitBelief(c2, command.PrimaryPayload{Primary: false, Epoch: 1})
	// The PRIMARY replies may still be on their way back: wait until the
	// controller has nothing in flight on either channel.
	idleBoth := func() bool {
		i1, _ := h.ctrl.Channel(c1.id())
		i2, _ := h.ctrl.Channel(c2.id())
		return i1.InFlight == 0 && i2.InFlight == 0
	}
	h.waitFor("nothing in flight", idleBoth)

	slowDone := make(chan error, 1)
	go func() {
		_, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand("SLOW", nil))
		slowDone <- err
	}()
	h.waitFor("SLOW received", func() bool { return c1.receivedCount("SLOW")+c2.receivedCount("SLOW") == 1 })
	busy, idle := c1, c2
	if c2.receivedCount("SLOW") == 1 {
		busy, idle = c2, c1
	}
	for range 6 {
		if _, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand("ECHO", nil)); err != nil {
			t.Fatalf("Send(ECHO) = %v", err)
		}
	}
	if busy.receivedCount("ECHO") != 0 || idle.receivedCount("ECHO") != 6 {
		t.Errorf("ECHO went %d to the busy channel, %d to the idle one; want 0 and 6",
			busy.receivedCount("ECHO"), idle.receivedCount("ECHO"))
	}
	close(release)
	if err := <-slowDone; err != nil {
		t.Errorf("Send(SLOW) = %v", err)
	}
	h.waitFor("nothing in flight", idleBoth)

	// Idle channels take turns.
	for range 6 {
		if _, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand("ECHO", nil)); err != nil {
			t.Fatalf("Send(ECHO) = %v", err)
		}
	}
	if busy.receivedCount("ECHO") != 3 || idle.receivedCount("ECHO") != 9 {
		t.Errorf("idle channels did not alternate: %d and %d ECHO", busy.receivedCount("ECHO"), idle.receivedCount("ECHO"))
	}
}

func TestSendPrimary(t *testing.T) {
	h := newHarness(t, fastConfig())
	handlers := map[command.Type]command.Handler{"ECHO": echo}
	c1 := h.connect(connOpts{target: "t1", handlers: handlers})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
	c2 := h.connect(connOpts{target: "t1", handlers: handlers})
	h.waitBelief(c2, command.PrimaryPayload{Primary: false, Epoch: 1})
	for range 4 {
		if _, err := h.ctrl.SendPrimary(t.Context(), "t1", command.MustCommand("ECHO", nil)); err != nil {
			t.Fatalf("SendPrimary() = %v", err)
		}
	}
	if c1.receivedCount("ECHO") != 4 || c2.receivedCount("ECHO") != 0 {
		t.Errorf("primary got %d, other %d; want 4 and 0", c1.receivedCount("ECHO"), c2.receivedCount("ECHO"))
	}
}

// Errors from the channel come back typed and wrapped; the ctx deadline
// bounds the wait.
func TestSendErrors(t *testing.T) {
	h := newHarness(t, fastConfig())
	stall := command.HandlerFunc(func(ctx context.Context, _ *command.Command) (*command.Reply, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	c := h.connect(connOpts{target: "t1", handlers: map[command.Type]command.Handler{"STALL": stall}})
	h.waitRegistered(c.id(), true)

	_, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand("NOPE", nil))
	var unknown *channel.UnknownCommandError
	if !errors.As(err, &unknown) {
		t.Errorf("Send(NOPE) = %v, want *channel.UnknownCommandError", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	if _, err := h.ctrl.Send(ctx, "t1", command.MustCommand("STALL", nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send(STALL) = %v, want DeadlineExceeded", err)
	}
}

// A target whose channels live only on another node cannot be reached yet:
// the error says so instead of pretending there is no channel.
func TestSendToRemoteChannel(t *testing.T) {
	mem := standalone.New("node-a")
	remote := state.Channel{ID: "remote-1", TargetID: "t1", NodeID: "node-b", Active: true}
	if err := state.Err(mem.Apply(t.Context(), state.Op{Register: &state.RegisterChannel{Channel: remote}})); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, fastConfig(), harnessOpts{store: mem})
	_, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand("ECHO", nil))
	if !errors.Is(err, controller.ErrForwardingUnavailable) {
		t.Errorf("Send() = %v, want ErrForwardingUnavailable", err)
	}
	_, err = h.ctrl.SendPrimary(t.Context(), "t1", command.MustCommand("ECHO", nil))
	if !errors.Is(err, controller.ErrForwardingUnavailable) {
		t.Errorf("SendPrimary() = %v, want ErrForwardingUnavailable", err)
	}
	info, _ := h.ctrl.Channel("remote-1")
	if info.Local || info.NodeID != "node-b" {
		t.Errorf("Channel(remote-1) = %+v, want remote", info)
	}
}

// Commands sent by a connector reach Config.Handler; unknown types come back
// as *channel.UnknownCommandError at the connector.
func TestConnectorToController(t *testing.T) {
	cfg := fastConfig()
	mux := command.NewMux()
	mux.Register("PING", echo)
	cfg.Handler = mux
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1"})
	reply, err := c.ch.Send(t.Context(), command.MustCommand("PING", "x"))
	if err != nil || !reply.Succeeded() || string(reply.Payload) != `"x"` {
		t.Fatalf("PING = %+v, %v", reply, err)
	}
	_, err = c.ch.Send(t.Context(), command.MustCommand("NOPE", nil))
	var unknown *channel.UnknownCommandError
	if !errors.As(err, &unknown) {
		t.Errorf("NOPE = %v, want *channel.UnknownCommandError", err)
	}
	h.waitFor("handled metrics", func() bool { return h.metrics.count("handled") >= 2 })
}

// Send keeps following the registry once it has routed commands to a target:
// new channels, closed channels and primary changes are seen at once (the
// routes it keeps between state changes are dropped by every change).
func TestSendFollowsRegistryChanges(t *testing.T) {
	h := newHarness(t, fastConfig())
	handlers := map[command.Type]command.Handler{"ECHO": echo}
	send := func(primary bool) error {
		t.Helper()
		var err error
		if primary {
			_, err = h.ctrl.SendPrimary(t.Context(), "t1", command.MustCommand("ECHO", nil))
		} else {
			_, err = h.ctrl.Send(t.Context(), "t1", command.MustCommand("ECHO", nil))
		}
		return err
	}
	c1 := h.connect(connOpts{target: "t1", handlers: handlers})
	h.waitBelief(c1, command.PrimaryPayload{Primary: true, Epoch: 1})
	for _, primary := range []bool{false, true} {
		if err := send(primary); err != nil {
			t.Fatalf("send(primary=%t) = %v", primary, err)
		}
	}

	// A second channel: idle channels take turns, so it gets commands too.
	c2 := h.connect(connOpts{target: "t1", handlers: handlers})
	h.waitBelief(c2, command.PrimaryPayload{Primary: false, Epoch: 1})
	h.waitFor("nothing in flight", func() bool {
		i1, _ := h.ctrl.Channel(c1.id())
		i2, _ := h.ctrl.Channel(c2.id())
		return i1.InFlight == 0 && i2.InFlight == 0
	})
	for range 4 {
		if err := send(false); err != nil {
			t.Fatalf("Send() = %v", err)
		}
	}
	if n := c2.receivedCount("ECHO"); n != 2 {
		t.Errorf("the new channel got %d of 4 ECHO, want 2", n)
	}

	// The primary goes: every command, primary or not, reaches the other
	// channel.
	c1.close()
	h.waitRegistered(c1.id(), false)
	for _, primary := range []bool{false, false, true} {
		if primary {
			h.waitBelief(c2, command.PrimaryPayload{Primary: true, Epoch: 2})
		}
		if err := send(primary); err != nil {
			t.Fatalf("send(primary=%t) after the first channel closed = %v", primary, err)
		}
	}
	if n := c2.receivedCount("ECHO"); n != 5 {
		t.Errorf("the remaining channel got %d ECHO in all, want 5", n)
	}

	// The last one goes: no channel, at once.
	c2.close()
	h.waitRegistered(c2.id(), false)
	if err := send(false); !errors.Is(err, controller.ErrNoChannel) {
		t.Errorf("Send() with no channel left = %v, want ErrNoChannel", err)
	}
}

// A forwarded command that reaches a closing controller fails with
// ErrClosed and ErrForwardingUnavailable: its sender, on another node, can
// tell the node went away (the cluster's link carries the second one) and
// try another node later.
func TestDeliverToClosedController(t *testing.T) {
	h := newHarness(t, fastConfig())
	if err := h.ctrl.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	_, err := controller.Deliver(h.ctrl, t.Context(), "ch-1", command.MustCommand("ECHO", "hi"))
	if !errors.Is(err, controller.ErrClosed) || !errors.Is(err, controller.ErrForwardingUnavailable) {
		t.Fatalf("deliver on a closed controller = %v, want ErrClosed and ErrForwardingUnavailable", err)
	}
}
