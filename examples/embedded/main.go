// Command embedded runs a controller and two connectors in one process over
// the in-process channel: no network, the same semantics as gRPC.
//
//	go run ./examples/embedded
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
)

// Greet is the example's command: the connector answers with a greeting.
type Greet struct {
	Name string `json:"name"`
}

// Greeting is Greet's reply.
type Greeting struct {
	Text string `json:"text"`
	From string `json:"from"`
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	// 1. A controller on an in-process listener, with its state in memory.
	lis := embedded.Listen()
	cfg := controller.DefaultConfig()
	cfg.NodeID = "example"
	ctrl, err := controller.New(cfg, lis, standalone.New(cfg.NodeID))
	if err != nil {
		return err
	}
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- ctrl.Run(ctx) }()
	defer func() { _ = ctrl.Close(); <-ctrlDone }()

	// 2. Two connectors for target "greeters"; each answers GREET.
	var connectors []*connector.Connector
	var runs []chan error
	defer func() {
		for i, c := range connectors {
			_ = c.Close()
			<-runs[i]
		}
	}()
	for _, id := range []string{"greeter-1", "greeter-2"} {
		mux := command.NewMux()
		mux.Register("GREET", command.Typed(func(_ context.Context, in Greet) (Greeting, error) {
			return Greeting{Text: "hello, " + in.Name, From: id}, nil
		}))
		ccfg := connector.DefaultConfig()
		ccfg.ConnectorID = id
		ccfg.TargetID = "greeters"
		c, err := connector.New(ccfg, mux, lis) // the listener is also the dialer
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		connectors, runs = append(connectors, c), append(runs, done)
		// 3. Wait until the controller has registered it (HELLO is answered
		// just before): greeter-1, registered first, becomes the primary.
		if err := waitChannels(ctx, ctrl, "greeters", len(connectors)); err != nil {
			return err
		}
	}

	// 4. Send to the target (any channel), then to its primary only.
	reply, err := ctrl.Send(ctx, "greeters", command.MustCommand("GREET", Greet{Name: "world"}))
	if err != nil {
		return err
	}
	g, err := command.Decode[Greeting](reply.Payload)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s\n", reply.Status, g.Text)

	reply, err = ctrl.SendPrimary(ctx, "greeters", command.MustCommand("GREET", Greet{Name: "primary"}))
	if err != nil {
		return err
	}
	g, _ = command.Decode[Greeting](reply.Payload)
	fmt.Fprintf(out, "primary %s says: %s\n", g.From, g.Text)

	// 5. A command type nobody handles is a typed error, not a timeout.
	_, err = ctrl.Send(ctx, "greeters", command.MustCommand("DANCE", nil))
	fmt.Fprintf(out, "DANCE: %v\n", err)
	return nil
}

// waitChannels waits until target has n registered channels and a primary.
func waitChannels(ctx context.Context, ctrl *controller.Controller, target string, n int) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if t, ok := ctrl.Target(target); ok && t.PrimaryID != "" && len(t.Channels) == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
