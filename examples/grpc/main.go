// Command grpc runs a controller serving gRPC on loopback and two connectors
// that reach it over the network: token authentication, endpoint failover (the
// first endpoint in each connector's list is down), commands in both
// directions.
//
//	go run ./examples/grpc
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	// 1. The controller: a gRPC server on an ephemeral loopback port, and a
	//    token that connectors must present.
	srv := grpcchannel.NewServer()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(nl) }()
	defer func() { srv.Stop(); <-served }()

	cfg := controller.DefaultConfig()
	cfg.NodeID = "example"
	cfg.Authenticator = controller.StaticTokens("s3cret")
	cfg.Handler = command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		fmt.Fprintf(out, "controller got %s %s\n", c.Type, c.Payload)
		return command.Succeeded(c, map[string]bool{"stored": true})
	})
	ctrl, err := controller.New(cfg, srv, standalone.New(cfg.NodeID))
	if err != nil {
		return err
	}
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- ctrl.Run(ctx) }()
	defer func() { _ = ctrl.Close(); <-ctrlDone }()

	// A port with nothing behind it: the connectors try it first and fail over.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()

	dial := func(addr string) (channel.Dialer, func(), error) {
		d, err := grpcchannel.NewDialer(addr, grpcchannel.WithInsecure())
		if err != nil {
			return nil, nil, err
		}
		return d, func() { _ = d.Close() }, nil
	}

	// 2. Two connectors for target "sensors"; one with a wrong token. start
	//    returns the connector, the result of its Run, and a cleanup that
	//    releases its dialers (call it after Run has returned).
	start := func(id, token string) (*connector.Connector, chan error, func(), error) {
		deadD, closeDead, err := dial(deadAddr)
		if err != nil {
			return nil, nil, nil, err
		}
		liveD, closeLive, err := dial(nl.Addr().String())
		if err != nil {
			closeDead()
			return nil, nil, nil, err
		}
		mux := command.NewMux()
		mux.RegisterFunc("READ", func(_ context.Context, c *command.Command) (*command.Reply, error) {
			return command.Succeeded(c, map[string]any{"sensor": id, "celsius": 21.5})
		})
		ccfg := connector.DefaultConfig()
		ccfg.ConnectorID, ccfg.TargetID, ccfg.Token = id, "sensors", token
		ccfg.BackoffBase = 10 * time.Millisecond
		c, err := connector.New(ccfg, mux, deadD, liveD)
		if err != nil {
			closeDead()
			closeLive()
			return nil, nil, nil, err
		}
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		return c, done, func() { closeDead(); closeLive() }, nil
	}

	good, goodDone, releaseGood, err := start("sensor-1", "s3cret")
	if err != nil {
		return err
	}
	defer func() { _ = good.Close(); <-goodDone; releaseGood() }()
	if err := good.WaitConnected(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "sensor-1 connected after failing over from a dead endpoint")

	// A refused HELLO is final: Run returns at once, no retry storm.
	_, badDone, releaseBad, err := start("intruder", "guess")
	if err != nil {
		return err
	}
	err = <-badDone // bounded: ctx ends Run too
	releaseBad()
	if !errors.Is(err, channel.ErrHelloRejected) {
		return fmt.Errorf("intruder: Run() = %v, want a refused HELLO", err)
	}
	fmt.Fprintf(out, "intruder refused: %v\n", err)

	// 3. Controller → target, and connector → controller.
	reply, err := ctrl.Send(ctx, "sensors", command.MustCommand("READ", nil))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "READ: %s %s\n", reply.Status, reply.Payload)
	reply, err = good.Send(ctx, command.MustCommand("ALERT", map[string]string{"level": "info"}))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "ALERT: %s %s\n", reply.Status, reply.Payload)
	return nil
}
