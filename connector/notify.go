package connector

import "fmt"

// The callbacks (OnState, OnPrimary) run on one goroutine owned by Run, the
// notifier, in the order the changes happened. Changes are queued under c.mu,
// in the same critical section that makes them, so the queue order is the
// order of the changes; the notifier runs the callbacks with no lock held.

// enqueueState queues sc for OnState. c.mu must be held.
func (c *Connector) enqueueState(sc StateChange) {
	if f := c.cfg.OnState; f != nil {
		c.enqueueLocked(func() { f(sc) })
	}
}

// enqueuePrimary queues a primary change for OnPrimary. c.mu must be held.
func (c *Connector) enqueuePrimary(primary bool, epoch uint64) {
	if f := c.cfg.OnPrimary; f != nil {
		c.enqueueLocked(func() { f(primary, epoch) })
	}
}

func (c *Connector) enqueueLocked(f func()) {
	c.events = append(c.events, f)
	select {
	case c.wake <- struct{}{}:
	default: // already signalled
	}
}

// notify runs queued callbacks until quit is closed, then runs what is left
// and returns.
func (c *Connector) notify(quit <-chan struct{}) {
	for {
		select {
		case <-c.wake:
			c.flush()
		case <-quit:
			c.flush()
			return
		}
	}
}

func (c *Connector) flush() {
	for {
		c.mu.Lock()
		evs := c.events
		c.events = nil
		c.mu.Unlock()
		if len(evs) == 0 {
			return
		}
		for _, f := range evs {
			c.call(f)
		}
	}
}

// call runs one callback; a panic is logged, not allowed to kill the notifier.
func (c *Connector) call(f func()) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("connector: callback panicked", "panic", fmt.Sprint(p))
		}
	}()
	f()
}
