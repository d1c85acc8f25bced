package controller_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/exchangekit/exchange/command"
)

// TestCountsLocalInFlight checks that Counts reports the commands in flight
// on this node's channels from the counter the channels keep, without a walk:
// each call counts from its Send to its reply, and a channel that dies gives
// back its calls at once.
func TestCountsLocalInFlight(t *testing.T) {
	h := newHarness(t, fastConfig())
	release := make(chan struct{})
	var entered atomic.Int32
	block := command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		entered.Add(1)
		h.sig.fire()
		select {
		case <-release:
			return command.Succeeded(cmd, nil)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	a := h.connect(connOpts{target: "t1", handlers: map[command.Type]command.Handler{"BLOCK": block}})
	b := h.connect(connOpts{target: "t2", handlers: map[command.Type]command.Handler{"BLOCK": block}})
	h.waitRegistered(a.id(), true)
	h.waitRegistered(b.id(), true)
	// The PRIMARY notices are the first calls: each counts until answered.
	h.waitFor("both told their primary, nothing in flight", func() bool {
		_, okA := a.belief()
		_, okB := b.belief()
		return okA && okB && h.ctrl.Counts().LocalInFlight == 0
	})

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, target := range []string{"t1", "t1", "t2"} {
		wg.Go(func() {
			_, err := h.ctrl.Send(t.Context(), target, command.MustCommand("BLOCK", nil))
			errs <- err
		})
	}
	h.waitFor("3 handlers entered", func() bool { return entered.Load() == 3 })
	if n := h.ctrl.Counts().LocalInFlight; n != 3 {
		t.Errorf("LocalInFlight with 3 calls awaiting replies = %d, want 3", n)
	}

	b.close() // its call fails at once: the controller's channel to t2 dies
	h.waitRegistered(b.id(), false)
	h.waitFor("t2's call given back", func() bool { return h.ctrl.Counts().LocalInFlight == 2 })

	close(release)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d sends failed, want 1 (the one to the closed connector)", failed)
	}
	if n := h.ctrl.Counts().LocalInFlight; n != 0 {
		t.Errorf("LocalInFlight after every Send returned = %d, want 0", n)
	}
}
