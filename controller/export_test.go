package controller

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
