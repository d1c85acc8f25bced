package controller

import (
	"context"
	"time"
)

// watchIsolation sends this node's connectors away while the node is cut off
// from the cluster's leader for longer than IsolationTimeout (a minority
// partition, a lost quorum): registrations and unregistrations cannot be
// applied there, primaries cannot change, and the connectors are better
// served by the healthy side. Each channel is told GOOD_BYE{reconnect:true}
// and closed, and new connections are refused (retryably: the connector
// tries its next endpoint) until the leader is heard again.
func (c *Controller) watchIsolation(ctx context.Context) {
	every := max(c.cfg.IsolationTimeout/4, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		last := c.store.LeaderContact()
		cut := last.IsZero() || time.Since(last) > c.cfg.IsolationTimeout
		switch {
		case cut && !c.isolated.Load():
			c.isolated.Store(true)
			var locals []*local
			for _, lc := range c.locals() {
				locals = append(locals, lc)
			}
			c.log.Warn("controller: cut off from the cluster's leader; sending connectors to other nodes",
				"lastContact", last, "bound", c.cfg.IsolationTimeout, "channels", len(locals))
			c.events.Push(Event{Kind: EventIsolated, NodeID: c.nodeID})
			c.goodbyeAll(ctx, locals, causeIsolation) // each channel's watcher unregisters it once the leader is back
		case !cut && c.isolated.Load():
			c.isolated.Store(false)
			c.log.Info("controller: in contact with the cluster's leader again; accepting connectors")
			c.events.Push(Event{Kind: EventRejoined, NodeID: c.nodeID})
		}
	}
}
