package controller

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/exchangekit/exchange/state"
)

// rebalance spreads connectors over the nodes after a node joins (the
// reference's rebalancing, §5.5, without its weakness 18). Every node
// decides for its own channels only: once the count of live members has
// grown and stayed so for RebalanceDelay (debounce: several nodes joining in
// a row give one round), a node holding more than its fair share of the
// cluster's channels (the total over the live nodes, rounded up, plus a
// slack of a tenth) asks that many of its channels to reconnect
// (GOOD_BYE{reconnect:true}: the connector moves to its next endpoint).
// It never moves a primary channel, nor one with commands in flight, so no
// role changes hands and no command is cut; at most half of its channels
// move in one round. Each move is an EventChannelMoved.
func (c *Controller) rebalance(ctx context.Context) {
	// How often to look at the membership for a node that joined.
	t := time.NewTicker(min(time.Second, max(c.cfg.RebalanceDelay/4, 10*time.Millisecond)))
	defer t.Stop()
	seen := c.liveMembers()
	var due time.Time // when the grown membership is due for a round
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		switch live := c.liveMembers(); {
		case live > seen:
			seen, due = live, now.Add(c.cfg.RebalanceDelay) // (re)start the debounce
		case live < seen:
			seen = live // a node left: the others' share grows, nothing to move
		case !due.IsZero() && now.After(due):
			due = time.Time{}
			c.rebalanceRound(ctx, live)
		}
	}
}

// liveMembers counts the live nodes of the cluster (1 when standalone).
func (c *Controller) liveMembers() int {
	n := 0
	for _, m := range c.Cluster().Members {
		if m.State == "alive" {
			n++
		}
	}
	return max(n, 1)
}

// rebalanceRound moves this node's excess channels, if any.
func (c *Controller) rebalanceRound(ctx context.Context, live int) {
	locals := c.locals()
	var total, mine int
	primaries := map[string]bool{}
	c.store.View(func(s *state.State) {
		total = s.ChannelCount()
		mine = len(s.NodeChannels(c.nodeID))
		for _, p := range s.Primaries {
			primaries[p.ChannelID] = true
		}
	})
	fair := (total + live - 1) / live
	excess := mine - fair - fair/10
	if excess <= 0 {
		return
	}
	excess = min(excess, max(mine/2, 1))
	var movable []*local
	for id, lc := range locals {
		if !primaries[id] && lc.ch.Err() == nil && lc.ch.InFlight() == 0 {
			movable = append(movable, lc)
		}
	}
	// The newest channels move first: the oldest have been here longest and
	// are the likeliest to be primaries' successors.
	slices.SortFunc(movable, func(a, b *local) int { return cmp.Compare(b.registeredAt, a.registeredAt) })
	movable = movable[:min(len(movable), excess)]
	if len(movable) == 0 {
		return
	}
	c.log.Info("controller: rebalancing: asking connectors to move to other nodes", "moving", len(movable),
		"channels", mine, "fairShare", fair, "liveNodes", live)
	c.goodbyeAll(ctx, movable, causeRebalance)
	for _, lc := range movable {
		c.events.Push(Event{Kind: EventChannelMoved, TargetID: lc.targetID, ChannelID: lc.id, NodeID: c.nodeID})
	}
}
