package channel_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// TestHandlerMayShareItsReply: command.Handler allows a handler to return the
// same reply to many commands as long as nobody modifies it. The channel
// completes its own copy for each command (ids, type), with or without a
// deadline, and never the handler's.
func TestHandlerMayShareItsReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	shared := &command.Reply{Status: command.StatusSucceeded, Payload: []byte(`"same"`)}
	mux := command.NewMux()
	mux.RegisterFunc("DO", func(context.Context, *command.Command) (*command.Reply, error) { return shared, nil })
	a, b := embedded.Pipe()
	ca := channel.New(a, nil, channel.Config{})
	cb := channel.New(b, mux, channel.Config{})
	defer func() { _ = ca.Close(); _ = cb.Close() }()

	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			cctx := ctx
			if i%2 == 0 { // no deadline of its own: the channel's default one
				cctx = context.WithoutCancel(ctx)
			}
			cmd := &command.Command{Type: "DO"}
			r, err := ca.Send(cctx, cmd)
			if err != nil {
				t.Errorf("Send() = %v", err)
				return
			}
			if r.CommandID == "" || r.Type != "DO" || string(r.Payload) != `"same"` {
				t.Errorf("reply %+v, want one completed for its own command", r)
			}
		})
	}
	wg.Wait()
	if shared.CommandID != "" || shared.Type != "" {
		t.Errorf("the handler's shared reply was modified: %+v", shared)
	}
}
