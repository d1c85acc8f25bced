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
			// (this one was unregistered by the same change that added it);
			// superseded if that channel is a later attempt of lc's own
			// connector instance.
			var replaced, superseded bool
			if lc.connectorID != "" {
				for _, nw := range s.ConnectorChannels(lc.targetID, lc.connectorID) {
					if lc.instance != "" && nw.Instance == lc.instance {
						superseded = true
					} else {
						replaced = true
					}
				}
			}
			lc.goneOnce.Do(func() {
				lc.replaced.Store(replaced)
				lc.superseded.Store(superseded && !replaced)
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
// take the target from each other in turn: the older one stops. Otherwise
// (taken over by a later attempt of its own connector instance, or removed
// for another reason) it is told GOOD_BYE{reconnect:true}.
func (c *Controller) retire(ctx context.Context, lc *local) {
	replaced := lc.replaced.Load()
	cause := causeRemoved
	switch {
	case replaced:
		cause = causeTakeOver
		c.log.Warn("controller: channel taken over by a newer channel of its connector; closing it",
			"channel", lc.id, "target", lc.targetID, "connector", lc.connectorID, "reason", cause.Reason)
	case lc.superseded.Load():
		// The connector itself moved on to a later attempt: nothing to warn
		// about, and it must not be told to stop.
		cause = causeSuperseded
		c.log.Info("controller: channel superseded by a later connection attempt of its connector; closing it",
			"channel", lc.id, "target", lc.targetID, "connector", lc.connectorID, "instance", lc.instance,
			"attempt", lc.attempt)
	default:
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
