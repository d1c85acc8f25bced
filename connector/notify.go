package connector

import (
	"fmt"
	"log/slog"

	"github.com/exchangekit/exchange/internal/queue"
)

// The callbacks (OnState, OnPrimary) run on one goroutine owned by Run, the
// notifier, in the order the changes happened. Changes are queued under c.mu,
// in the same critical section that makes them, so the queue order is the
// order of the changes; the notifier runs the callbacks with no lock held.
// Run starts the notifier and, before returning, closes it, which runs what is
// left.

// newNotifier returns the notifier: a queue of callbacks, each run in turn; a
// panic is logged, not allowed to kill the notifier.
func newNotifier(log *slog.Logger) *queue.Dispatcher[func()] {
	return queue.New(func(f func()) { f() }, func(_ func(), p any) {
		log.Error("connector: callback panicked", "panic", fmt.Sprint(p))
	})
}

// enqueueState queues sc for OnState. c.mu must be held.
func (c *Connector) enqueueState(sc StateChange) {
	if f := c.cfg.OnState; f != nil {
		c.events.Push(func() { f(sc) })
	}
}

// enqueuePrimary queues a primary change for OnPrimary. c.mu must be held.
func (c *Connector) enqueuePrimary(primary bool, epoch uint64) {
	if f := c.cfg.OnPrimary; f != nil {
		c.events.Push(func() { f(primary, epoch) })
	}
}
