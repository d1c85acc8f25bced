package controller_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	goconnector "github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
)

// BenchmarkHealthCheck is one HEALTH_CHECK round trip as the health loop
// makes it (checkHealth), from a controller to a connector of this module
// over gRPC on loopback: time and allocations per check, both sides (one
// process). Back to back, the channel's writer goroutines stay alive between
// checks; in an idle fleet (a check every 30 s) each check also starts and
// ends one writer per side, which BenchmarkIdleCPU (cmd/exchange) includes.
func BenchmarkHealthCheck(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	ctrl, ctx, addr := benchController(b)
	d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	conn, err := goconnector.New(goconnector.Config{TargetID: "t", Logger: quiet}, command.NewMux(), d)
	if err != nil {
		b.Fatal(err)
	}
	connCtx, stopConn := context.WithCancel(ctx)
	connDone := make(chan error, 1)
	go func() { connDone <- conn.Run(connCtx) }()
	defer func() {
		stopConn()
		_ = conn.Close()
		<-connDone
	}()

	// Registered: the controller holds the connector's channel.
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var id string
	for {
		if id = conn.ChannelID(); id != "" {
			if _, ok := ctrl.Channel(id); ok && conn.State() == goconnector.StateConnected {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("the connector did not register in time")
		}
		<-tick.C
	}

	b.ReportAllocs()
	for b.Loop() {
		if !ctrl.CheckHealth(ctx, id) {
			b.Fatal("health check not answered healthy")
		}
	}
}

// benchController runs a controller (fastConfig, logging nothing) over a
// gRPC server with opts on loopback until the benchmark ends: it returns
// the controller, a context ended with it, and the server's address.
func benchController(b *testing.B, opts ...grpcchannel.ServerOption) (*controller.Controller, context.Context, string) {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpcchannel.NewServer(opts...)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	b.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			b.Errorf("Serve() = %v", err)
		}
	})
	cfg := fastConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctrl, err := controller.New(cfg, srv, standalone.New(cfg.NodeID))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- ctrl.Run(ctx) }()
	b.Cleanup(func() {
		if err := ctrl.Close(); err != nil {
			b.Errorf("Close() = %v", err)
		}
		cancel()
		if err := <-runDone; err != nil {
			b.Errorf("Run() = %v", err)
		}
	})
	return ctrl, ctx, lis.Addr().String()
}
