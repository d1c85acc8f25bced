package channel_test

import (
	"context"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// Greeting is the payload of the example's GREET command.
type Greeting struct {
	Name string `json:"name"`
}

// A controller and a connector in one process, over an embedded pipe: the
// connector says hello, then each side sends the other a command.
func ExampleChannel() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	connectorConn, controllerConn := embedded.Pipe()

	// The handshake: the connector sends HELLO, the controller decides.
	accepted := make(chan error, 1)
	go func() {
		_, _, err := channel.AcceptHello(ctx, controllerConn,
			func(_ context.Context, cmd *command.Command, hello command.HelloPayload) (*command.Reply, error) {
				return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: hello.TargetID, ChannelID: "ch-1"})
			})
		accepted <- err
	}()
	welcome, err := channel.Hello(ctx, connectorConn, command.HelloPayload{TargetID: "gateways", ConnectorID: "gw-1"})
	if err != nil || <-accepted != nil {
		fmt.Println("handshake failed:", err)
		return
	}
	fmt.Println("connected to channel", welcome.ChannelID, "for target", welcome.TargetID)

	// The connector answers GREET; the controller answers nothing.
	mux := command.NewMux()
	mux.Register("GREET", command.Typed(func(_ context.Context, g Greeting) (Greeting, error) {
		return Greeting{Name: "hello, " + g.Name}, nil
	}))
	connector := channel.New(connectorConn, mux, channel.Config{})
	defer connector.Close()
	controller := channel.New(controllerConn, nil, channel.Config{})
	defer controller.Close()

	reply, err := controller.Send(ctx, command.MustCommand("GREET", Greeting{Name: "gw-1"}))
	if err != nil {
		fmt.Println("send:", err)
		return
	}
	g, _ := command.Decode[Greeting](reply.Payload)
	fmt.Println(reply.Status, g.Name)

	// The controller has no GREET handler: a typed error, the channel stays up.
	_, err = connector.Send(ctx, command.MustCommand("GREET", Greeting{Name: "controller"}))
	fmt.Println(err)

	// Output:
	// connected to channel ch-1 for target gateways
	// SUCCEEDED hello, gw-1
	// channel: peer has no handler for command type "GREET"
}
