package channel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// FuzzAcceptHello feeds AcceptHello arbitrary first frames: it must never
// panic, must accept exactly the HELLO commands whose payload decodes, and
// must answer everything else it can answer with an ERROR reply.
func FuzzAcceptHello(f *testing.F) {
	f.Add("HELLO", []byte(`{"targetId":"t1","connectorId":"c1","token":"x","protocolVersion":1}`))
	f.Add("HELLO", []byte(`{"targetId":`))
	f.Add("HELLO", []byte(`null`))
	f.Add("HEALTH_CHECK", []byte(`{}`))
	f.Add("", []byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		a, b := embedded.Pipe()
		defer a.Close()
		defer b.Close()
		if err := a.Send(&channel.Frame{Command: &command.Command{ID: "h1", Type: command.Type(typ), Payload: payload}}); err != nil {
			t.Fatal(err)
		}
		decided := false
		hello, reply, err := channel.AcceptHello(context.Background(), b,
			func(_ context.Context, c *command.Command, h command.HelloPayload) (*command.Reply, error) {
				decided = true
				return command.Succeeded(c, command.HelloReplyPayload{TargetID: h.TargetID})
			})
		if typ != string(command.TypeHello) {
			if err == nil || !errors.Is(err, channel.ErrProtocol) && !errors.Is(err, channel.ErrMalformedFrame) || decided {
				t.Fatalf("AcceptHello(type %q) = %v, decided %t; want a protocol error, no decision", typ, err, decided)
			}
		} else if err == nil {
			if !decided || reply == nil || reply.Status != command.StatusSucceeded {
				t.Fatalf("AcceptHello accepted without deciding: %+v", reply)
			}
			if _, derr := command.Decode[command.HelloPayload](payload); derr != nil {
				t.Fatalf("accepted a HELLO whose payload does not decode: %v (hello %+v)", derr, hello)
			}
		}
		if typ != "" && (err != nil || decided) {
			// Every answerable first frame gets exactly one reply.
			f, rerr := a.Recv()
			if rerr != nil || f.Reply == nil || f.Reply.CommandID != "h1" {
				t.Fatalf("peer got %+v, %v; want a reply to h1", f, rerr)
			}
		}
	})
}
