package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

const (
	batchTargets = 64 // targets (one connector each), run in parallel by the runner
	batchSize    = 10 // commands per batch
)

// runnerStack is a controller, a batch runner and one connector per target,
// over one transport, with an in-memory store.
type runnerStack struct {
	runner *batch.Runner
	ctrl   *controller.Controller
}

func newRunnerStack(b testing.TB, lis channel.Listener, dial func() channel.Dialer) *runnerStack {
	b.Helper()
	quiet := slog.New(slog.DiscardHandler)
	store := standalone.New("bench")
	cfg := controller.DefaultConfig()
	cfg.NodeID, cfg.Logger = "bench", quiet
	registered := make(chan struct{}, 1024) // one signal per channel registered
	cfg.OnEvent = func(ev controller.Event) {
		if ev.Kind == controller.EventChannelRegistered {
			select { // never block the controller's event dispatcher
			case registered <- struct{}{}:
			default:
			}
		}
	}
	ctrl, err := controller.New(cfg, lis, store)
	if err != nil {
		b.Fatal(err)
	}
	runner, err := batch.NewRunner(batch.Config{Concurrency: batchTargets, Logger: quiet}, ctrl, state.NewBatchStore(store))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stops []func()
	ctrlDone, runDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(ctrlDone); _ = ctrl.Run(ctx) }()
	go func() { defer close(runDone); _ = runner.Run(ctx) }()

	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	for i := range batchTargets {
		ccfg := connector.DefaultConfig()
		ccfg.TargetID, ccfg.Logger = fmt.Sprintf("t%d", i), quiet
		c, err := connector.New(ccfg, mux, dial())
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		stops = append(stops, func() { _ = c.Close(); <-done })
		if err := c.WaitConnected(wctx); err != nil {
			b.Fatal(err)
		}
	}
	for range batchTargets { // registration follows HELLO; wait for the controller's event
		select {
		case <-registered:
		case <-wctx.Done():
			b.Fatal("channels never registered")
		}
	}
	b.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
		_ = runner.Close()
		<-runDone
		_ = ctrl.Close()
		cancel()
		<-ctrlDone
	})
	return &runnerStack{runner: runner, ctrl: ctrl}
}

// run pushes b.N commands through the runner as batches of batchSize spread
// over the targets, and reports commands per second.
func (s *runnerStack) run(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	n := (b.N + batchSize - 1) / batchSize
	all := make(chan struct{})
	var done, failed atomic.Int64
	stop := s.runner.ObserveKey("bench", func(bt batch.Batch) {
		if bt.Status != batch.StatusSucceeded {
			failed.Add(1)
		}
		if done.Add(1) == int64(n) {
			close(all)
		}
	})
	defer stop()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range n {
		in := batch.Batch{Key: "bench", TargetID: fmt.Sprintf("t%d", i%batchTargets), Commands: make([]batch.Command, batchSize)}
		for j := range batchSize {
			in.Commands[j] = batch.Command{Command: &command.Command{Type: "ECHO", Payload: payload}}
		}
		if _, err := s.runner.ExecuteBatch(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		b.Fatalf("%d of %d batches done: %v", done.Load(), n, ctx.Err())
	}
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d batches failed", f)
	}
	b.ReportMetric(float64(n*batchSize)/b.Elapsed().Seconds(), "cmd/s")
}

// BenchmarkBatchRunner: commands per second through the batch runner, the
// controller and connectors (batches of 10 over 64 targets).
func BenchmarkBatchRunner(b *testing.B) {
	b.Run("Embedded", func(b *testing.B) {
		lis := embedded.Listen()
		newRunnerStack(b, lis, func() channel.Dialer { return lis }).run(b)
	})
	b.Run("GRPC", func(b *testing.B) {
		grpcRunnerStack(b).run(b)
	})
}

// grpcRunnerStack is a runnerStack whose connectors reach the controller over
// gRPC on loopback, each through a Dialer (a connection) of its own.
func grpcRunnerStack(b testing.TB) *runnerStack {
	srv := grpcchannel.NewServer()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(nl) }()
	var dialers []*grpcchannel.Dialer
	b.Cleanup(func() { // registered first, so it runs after the stack's cleanup
		for _, d := range dialers {
			_ = d.Close()
		}
		srv.Stop()
		<-served
	})
	return newRunnerStack(b, srv, func() channel.Dialer {
		d, err := grpcchannel.NewDialer(nl.Addr().String(), grpcchannel.WithInsecure())
		if err != nil {
			b.Fatal(err)
		}
		dialers = append(dialers, d)
		return d
	})
}
