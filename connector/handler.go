package connector

import (
	"context"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// handler returns the command.Handler of sess's channel: the built-ins, then
// the user's Mux (through the dedup window).
func (c *Connector) handler(sess *session) command.Handler {
	return command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		// The channel may hand over a command before connect has published
		// sess; built-ins must see it published (a PRIMARY must not be taken
		// for one of a dead channel, nor come before Connected).
		if err := awaitReady(ctx, sess); err != nil {
			return nil, err
		}
		if sess.heartbeat > 0 {
			sess.last.Store(int64(time.Since(sess.born))) // the heartbeat watchdog (watchSilence) looks at it
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

// awaitReady waits until sess is published, or ctx ends. It looks at ready
// first: it nearly always is, and asking a handler context for its Done
// channel costs a timer.
func awaitReady(ctx context.Context, sess *session) error {
	select {
	case <-sess.ready:
		return nil
	default:
	}
	select {
	case <-sess.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// badPayload answers a built-in command whose payload does not decode.
func badPayload(cmd *command.Command, err error) *command.Reply {
	r := command.Failed(cmd, err.Error())
	r.Code = 400
	return r
}

// goodBye answers GOOD_BYE with SUCCEEDED, having ended the session
// (goodByeReceived): the channel is detached, the reply goes out, the channel
// closes, and Run reconnects or stops.
func (c *Connector) goodBye(sess *session, cmd *command.Command) (*command.Reply, error) {
	p, err := command.Decode[command.GoodByePayload](cmd.Payload)
	if err != nil {
		return badPayload(cmd, err), nil
	}
	c.goodByeReceived(sess, p)
	c.log.Info("connector: GOOD_BYE received", "channelId", sess.channelID, "reconnect", p.Reconnect)
	return command.Succeeded(cmd, command.GoodByeReplyPayload{TargetID: p.TargetID})
}

// primaryCmd applies PRIMARY{primary, epoch}. A PRIMARY whose epoch is below
// the highest seen for the target is stale and ignored; one for a channel that
// is no longer live is ignored too. Both are answered SUCCEEDED anyway.
func (c *Connector) primaryCmd(sess *session, cmd *command.Command) (*command.Reply, error) {
	p, err := decodePrimary(cmd.Payload)
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
	if healthy && detail == "" { // the usual answer, encoded once
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded,
			Payload: healthyPayload[:len(healthyPayload):len(healthyPayload)]}, nil
	}
	return command.Succeeded(cmd, command.HealthCheckReplyPayload{Healthy: healthy, Detail: detail})
}

// healthyPayload is command.HealthCheckReplyPayload{Healthy: true} encoded,
// the answer to nearly every HEALTH_CHECK. Replies share it: nothing writes
// to a reply's payload (and its capacity ends at its length, so an append
// copies).
var healthyPayload = func() []byte {
	b, err := command.Encode(command.HealthCheckReplyPayload{Healthy: true})
	if err != nil {
		panic(err)
	}
	return b
}()

// user runs a user command through the dedup window: a command whose id
// completed recently is answered from the window; one whose id is running
// waits for that run; one whose id was used, recently or by a running
// command, with another type or payload is refused (idReused); otherwise the handler runs here, on the channel's
// handler goroutine, but with a context that ends at the command's deadline
// or when Run ends, not when the channel closes, so work cut off from its
// caller by a reconnection still completes and its reply waits in the window
// for the retry. (The channel's Close, which the connector runs in the
// background, waits for it; Run waits for that Close.)
func (c *Connector) user(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	h, ok := c.mux.Handler(cmd.Type)
	if !ok {
		return nil, fmt.Errorf("%w %q", command.ErrUnknownCommand, cmd.Type)
	}
	if c.window == nil || cmd.FreshID {
		// An id its sender made for this delivery alone never comes
		// again (command.Command.FreshID): nothing to remember.
		return h.Handle(ctx, cmd)
	}
	f, found := c.window.join(cmd.ID, c.window.digestOf(cmd))
	switch found {
	case joinConflict:
		c.log.Warn("connector: command id reused for a different command; refused", "command", cmd.String())
		return idReused(cmd), nil
	case joinDone:
		c.log.Debug("connector: duplicate command answered from the window", "command", cmd.String())
		return f.reply.Clone(), nil
	case joinRunning:
		c.log.Debug("connector: duplicate command joins the running one", "command", cmd.String())
		select {
		case <-f.done:
			return f.reply.Clone(), f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	hctx, cancel := channel.DetachInline(ctx, c.runCtx) // ctx is not used after this
	r, err := c.runUser(hctx, h, cmd)
	cancel()
	return c.window.finish(cmd, f, r, err), err // the window's copy of r, which the channel sends as it is
}

// codeIDReused is the code of the ERROR reply to a command whose id the
// window knows for a different command (HTTP 409 Conflict).
const codeIDReused = 409

// idReused answers a command that reuses the id of a different command (same
// id, another type or payload). Its handler does not run, and the answer is an
// ERROR, which the window does not remember.
func idReused(cmd *command.Command) *command.Reply {
	r := command.Failed(cmd, fmt.Sprintf("command id %s was already used for a different command", cmd.ID))
	r.Code = codeIDReused
	return r
}

// runUser calls h, turning a panic into an error (the channel answers it
// NO_REPLY) recorded in the window, so that a duplicate waiting for this run
// is not left waiting.
func (c *Connector) runUser(ctx context.Context, h command.Handler, cmd *command.Command) (r *command.Reply, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("connector: handler panicked", "command", cmd.String(), "panic", fmt.Sprint(p))
			r, err = nil, fmt.Errorf("handler for %s panicked: %v", cmd.Type, p)
		}
	}()
	return h.Handle(ctx, cmd)
}
