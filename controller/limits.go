package controller

import (
	"fmt"

	"github.com/exchangekit/exchange/state"
)

// localCount returns the number of live local channels.
func (c *Controller) localCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.local)
}

// checkTargetRoom refuses a new channel of target when the target already
// has MaxChannelsPerTarget channels in the cluster, not counting those of
// the same connector id (which the new one takes over).
func (c *Controller) checkTargetRoom(target, connectorID string) error {
	max := c.cfg.MaxChannelsPerTarget
	if max <= 0 {
		return nil
	}
	n := 0
	c.store.View(func(s *state.State) {
		n = len(s.TargetChannels(target))
		if connectorID != "" {
			n -= len(s.ConnectorChannels(target, connectorID))
		}
	})
	if n >= max {
		return fmt.Errorf("target %q already has %d channels, its limit (connect fewer connectors, or raise --max-channels-per-target)", target, max)
	}
	return nil
}
