package controller

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// retireUnregistered finds the live local channels the state no longer has,
// although they were registered, and retires them (retireLater). Another node removed them: a newer channel of the same
// connector took them over (state.RegisterChannel TakeOver, decision 0018),
// or the leader removed this node's channels, taking it for gone. A channel
// the state does not have must not stay open: nothing would health-check it,
// route to it or ever unregister it. The primary notifier calls it on every
// wake, with the local channels registered or unregistered since the last
// one (ids), or all of them (all: the periodic reconcile, a restored
// snapshot); it does not block.
func (c *Controller) retireUnregistered(ids []string, all bool) {
	var locals []*local
	c.mu.Lock()
	if all {
		locals = slices.Collect(maps.Values(c.local))
	} else {
		for _, id := range ids {
			if lc := c.local[id]; lc != nil {
				locals = append(locals, lc)
			}
		}
	}
	c.mu.Unlock()
	if len(locals) == 0 {
		return
	}
	c.store.View(func(s *state.State) {
		for _, lc := range locals {
			if !lc.registered.Load() {
				continue // still registering
			}
			if ch, ok := s.Channels[lc.id]; ok && ch.NodeID == c.nodeID {
				continue
			}
			// Taken over if the connector has a channel for the target now
			// (this one was unregistered by the same change that added it).
			replaced := lc.connectorID != "" && len(s.ConnectorChannels(lc.targetID, lc.connectorID)) > 0
			lc.goneOnce.Do(func() {
				lc.replaced.Store(replaced)
				c.retireLater(lc)
			})
		}
	})
}

// retire closes a local channel the state no longer has (see
// retireUnregistered), without unregistering it again. A channel taken over
// by a newer one of its connector is presumed dead (half-open); in case it is
// not, it is told GOOD_BYE{reconnect:false}, best effort within
// GoodByeTimeout, so that two connectors configured with the same id do not
// take the target from each other in turn: the older one stops. Otherwise it
// is told GOOD_BYE{reconnect:true}, and its connector registers anew.
func (c *Controller) retire(ctx context.Context, lc *local) {
	replaced := lc.replaced.Load()
	cause := causeRemoved
	if replaced {
		cause = causeTakeOver
		c.log.Warn("controller: channel taken over by a newer channel of its connector; closing it",
			"channel", lc.id, "target", lc.targetID, "connector", lc.connectorID, "reason", cause.Reason)
	} else {
		c.log.Warn("controller: channel removed from the state by another node; closing it",
			"channel", lc.id, "target", lc.targetID, "connector", lc.connectorID, "reason", cause.Reason)
	}
	lc.intend(cause)
	gctx, cancel := context.WithTimeout(ctx, c.cfg.GoodByeTimeout)
	cmd := command.MustCommand(command.TypeGoodBye, command.GoodByePayload{TargetID: lc.targetID, Reconnect: !replaced})
	if _, err := lc.ch.Send(gctx, cmd); err != nil && !errors.Is(err, channel.ErrClosed) {
		c.log.Debug("controller: GOOD_BYE to a retired channel failed", "channel", lc.id, "err", err)
	}
	cancel()
	c.mu.Lock()
	if !c.closing { // once closing, Close owns the local channels
		delete(c.local, lc.id)
	}
	c.mu.Unlock()
	lc.closeWith(cause)
}
