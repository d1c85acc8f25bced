package controller

import (
	"log/slog"
	"sync"

	"github.com/exchangekit/exchange/state"
)

// onStoreEvents is the store subscription. It runs with the store locked, so
// it only drops stale routes, queues and signals. Every batch of events wakes
// the primary notifier, which reads the state afresh: that also covers
// state.StateRestored (the whole state replaced by a snapshot), which has no
// listener event of its own.
func (c *Controller) onStoreEvents(evs []state.Event) {
	c.routes.invalidate(evs)
	for _, ev := range evs {
		if e, ok := translate(ev); ok {
			c.events.push(e)
		}
	}
	if len(evs) > 0 {
		c.kickPrimary()
	}
}

// translate maps a state event to a listener event; ok is false for events
// listeners do not see (batch events, handled elsewhere; StateRestored).
func translate(ev state.Event) (Event, bool) {
	var k EventKind
	switch ev.Kind {
	case state.ChannelRegistered:
		k = EventChannelRegistered
	case state.ChannelUnregistered:
		k = EventChannelUnregistered
	case state.PrimaryElected:
		k = EventPrimaryElected
	case state.PrimaryEvicted:
		k = EventPrimaryEvicted
	default:
		return Event{}, false
	}
	return Event{Kind: k, TargetID: ev.TargetID, ChannelID: ev.ChannelID, NodeID: ev.NodeID, Epoch: ev.Epoch}, true
}

// dispatcher delivers listener events in order from one goroutine, so a slow
// listener never blocks the store. Its queue is unbounded: it grows only with
// registry changes, which a listener that keeps up drains at once.
type dispatcher struct {
	fn  func(Event)
	log *slog.Logger

	mu     sync.Mutex // protects queue
	queue  []Event
	kick   chan struct{} // buffered(1)
	closed chan struct{} // closed by stop
	once   sync.Once
}

func newDispatcher(fn func(Event), log *slog.Logger) *dispatcher {
	return &dispatcher{fn: fn, log: log, kick: make(chan struct{}, 1), closed: make(chan struct{})}
}

// push queues e; it never blocks.
func (d *dispatcher) push(e Event) {
	if d.fn == nil {
		return
	}
	d.mu.Lock()
	d.queue = append(d.queue, e)
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// stop makes run deliver what is queued and return.
func (d *dispatcher) stop() { d.once.Do(func() { close(d.closed) }) }

func (d *dispatcher) run() {
	for {
		stopping := false
		select {
		case <-d.kick:
		case <-d.closed:
			stopping = true
		}
		for {
			d.mu.Lock()
			batch := d.queue
			d.queue = nil
			d.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, e := range batch {
				d.deliver(e)
			}
		}
		if stopping {
			return
		}
	}
}

// deliver calls the listener; a panic is logged, not fatal, so one bad event
// does not stop delivery of the next ones.
func (d *dispatcher) deliver(e Event) {
	defer func() {
		if p := recover(); p != nil {
			d.log.Error("controller: OnEvent panicked", "event", e.Kind, "target", e.TargetID, "panic", p)
		}
	}()
	d.fn(e)
}
