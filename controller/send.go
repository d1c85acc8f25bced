package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller/internal/route"
	"github.com/exchangekit/exchange/state"
)

// Send sends cmd to one channel of target and waits for its reply. It picks a
// local channel of the target, the one with the fewest commands in flight
// (idle channels take turns), or else one held by another node, to which the
// command is forwarded in one hop (Cluster.Forward). The command hot path
// never touches the raft log: it reads the local replica of the state only.
//
// The reply timeout is ctx's deadline or, without one, the channel's
// DefaultTimeout (60 s). A reply with status ERROR is a reply, not an error.
// Errors: *NoChannelError (wraps ErrNoChannel), at once, when the target has
// no channel; otherwise a *SendError, whose PlainMessage says what went wrong
// in words, wrapping:
//   - ErrForwardingUnavailable (state.ErrNodeUnavailable), wrapped, when
//     the chosen channel's node cannot be reached;
//   - ErrClosed when the controller is closed;
//   - the channel's errors, wrapped: context.DeadlineExceeded (timeout),
//     channel.ErrClosed (the channel closed meanwhile),
//     *channel.UnknownCommandError, *channel.RemoteError, *channel.BusyError.
func (c *Controller) Send(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	reply, _, err := c.SendVia(ctx, targetID, cmd, false)
	return reply, err
}

// SendPrimary is Send to the target's primary channel only. Without a primary
// it fails at once with a *NoChannelError whose Primary field is set.
func (c *Controller) SendPrimary(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	reply, _, err := c.SendVia(ctx, targetID, cmd, true)
	return reply, err
}

// Route is where Send sent a command: the channel chosen and the node that
// holds it.
type Route struct {
	ChannelID string
	NodeID    string
}

// SendVia is Send, or SendPrimary when primaryOnly is set, that also returns
// the route chosen: the zero Route when none was (no channel, or the
// controller closed), else the channel the command was sent on, whether or
// not a reply came back. The management API reports it with the reply.
//
// Every send runs in an "exchange.send" span (OpenTelemetry, from the global
// tracer provider: a no-op unless the program installed one), a child of
// ctx's span, with the target, command type, route (channel, node, local or
// remote) and outcome as attributes; the channel carries its trace context to
// the handler in the command's metadata.
func (c *Controller) SendVia(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, Route, error) {
	if cmd == nil {
		return nil, Route{}, errors.New("controller: send needs a command")
	}
	ctx, span := startSendSpan(ctx, targetID, cmd, primaryOnly)
	reply, rt, local, err := c.sendVia(ctx, targetID, cmd, primaryOnly)
	endSendSpan(span, rt, local, reply, err)
	return reply, rt, err
}

// sendVia is SendVia without its span; it also says whether the route was
// local.
func (c *Controller) sendVia(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, Route, bool, error) {
	if c.ctx.Err() != nil {
		return nil, Route{}, false, &SendError{Command: cmd, TargetID: targetID, Err: ErrClosed}
	}
	choice, lc := c.route(targetID, primaryOnly)
	rt := Route{ChannelID: choice.ChannelID, NodeID: choice.NodeID}
	switch choice.Kind {
	case route.Local:
		reply, err := lc.ch.Send(ctx, cmd)
		if err != nil {
			return nil, rt, true, &SendError{Command: cmd, TargetID: targetID, ChannelID: lc.id, Err: err}
		}
		return reply, rt, true, nil
	case route.Remote:
		reply, err := c.store.Forward(ctx, state.NodeID(choice.NodeID), state.ChannelID(choice.ChannelID), cmd)
		if err != nil {
			return nil, rt, false, &SendError{Command: cmd, TargetID: targetID, NodeID: choice.NodeID, Err: err}
		}
		return reply, rt, false, nil
	}
	return nil, Route{}, false, &NoChannelError{TargetID: targetID, Primary: primaryOnly}
}

// deliver is the receiving side of Cluster.Forward: it sends cmd, forwarded
// by another node, to the local channel ch. It never forwards again (one hop,
// never two): a channel this node does not hold, or no longer holds, is a
// closed channel to the sender, which picks another on its next try.
func (c *Controller) deliver(ctx context.Context, ch state.ChannelID, cmd *command.Command) (*command.Reply, error) {
	lc, err := c.deliveryChannel(ch, cmd)
	if err != nil {
		return nil, err
	}
	reply, err := lc.ch.Send(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("controller: deliver %s to channel %s: %w", cmd, ch, err)
	}
	return reply, nil
}

// deliveryChannel is the local channel ch, to which deliver and
// deliverAsync send cmd, or why there is none.
func (c *Controller) deliveryChannel(ch state.ChannelID, cmd *command.Command) (*local, error) {
	if cmd == nil {
		return nil, errors.New("controller: deliver needs a command")
	}
	if c.ctx.Err() != nil {
		// Also ErrForwardingUnavailable: the node a command was forwarded
		// to is going away, which its sender can act on (another node, later).
		return nil, fmt.Errorf("controller: deliver %s to channel %s: node %s is closing: %w: %w", cmd, ch, c.nodeID, ErrClosed, ErrForwardingUnavailable)
	}
	lc := c.localChannel(string(ch))
	if lc == nil {
		return nil, fmt.Errorf("controller: deliver %s: node %s holds no channel %s: %w", cmd, c.nodeID, ch, channel.ErrClosed)
	}
	return lc, nil
}

// asyncForwarding is implemented by a Cluster whose links can deliver
// forwarded commands without a goroutine waiting for each (cluster.Node,
// whose HandleForwardAsync takes a cluster.AsyncForwardFunc): the
// controller gives it deliverAsync beside deliver.
type asyncForwarding interface {
	HandleForwardAsync(h func(ctx context.Context, ch state.ChannelID, cmd *command.Command, done func(*command.Reply, error)))
}

// deliverAsync is deliver without waiting (cluster.AsyncForwardFunc): the
// command goes out with SendAsync, within cmd.Timeout, and done gets what
// deliver would return.
func (c *Controller) deliverAsync(ctx context.Context, ch state.ChannelID, cmd *command.Command, done func(*command.Reply, error)) {
	lc, err := c.deliveryChannel(ch, cmd)
	if err != nil {
		done(nil, err)
		return
	}
	err = lc.ch.SendAsync(ctx, cmd, cmd.Timeout, func(reply *command.Reply, err error) {
		if err != nil {
			err = fmt.Errorf("controller: deliver %s to channel %s: %w", cmd, ch, err)
		}
		done(reply, err)
	})
	if err != nil {
		done(nil, fmt.Errorf("controller: deliver %s to channel %s: %w", cmd, ch, err))
	}
}

// route lets route.Pick choose among the target's channels: its routes (from
// the state, see routes) with the live figures of the local ones. It returns
// the local channel chosen, if the choice is Local.
func (c *Controller) route(targetID string, primaryOnly bool) (route.Choice, *local) {
	tr := c.routes.get(targetID, c.buildRoutes)
	// The load of a local channel (InFlight, which takes the channel's
	// lock) only matters to choose among several local ones.
	locals := 0
	for _, lc := range tr.locals {
		if lc != nil {
			locals++
		}
	}
	weigh := !primaryOnly && locals > 1
	var buf [8]route.Candidate // on the stack for up to 8 channels
	cands := buf[:0]
	for i, cd := range tr.cands {
		if lc := tr.locals[i]; lc != nil {
			if lc.ch.Err() != nil {
				continue // registered to this node but dead: being unregistered
			}
			cd.Local = true
			if weigh {
				cd.InFlight = lc.ch.InFlight()
			}
		}
		cands = append(cands, cd)
	}
	choice := route.Pick(cands, primaryOnly, tr.primaryID, c.turn.Add(1))
	if choice.Kind != route.Local {
		return choice, nil
	}
	for i, cd := range tr.cands {
		if cd.ChannelID == choice.ChannelID {
			return choice, tr.locals[i]
		}
	}
	return route.Choice{}, nil // unreachable: Pick chose among cands
}

// buildRoutes reads the target's routes from the state: its active channels
// in registration order (those of this node only if they are live here) and
// its primary.
func (c *Controller) buildRoutes(targetID string) *targetRoutes {
	tr := &targetRoutes{}
	c.store.View(func(s *state.State) {
		tr.primaryID, _ = s.PrimaryOf(targetID)
		for _, ch := range s.TargetChannels(targetID) {
			if ch.Active {
				tr.cands = append(tr.cands, route.Candidate{ChannelID: ch.ID, NodeID: ch.NodeID})
			}
		}
	})
	tr.locals = make([]*local, len(tr.cands))
	kept := tr.cands[:0]
	c.mu.Lock()
	for _, cd := range tr.cands {
		var lc *local
		if cd.NodeID == c.nodeID {
			if lc = c.local[cd.ChannelID]; lc == nil {
				continue // registered to this node but not live: being unregistered
			}
		}
		tr.locals[len(kept)] = lc
		kept = append(kept, cd)
	}
	c.mu.Unlock()
	tr.cands, tr.locals = kept, tr.locals[:len(kept)]
	return tr
}

// targetRoutes is what the state says about where a target's commands may
// go. It is immutable once built.
type targetRoutes struct {
	primaryID string
	cands     []route.Candidate // ChannelID and NodeID; Local and InFlight are set per send
	locals    []*local          // parallel to cands: the live local channel, nil for other nodes'
}

// routeCache keeps each target's routes between the state changes that
// affect them, so that Send does not read (and sort) the registry every
// time. Every change of a target's channels or primary comes with a state
// event naming the target (state.Apply's contract), which drops the entry;
// a restored snapshot drops them all. Channels that die before their
// unregistration is applied are skipped by route (their Err is set), and a
// new local channel is added to the controller before it is registered, so
// an entry never lacks a live channel.
type routeCache struct {
	mu      sync.Mutex
	live    bool   // subscribed to the store's events: entries may be kept
	version uint64 // bumped by every invalidation
	targets map[string]*targetRoutes
}

// get returns target's routes, from the cache or built by build (and kept
// unless the state changed meanwhile).
func (rc *routeCache) get(target string, build func(string) *targetRoutes) *targetRoutes {
	rc.mu.Lock()
	tr, live, version := rc.targets[target], rc.live, rc.version
	rc.mu.Unlock()
	if tr != nil {
		return tr
	}
	tr = build(target)
	rc.mu.Lock()
	if live && rc.version == version { // no event since: tr is current
		if rc.targets == nil {
			rc.targets = make(map[string]*targetRoutes)
		}
		rc.targets[target] = tr
	}
	rc.mu.Unlock()
	return tr
}

// start enables caching; call it once subscribed to the store's events.
func (rc *routeCache) start() {
	rc.mu.Lock()
	rc.live = true
	rc.version++
	rc.mu.Unlock()
}

// invalidate drops the routes that evs change.
func (rc *routeCache) invalidate(evs []state.Event) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, ev := range evs {
		switch ev.Kind {
		case state.ChannelRegistered, state.ChannelUnregistered, state.PrimaryElected, state.PrimaryEvicted:
			delete(rc.targets, ev.TargetID)
			rc.version++
		case state.StateRestored:
			clear(rc.targets)
			rc.version++
		}
	}
}
