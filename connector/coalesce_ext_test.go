package connector_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/command"
)

// The connector announces the "batch" capability in its HELLO, and coalesces
// the frames it writes exactly when the controller's HELLO reply announced
// "batch" too: an old controller never gets a batch.
func TestCoalesceOnlyWithBatchCapableController(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name         string
		capabilities []string
	}{
		{"Announced", []string{command.CapabilityBatch}},
		{"NotAnnounced", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fc := newFakeController(t)
			fc.decide = func(_ context.Context, cmd *command.Command, hello command.HelloPayload) (*command.Reply, error) {
				return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: hello.TargetID, ChannelID: "ch-1",
					ProtocolVersion: command.ProtocolVersion, Capabilities: tc.capabilities})
			}
			conns := make(chan *channeltest.FaultConn, 4)
			dialer := channel.DialerFunc(func(ctx context.Context) (channel.Conn, error) {
				c, err := fc.dialer().Dial(ctx)
				if err != nil {
					return nil, err
				}
				f := channeltest.NewFaultConn(c)
				conns <- f
				return f, nil
			})
			entered := make(chan struct{}, n)
			mux := command.NewMux()
			mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
				entered <- struct{}{}
				return &command.Reply{Payload: c.Payload}, nil
			})
			c := newConnector(t, testConfig(t), mux, dialer)
			start(t, c)
			p := fc.next(ctx)
			f := <-conns
			if !slices.Contains(p.hello.Capabilities, command.CapabilityBatch) {
				t.Errorf("HELLO capabilities = %q, want %q among them", p.hello.Capabilities, command.CapabilityBatch)
			}

			// A burst of replies held behind the stalled writer: the handler
			// signals just before it returns its reply, so the writer finds
			// (nearly always) them all queued once released; a few rounds
			// make a batch certain when coalescing is on.
			for round := range 5 {
				f.Stall(channeltest.DirSend)
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i := range n {
					wg.Go(func() {
						if _, err := p.ch.Send(ctx, command.MustCommand("ECHO", fmt.Sprintf("r%d-%d", round, i))); err != nil {
							errs <- err
						}
					})
				}
				for range n {
					select {
					case <-entered:
					case <-ctx.Done():
						t.Fatalf("the burst did not reach the handler: %v", ctx.Err())
					}
				}
				f.Unstall()
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("controller Send() = %v", err)
				}
				if batches, _ := f.Batches(); batches > 0 {
					break
				}
			}
			batches, frames := f.Batches()
			announced := slices.Contains(tc.capabilities, command.CapabilityBatch)
			if got := batches > 0; got != announced {
				t.Errorf("connector sent %d batches (%d frames) to a controller that announced %q, want batches: %t",
					batches, frames, tc.capabilities, announced)
			}
		})
	}
}
