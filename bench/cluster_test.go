package bench

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// clusterSend starts a 3-node clustertest.Harness (real raft and gossip over
// loopback), a controller on the leader A and on a follower B, and one
// connector of target "t" on A over gRPC. It returns controller.Send through
// A (local: one hop to the connector) and through B (forwarded over B's link
// to A, then to the connector), the same set-up as internal/clusterbench.
func clusterSend(tb testing.TB) (local, forwarded roundTrip) {
	tb.Helper()
	h := clustertest.NewHarness(tb, 3, nil)
	a, b := h.Leader(), h.Followers()[0]
	ctrlA := startClusterController(tb, a)
	ctrlB := startClusterController(tb, b)

	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
	d, err := grpcchannel.NewDialer(a.GRPCAddr(), grpcchannel.WithInsecure())
	if err != nil {
		tb.Fatal(err)
	}
	cfg := connector.DefaultConfig()
	cfg.TargetID, cfg.ConnectorID = "t", "conn-a"
	cfg.Logger = slog.New(slog.DiscardHandler)
	conn, err := connector.New(cfg, mux, d)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = conn.Run(ctx) }()
	tb.Cleanup(func() { _ = conn.Close(); cancel(); <-done; _ = d.Close() })

	// The forwarded path works once B's copy of the state has the channel
	// and B's link to A is up: poll a forwarded send, bounded.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := conn.WaitConnected(wctx); err != nil {
		tb.Fatal(err)
	}
	fwd := exchangeRoundTrip(ctrlB)
	for {
		n := 0
		b.Node().View(func(s *state.State) { n = len(s.TargetChannels("t")) })
		if n == 1 {
			if err = fwd(wctx); err == nil {
				break
			}
		}
		select {
		case <-wctx.Done():
			tb.Fatalf("no forwarded send within 30 s: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return exchangeRoundTrip(ctrlA), fwd
}

// startClusterController runs a controller on m's node and gRPC server until
// the test ends.
func startClusterController(tb testing.TB, m *clustertest.Member) *controller.Controller {
	tb.Helper()
	cfg := controller.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctrl, err := controller.New(cfg, m.Server(), m.Node())
	if err != nil {
		tb.Fatal(fmt.Errorf("controller on %s: %w", m.ID, err))
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = ctrl.Run(context.Background()) }()
	tb.Cleanup(func() { _ = ctrl.Close(); <-done })
	return ctrl
}
