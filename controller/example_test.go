package controller_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// A controller and one connector in one process, over the embedded twin.
func ExampleController() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The controller: a listener, a cluster (here one node in memory), a config.
	lis := embedded.Listen()
	elected := make(chan controller.Event, 1)
	ctrl, err := controller.New(controller.Config{
		NodeID:        "node-1",
		Authenticator: controller.StaticTokens("s3cret"),
		Logger:        slog.New(slog.DiscardHandler),
		OnEvent: func(e controller.Event) {
			if e.Kind == controller.EventPrimaryElected {
				elected <- e
			}
		},
	}, lis, standalone.New("node-1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	stopped := make(chan error, 1)
	go func() { stopped <- ctrl.Run(ctx) }()

	// A connector: dial, HELLO, then serve commands on the channel.
	conn, err := lis.Dial(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	hello, err := channel.Hello(ctx, conn, command.HelloPayload{TargetID: "edge-1", ConnectorID: "gw-a", Token: "s3cret"})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := command.NewMux()
	mux.Register("ECHO", command.Typed(func(_ context.Context, in string) (string, error) { return "echo: " + in, nil }))
	mux.RegisterFunc(command.TypePrimary, func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, command.PrimaryReplyPayload{})
	})
	mux.RegisterFunc(command.TypeGoodBye, func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, command.GoodByeReplyPayload{})
	})
	conn2 := channel.New(conn, mux, channel.Config{})
	defer conn2.Close()
	fmt.Println("connected to", hello.NodeID, "as target", hello.TargetID)

	e := <-elected
	fmt.Println("primary elected, epoch", e.Epoch)

	// Send a command to the target; the controller picks the channel.
	reply, err := ctrl.Send(ctx, "edge-1", command.MustCommand("ECHO", "hello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := command.Decode[string](reply.Payload)
	fmt.Println(reply.Status, out)

	// Shut down: GOOD_BYE to the connector, registry emptied.
	_ = ctrl.Close()
	fmt.Println("run:", <-stopped, "channels left:", len(ctrl.Channels()))

	// Output:
	// connected to node-1 as target edge-1
	// primary elected, epoch 1
	// SUCCEEDED echo: hello
	// run: <nil> channels left: 0
}
