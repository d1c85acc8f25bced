package controller_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// faultListener wraps every Conn it accepts in a channeltest.FaultConn and
// hands it to the test.
type faultListener struct {
	channel.Listener
	conns chan *channeltest.FaultConn // buffered
}

func (l *faultListener) Accept(ctx context.Context) (channel.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	fc := channeltest.NewFaultConn(c)
	l.conns <- fc
	return fc, nil
}

// The controller answers HELLO with the "batch" capability, and coalesces
// the frames it writes to a connector exactly when the connector's HELLO
// announced "batch": an old connector never gets a batch.
func TestCoalesceOnlyForBatchCapableConnectors(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name         string
		capabilities []string
	}{
		{"Announced", []string{"frobnicate", command.CapabilityBatch}},
		{"NotAnnounced", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			el := embedded.Listen()
			fl := &faultListener{Listener: el, conns: make(chan *channeltest.FaultConn, 4)}
			h := newHarness(t, fastConfig(), harnessOpts{lis: fl, dial: el})
			c := h.connect(connOpts{target: "t1", capabilities: tc.capabilities,
				handlers: map[command.Type]command.Handler{"ECHO": echo}})
			if !slices.Contains(c.hello.Capabilities, command.CapabilityBatch) {
				t.Errorf("HELLO reply capabilities = %q, want %q among them", c.hello.Capabilities, command.CapabilityBatch)
			}
			fc := <-fl.conns
			// The PRIMARY that follows registration must not share the burst.
			h.waitBelief(c, command.PrimaryPayload{Primary: true, Epoch: 1})
			h.waitFor("the channel idle", func() bool {
				info, ok := h.ctrl.Channel(c.id())
				return ok && info.InFlight == 0
			})

			// A burst held behind a stalled writer. InFlight counts a Send
			// from just before its command is queued, so the writer finds
			// (nearly always) the whole burst queued once released: a few
			// rounds make a batch certain when coalescing is on.
			ctx := t.Context()
			for round := range 5 {
				fc.Stall(channeltest.DirSend)
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i := range n {
					wg.Go(func() {
						cmd := command.MustCommand("ECHO", fmt.Sprintf("r%d-%d", round, i))
						if _, err := h.ctrl.Send(ctx, "t1", cmd); err != nil {
							errs <- err
						}
					})
				}
				h.waitFor("the burst in flight", func() bool {
					info, ok := h.ctrl.Channel(c.id())
					return ok && info.InFlight == n
				})
				fc.Unstall()
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("Send() = %v", err)
				}
				if batches, _ := fc.Batches(); batches > 0 {
					break
				}
			}
			batches, frames := fc.Batches()
			announced := slices.Contains(tc.capabilities, command.CapabilityBatch)
			if got := batches > 0; got != announced {
				t.Errorf("controller sent %d batches (%d frames) to a connector that announced %q, want batches: %t",
					batches, frames, tc.capabilities, announced)
			}
		})
	}
}
