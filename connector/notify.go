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

// event is one queued change: a state change, or (isPrimary) a primary one.
// Queued as a value, not as a closure, so that a change allocates nothing of
// its own: a storm's refused attempt makes two (Connecting, Disconnected).
type event struct {
	isPrimary bool
	primary   bool
	epoch     uint64
	state     StateChange
}

// newNotifier returns the notifier: a queue of events, each delivered in turn
// to cfg's callbacks; a panic is logged, not allowed to kill the notifier.
func newNotifier(cfg Config, log *slog.Logger) *queue.Dispatcher[event] {
	onState, onPrimary := cfg.OnState, cfg.OnPrimary
	return queue.New(func(e event) {
		if e.isPrimary {
			onPrimary(e.primary, e.epoch)
		} else {
			onState(e.state)
		}
	}, func(_ event, p any) {
		log.Error("connector: callback panicked", "panic", fmt.Sprint(p))
	})
}

// enqueueState queues sc for OnState. c.mu must be held.
func (c *Connector) enqueueState(sc StateChange) {
	if c.cfg.OnState != nil {
		c.events.Push(event{state: sc})
	}
}

// enqueuePrimary queues a primary change for OnPrimary. c.mu must be held.
func (c *Connector) enqueuePrimary(primary bool, epoch uint64) {
	if c.cfg.OnPrimary != nil {
		c.events.Push(event{isPrimary: true, primary: primary, epoch: epoch})
	}
}
