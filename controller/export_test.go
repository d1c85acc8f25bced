package controller

import "context"

// QueuedOps returns how many ops wait in the group commit queue.
func (c *Controller) QueuedOps() int {
	c.applier.mu.Lock()
	defer c.applier.mu.Unlock()
	return len(c.applier.queue)
}

// HealthyPayload is the HEALTH_CHECK answer the health loop recognises
// without decoding it.
var HealthyPayload = healthyPayload

// LocalChannels returns how many live channels the node holds.
func (c *Controller) LocalChannels() int { return c.localCount() }

// CheckHealth runs one health check of the local channel id, as the health
// loop does, and reports whether it was answered healthy.
func (c *Controller) CheckHealth(ctx context.Context, id string) bool {
	lc := c.localChannel(id)
	if lc == nil {
		return false
	}
	before := lc.lastHealthy.Load()
	c.checkHealth(ctx, lc)
	return lc.lastHealthy.Load() != before
}

// Deliver is the receiving side of a forwarded command (Cluster.Forward).
var Deliver = (*Controller).deliver
