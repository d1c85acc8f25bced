package connector

import (
	"context"
	"fmt"

	"github.com/exchangekit/exchange/command"
)

// handler returns the command.Handler of sess's channel: the built-ins, then
// the user's Mux (through the dedup window).
func (c *Connector) handler(sess *session) command.Handler {
	return command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		// The channel may hand over a command before connect has published
		// sess; built-ins must see it published (a PRIMARY must not be taken
		// for one of a dead channel, nor come before Connected).
		select {
		case <-sess.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case sess.touch <- struct{}{}:
		default:
		}
		switch cmd.Type {
		case command.TypeGoodBye:
			return c.goodBye(sess, cmd)
		case command.TypePrimary:
			return c.primaryCmd(sess, cmd)
		case command.TypeHealthCheck:
			return c.health(ctx, cmd)
		case command.TypeHello:
			return c.mux.Handle(ctx, cmd) // after the handshake: unknown, unless the user says otherwise
		}
		return c.user(ctx, cmd)
	})
}

// badPayload answers a built-in command whose payload does not decode.
func badPayload(cmd *command.Command, err error) *command.Reply {
	r := command.Failed(cmd, err.Error())
	r.Code = 400
	return r
}

// goodBye answers GOOD_BYE with SUCCEEDED and tells Run's loop, which detaches
// the channel, lets the reply out, closes, and reconnects or stops.
func (c *Connector) goodBye(sess *session, cmd *command.Command) (*command.Reply, error) {
	p, err := command.Decode[command.GoodByePayload](cmd.Payload)
	if err != nil {
		return badPayload(cmd, err), nil
	}
	select {
	case sess.goodbye <- p:
	default: // a GOOD_BYE is already being acted on
	}
	c.log.Info("connector: GOOD_BYE received", "channelId", sess.channelID, "reconnect", p.Reconnect)
	return command.Succeeded(cmd, command.GoodByeReplyPayload{TargetID: p.TargetID})
}

// primaryCmd applies PRIMARY{primary, epoch}. A PRIMARY whose epoch is below
// the highest seen for the target is stale and ignored; one for a channel that
// is no longer live is ignored too. Both are answered SUCCEEDED anyway.
func (c *Connector) primaryCmd(sess *session, cmd *command.Command) (*command.Reply, error) {
	p, err := command.Decode[command.PrimaryPayload](cmd.Payload)
	if err != nil {
		return badPayload(cmd, err), nil
	}
	c.mu.Lock()
	switch high := c.maxEpoch[sess.targetID]; {
	case sess.detached:
		c.log.Debug("connector: PRIMARY on a closed channel ignored", "channelId", sess.channelID)
	case p.Epoch < high:
		c.log.Warn("connector: stale PRIMARY ignored", "channelId", sess.channelID,
			"primary", p.Primary, "epoch", p.Epoch, "highestEpoch", high)
	default:
		c.maxEpoch[sess.targetID] = p.Epoch
		if p.Primary != c.primary || p.Epoch != c.epoch {
			c.primary, c.epoch = p.Primary, p.Epoch
			c.enqueuePrimary(p.Primary, p.Epoch)
		}
	}
	c.mu.Unlock()
	return command.Succeeded(cmd, command.PrimaryReplyPayload{})
}

// health answers HEALTH_CHECK: the user's Mux handler if it has one (the user
// overrides the built-in, as in the reference), else Config.Health.
func (c *Connector) health(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	if h, ok := c.mux.Handler(command.TypeHealthCheck); ok {
		return h.Handle(ctx, cmd)
	}
	healthy, detail := true, ""
	if c.cfg.Health != nil {
		healthy, detail = c.cfg.Health(ctx)
	}
	return command.Succeeded(cmd, command.HealthCheckReplyPayload{Healthy: healthy, Detail: detail})
}

// user runs a user command through the dedup window: a command whose id
// completed recently is answered from the window; one whose id is running
// waits for that run; otherwise the handler runs on a goroutine owned by the
// Connector, with a context that ends at the command's deadline or when Run
// ends, but not when the channel closes, so work cut off from its caller by a
// reconnection still completes and its reply waits in the window for the
// retry.
func (c *Connector) user(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	h, ok := c.mux.Handler(cmd.Type)
	if !ok {
		return nil, fmt.Errorf("%w %q", command.ErrUnknownCommand, cmd.Type)
	}
	if c.window == nil {
		return h.Handle(ctx, cmd)
	}
	cached, f, first := c.window.join(cmd.ID)
	if cached != nil {
		c.log.Debug("connector: duplicate command answered from the window", "command", cmd.String())
		return cached.reply.Clone(), nil
	}
	if first {
		var hctx context.Context
		var cancel context.CancelFunc
		if dl, ok := ctx.Deadline(); ok {
			hctx, cancel = context.WithDeadline(c.runCtx, dl)
		} else {
			hctx, cancel = context.WithCancel(c.runCtx)
		}
		cmd := cmd.Clone()
		c.wg.Go(func() {
			defer cancel()
			r, err := c.runUser(hctx, h, cmd)
			c.window.finish(cmd.ID, f, r, err)
		})
	} else {
		c.log.Debug("connector: duplicate command joins the running one", "command", cmd.String())
	}
	select {
	case <-f.done:
		return f.reply.Clone(), f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// runUser calls h, turning a panic into an error (the channel answers it
// NO_REPLY), since it runs on the Connector's goroutine, not the channel's.
func (c *Connector) runUser(ctx context.Context, h command.Handler, cmd *command.Command) (r *command.Reply, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("connector: handler panicked", "command", cmd.String(), "panic", fmt.Sprint(p))
			r, err = nil, fmt.Errorf("handler for %s panicked: %v", cmd.Type, p)
		}
	}()
	return h.Handle(ctx, cmd)
}
