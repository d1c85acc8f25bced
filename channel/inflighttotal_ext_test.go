package channel_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// TestInFlightTotal checks Config.InFlightTotal: channels made with one
// Config keep it equal to the sum of their InFlight, for calls awaiting a
// reply and for peer commands being handled, and give theirs back when they
// close.
func TestInFlightTotal(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var senders, handlers atomic.Int64
	release := make(chan struct{})
	entered := make(chan struct{}, 3)
	mux := command.NewMux()
	mux.RegisterFunc("BLOCK", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	var cas, cbs []*channel.Channel
	for range 2 {
		a, b := embedded.Pipe()
		cas = append(cas, channel.New(a, nil, channel.Config{InFlightTotal: &senders}))
		cbs = append(cbs, channel.New(b, mux, channel.Config{InFlightTotal: &handlers}))
	}

	var wg sync.WaitGroup
	for _, ca := range []*channel.Channel{cas[0], cas[0], cas[1]} {
		wg.Go(func() { _, _ = ca.Send(ctx, &command.Command{Type: "BLOCK"}) })
	}
	for range 3 {
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatal("handlers not entered in time")
		}
	}
	if got, want := senders.Load(), int64(cas[0].InFlight()+cas[1].InFlight()); got != 3 || got != want {
		t.Errorf("senders' total = %d, want 3 (their InFlight sum %d)", got, want)
	}
	if got := handlers.Load(); got != 3 {
		t.Errorf("handlers' total = %d, want 3", got)
	}

	_ = cas[1].Close() // its call fails at once
	if got := senders.Load(); got != 2 {
		t.Errorf("senders' total after closing one with a call pending = %d, want 2", got)
	}
	close(release)
	wg.Wait()
	if got := senders.Load(); got != 0 {
		t.Errorf("senders' total after every Send returned = %d, want 0", got)
	}
	for _, c := range append(cas, cbs...) {
		_ = c.Close() // Close waits for the handlers
	}
	if got := handlers.Load(); got != 0 {
		t.Errorf("handlers' total after Close = %d, want 0", got)
	}
}
