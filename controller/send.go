package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller/internal/route"
	"github.com/exchangekit/exchange/state"
)

// forwarder sends a command to a channel held by another node (the cluster's
// node-to-node forwarding, one hop). It is nil until package cluster provides
// one; Send then fails with ErrForwardingUnavailable for remote channels.
type forwarder interface {
	Forward(ctx context.Context, nodeID, channelID, targetID string, cmd *command.Command) (*command.Reply, error)
}

// Send sends cmd to one channel of target and waits for its reply. It picks a
// local channel of the target, the one with the fewest commands in flight
// (idle channels take turns). The command hot path never touches the store's
// log: it reads the local copy of the state only.
//
// The reply timeout is ctx's deadline or, without one, the channel's
// DefaultTimeout (60 s). A reply with status ERROR is a reply, not an error.
// Errors:
//   - *NoChannelError (wraps ErrNoChannel), at once, when the target has no
//     channel;
//   - ErrForwardingUnavailable when the target's channels are all held by
//     other nodes;
//   - ErrClosed when the controller is closed;
//   - the channel's errors, wrapped: context.DeadlineExceeded (timeout),
//     channel.ErrClosed (the channel closed meanwhile),
//     *channel.UnknownCommandError, *channel.RemoteError, *channel.BusyError.
func (c *Controller) Send(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	return c.send(ctx, targetID, cmd, false)
}

// SendPrimary is Send to the target's primary channel only. Without a primary
// it fails at once with a *NoChannelError whose Primary field is set.
func (c *Controller) SendPrimary(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	return c.send(ctx, targetID, cmd, true)
}

func (c *Controller) send(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, error) {
	if cmd == nil {
		return nil, errors.New("controller: send needs a command")
	}
	if c.ctx.Err() != nil {
		return nil, fmt.Errorf("controller: send %s to target %q: %w", cmd, targetID, ErrClosed)
	}
	choice, locals := c.route(targetID, primaryOnly)
	switch choice.Kind {
	case route.Local:
		lc := locals[choice.ChannelID]
		reply, err := lc.ch.Send(ctx, cmd)
		if err != nil {
			return nil, fmt.Errorf("controller: send %s to target %q on channel %s: %w", cmd, targetID, lc.id, err)
		}
		return reply, nil
	case route.Remote:
		if c.forwarder == nil {
			return nil, fmt.Errorf("controller: send %s to target %q: channel %s is held by node %s: %w",
				cmd, targetID, choice.ChannelID, choice.NodeID, ErrForwardingUnavailable)
		}
		reply, err := c.forwarder.Forward(ctx, choice.NodeID, choice.ChannelID, targetID, cmd)
		if err != nil {
			return nil, fmt.Errorf("controller: send %s to target %q via node %s: %w", cmd, targetID, choice.NodeID, err)
		}
		return reply, nil
	}
	return nil, &NoChannelError{TargetID: targetID, Primary: primaryOnly}
}

// route gathers the target's candidates from the state and the live local
// channels and lets route.Pick choose. locals holds the local candidates.
func (c *Controller) route(targetID string, primaryOnly bool) (route.Choice, map[string]*local) {
	var (
		cands     []route.Candidate
		primaryID string
	)
	c.store.View(func(s *state.State) {
		primaryID, _ = s.PrimaryOf(targetID)
		for _, ch := range s.TargetChannels(targetID) {
			if ch.Active {
				cands = append(cands, route.Candidate{ChannelID: ch.ID, NodeID: ch.NodeID})
			}
		}
	})
	locals := make(map[string]*local)
	kept := cands[:0]
	for _, cd := range cands {
		if cd.NodeID != c.nodeID {
			kept = append(kept, cd)
			continue
		}
		lc := c.localChannel(cd.ChannelID)
		if lc == nil || lc.ch.Err() != nil {
			continue // registered to this node but dead: being unregistered
		}
		cd.Local, cd.InFlight = true, lc.ch.InFlight()
		locals[cd.ChannelID] = lc
		kept = append(kept, cd)
	}
	return route.Pick(kept, primaryOnly, primaryID, c.turn.Add(1)), locals
}
