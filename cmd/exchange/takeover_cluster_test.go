package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// takeoverConn is a connector's channel over gRPC that records the GOOD_BYEs
// it is told.
type takeoverConn struct {
	ch    *channel.Channel
	hello command.HelloReplyPayload

	mu       sync.Mutex
	goodbyes []command.GoodByePayload
}

func dialTakeover(ctx context.Context, t *testing.T, addr string, hello command.HelloPayload) *takeoverConn {
	t.Helper()
	d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	conn, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &takeoverConn{}
	if c.hello, err = channel.Hello(ctx, conn, hello); err != nil {
		t.Fatalf("HELLO to %s: %v", addr, err)
	}
	ok := func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		return command.Succeeded(cmd, nil)
	}
	mux := command.NewMux()
	mux.RegisterFunc(command.TypePrimary, ok)
	mux.RegisterFunc(command.TypeHealthCheck, func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		return command.Succeeded(cmd, command.HealthCheckReplyPayload{Healthy: true})
	})
	mux.RegisterFunc(command.TypeGoodBye, func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		p, err := command.Decode[command.GoodByePayload](cmd.Payload)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.goodbyes = append(c.goodbyes, p)
		c.mu.Unlock()
		return ok(ctx, cmd)
	})
	c.ch = channel.New(conn, mux, channel.Config{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = c.ch.Close() })
	return c
}

// A connector's new channel on one node of a raft cluster takes over its old
// channel held by another node: the old node closes it (after
// GOOD_BYE{reconnect:false}), and every replica moves the primary role to the
// new channel, with a higher epoch, in one change, never evicting it.
func TestTakeOverAcrossRaftNodes(t *testing.T) {
	h := clustertest.NewHarness(t, 2, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	nodes := h.Nodes()

	var (
		mu      sync.Mutex
		evicted []state.Event
		changed = make(chan struct{}, 1)
	)
	for _, m := range nodes {
		unsub := m.Node().Subscribe(func(evs []state.Event) {
			mu.Lock()
			for _, e := range evs {
				if e.Kind == state.PrimaryEvicted {
					evicted = append(evicted, e)
				}
			}
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
		})
		t.Cleanup(unsub)
		ctrl, err := controller.New(controller.Config{
			Logger: slog.New(slog.DiscardHandler), HealthInterval: time.Hour, GoodByeTimeout: 2 * time.Second,
		}, m.Server(), m.Node())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = ctrl.Run(t.Context()) }()
		t.Cleanup(func() { _ = ctrl.Close(); <-done })
	}
	// waitState waits until every replica satisfies cond.
	waitState := func(what string, cond func(*state.State) bool) {
		t.Helper()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			all := true
			for _, m := range nodes {
				m.Node().View(func(s *state.State) { all = all && cond(s) })
			}
			if all {
				return
			}
			select {
			case <-changed:
			case <-tick.C:
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	hello := command.HelloPayload{TargetID: "t", ConnectorID: "gw"}
	old := dialTakeover(ctx, t, nodes[0].GRPCAddr(), hello)
	var before uint64
	waitState("the first channel primary", func(s *state.State) bool {
		p, e := s.PrimaryOf("t")
		before = e
		return p == old.hello.ChannelID
	})

	nw := dialTakeover(ctx, t, nodes[1].GRPCAddr(), hello)
	waitState("the new channel primary, alone", func(s *state.State) bool {
		p, e := s.PrimaryOf("t")
		chs := s.TargetChannels("t")
		return p == nw.hello.ChannelID && e > before && len(chs) == 1 && chs[0].ID == nw.hello.ChannelID
	})
	select {
	case <-old.ch.Done():
	case <-ctx.Done():
		t.Fatal("the old channel was not closed by its node")
	}
	old.mu.Lock()
	got := slices.Clone(old.goodbyes)
	old.mu.Unlock()
	if len(got) != 1 || got[0].Reconnect {
		t.Errorf("old channel was told %+v, want one GOOD_BYE{reconnect:false}", got)
	}
	if nw.ch.Err() != nil {
		t.Errorf("new channel closed: %v", nw.ch.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(evicted) != 0 {
		t.Errorf("a replica evicted a primary: %+v", evicted)
	}
}
