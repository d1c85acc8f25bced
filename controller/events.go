package controller

import (
	"log/slog"

	"github.com/exchangekit/exchange/internal/queue"
	"github.com/exchangekit/exchange/state"
)

// onStoreEvents is the store subscription. It runs with the store locked, so
// it only drops stale routes, queues and signals, in O(events): it records
// what the primary notifier must look at again (the targets whose primary or
// channels changed, this node's channels that were unregistered, everything
// after state.StateRestored, which replaces the whole state and has no
// listener event of its own) and wakes it.
func (c *Controller) onStoreEvents(evs []state.Event) {
	c.routes.invalidate(evs)
	for _, ev := range evs {
		if ev.Kind == state.PrimaryEvicted {
			// No channel of the target is left to take over. (An election
			// is logged by the node holding the channel once its connector
			// is told: tellPrimary.)
			c.log.Info("controller: primary evicted: the target has no channel left", "target", ev.TargetID,
				"epoch", ev.Epoch)
		}
		if e, ok := translate(ev); ok {
			c.events.Push(e)
		}
	}
	if c.dirty.record(c.nodeID, evs) {
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
// registry changes, which a listener that keeps up drains at once. Close (the
// controller's, last) delivers what is queued.
type dispatcher = queue.Dispatcher[Event]

// newDispatcher returns the dispatcher of fn. A panic in fn is logged, not
// fatal, so one bad event does not stop delivery of the next ones.
func newDispatcher(fn func(Event), log *slog.Logger) *dispatcher {
	return queue.New(fn, func(e Event, p any) {
		log.Error("controller: OnEvent panicked", "event", e.Kind, "target", e.TargetID, "panic", p)
	})
}
