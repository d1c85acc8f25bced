package connector_test

import (
	"context"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

// A connector and a tiny hand-made controller in one process, over the
// embedded twin. A real controller (package controller) does the controller
// side for you; it is spelled out here to show the protocol.
func ExampleConnector() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The controller side: accept one connector, run the HELLO handshake,
	// make it primary, and send it a command.
	lis := embedded.Listen()
	defer lis.Close()
	echoed, ctrlDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ctrlDone)
		conn, err := lis.Accept(ctx)
		if err != nil {
			return
		}
		hello, _, err := channel.AcceptHello(ctx, conn, func(_ context.Context, cmd *command.Command, h command.HelloPayload) (*command.Reply, error) {
			return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: h.TargetID, ChannelID: "ch-1"})
		})
		if err != nil {
			_ = conn.Close()
			return
		}
		fmt.Printf("controller: HELLO from %s for target %s\n", hello.ConnectorID, hello.TargetID)
		ctrl := command.NewMux()
		ctrl.Register("REPORT", command.Typed(func(_ context.Context, in string) (string, error) { return "noted: " + in, nil }))
		ch := channel.New(conn, ctrl, channel.Config{})
		defer ch.Close()
		if _, err := ch.Send(ctx, command.MustCommand(command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 1})); err != nil {
			return
		}
		r, err := ch.Send(ctx, command.MustCommand("ECHO", "hi"))
		if err != nil {
			return
		}
		out, _ := command.Decode[string](r.Payload)
		fmt.Println("controller: ECHO answered", out)
		close(echoed)
		<-ch.Done() // until the connector leaves
	}()

	// The connector side.
	mux := command.NewMux()
	mux.Register("ECHO", command.Typed(func(_ context.Context, in string) (string, error) { return in + "!", nil }))
	cfg := connector.DefaultConfig()
	cfg.ConnectorID = "edge-1"
	cfg.TargetID = "gateways"
	c, err := connector.New(cfg, mux, lis)
	if err != nil {
		fmt.Println(err)
		return
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()

	<-echoed
	fmt.Printf("connector: target %s, channel %s, primary %v (epoch %d)\n", c.TargetID(), c.ChannelID(), c.IsPrimary(), c.Epoch())
	r, err := c.Send(ctx, command.MustCommand("REPORT", "all good"))
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := command.Decode[string](r.Payload)
	fmt.Println("connector: REPORT answered", out)

	_ = c.Close()
	fmt.Println("connector: Run returned", <-runErr)
	<-ctrlDone
	// Output:
	// controller: HELLO from edge-1 for target gateways
	// controller: ECHO answered hi!
	// connector: target gateways, channel ch-1, primary true (epoch 1)
	// connector: REPORT answered noted: all good
	// connector: Run returned <nil>
}
