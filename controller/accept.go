package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/backoff"
	"github.com/exchangekit/exchange/state"
)

// maxLinger bounds how long a refused connection is kept open so the
// connector can read the refusal before the connection closes.
const maxLinger = time.Second

// At most one "HELLO refused" line is logged per refusedLogInterval, and one
// line about connections refused for too many failed HELLOs per
// limitedLogInterval; each line says how many were not logged since the
// previous one (the metrics count them all).
const (
	refusedLogInterval = time.Second
	limitedLogInterval = 10 * time.Second
)

// acceptLoop accepts connections until ctx is done; each gets its own
// goroutine. It returns an error only when the listener is closed under it.
// Other Accept errors are logged and retried with backoff.
func (c *Controller) acceptLoop(ctx context.Context) error {
	bo := backoff.NewWaiter(backoff.Policy{Base: 5 * time.Millisecond, Max: time.Second})
	defer bo.Stop()
	for {
		conn, err := c.lis.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, channel.ErrClosed) {
				return fmt.Errorf("controller: listener closed: %w", err)
			}
			c.log.Warn("controller: accept failed; retrying", "err", err)
			if bo.Wait(ctx) != nil {
				return nil
			}
			continue
		}
		bo.Reset()
		c.workers.Go(func() {
			presize()
			c.serveConn(ctx, conn)
		})
	}
}

// presizeBytes is the stack frame presize makes room for.
const presizeBytes = 12 << 10

// presize grows the calling goroutine's stack at once to 16 KiB, skipping
// the 8 KiB size a Connect handler's stack has for the channel's life.
//
// The runtime carves goroutine stacks of one size out of 32 KiB spans and
// gives a span back only once all its stacks are free. The goroutines that
// run handshakes come and go by the thousand in a reconnect storm, next to
// the Connect handlers that stay: if they grew through 8 KiB (the
// handshake's depth) they would take 8 KiB slots among the handlers' ones
// and, once gone, leave each span that still holds a handler's stack
// partly empty but in use: 4–5 KiB per idle connector after a storm
// (docs/benchmarks.md, "Memory per idle connector, second pass"). The
// goroutines that send PRIMARY notices, up to PrimaryConcurrency at once
// in a storm, call it too (third pass).
//
//go:noinline
func presize() {
	var frame [presizeBytes]byte
	presizeSink(&frame)
}

//go:noinline
func presizeSink(*[presizeBytes]byte) {}

// serveConn runs one connection's handshake, then queues its channel's
// registration and returns: the registration's outcome is handled when it
// comes (register), and no goroutine waits for it.
func (c *Controller) serveConn(ctx context.Context, conn channel.Conn) {
	lc, metadata := c.handshake(ctx, conn)
	if lc == nil {
		return
	}
	c.register(ctx, lc, metadata)
}

// serveOnHandler is serveConn on a goroutine of the listener's, which hands
// it each connection (connHandlerListener): the gRPC server's Connect
// handler, which then hosts the channel's read loop (decision 0048). Close
// waits for the handshakes it runs.
func (c *Controller) serveOnHandler(conn channel.Conn) {
	if !c.handlers.enter() {
		_ = conn.Close() // closing: the connector will reconnect elsewhere
		return
	}
	defer c.handlers.exit()
	c.serveConn(c.ctx, conn)
}

// connHandlerListener is a Listener that can hand each new connection to a
// function on a goroutine of its own, instead of returning it from Accept
// (grpcchannel.Server.HandleConns: the stream's Connect handler, which would
// otherwise only wait). The function must make the connection's Channel
// before it returns (the goroutine then runs its read loop) and must not
// wait for that Channel to close.
type connHandlerListener interface {
	HandleConns(serve func(channel.Conn))
}

// register queues the registration of lc's channel. A channel with a
// connector id takes over that connector's other channels of the target,
// wherever they are held, unless it is a stale attempt of the same
// connector instance (decision 0018). The registration is dropped if the
// channel dies before it is applied (the connector gave up on it): a dead
// channel has nothing to take over.
func (c *Controller) register(ctx context.Context, lc *local, metadata map[string]string) {
	now := time.Now()
	lc.registeredAt = now.UnixNano()
	ch := state.Channel{
		ID:           lc.id,
		TargetID:     lc.targetID,
		ConnectorID:  lc.connectorID,
		NodeID:       c.nodeID,
		Active:       true,
		RegisteredAt: now,
		Metadata:     metadata,
		Instance:     lc.instance,
		Attempt:      lc.attempt,
	}
	gone := new(atomic.Bool)
	stop := lc.ch.AfterDone(func() {
		if gone.CompareAndSwap(false, true) {
			c.registrationFailed(ctx, lc, fmt.Errorf("register channel %s: %w", lc.id, lc.ch.Err()))
		}
	})
	c.applier.registerThen(lc.connectorID != "", ch, gone, func(err error) {
		// On the applier's goroutine: nothing here may block.
		stop()
		if err != nil {
			c.registrationFailed(ctx, lc, err)
			return
		}
		lc.registered.Store(true)
		c.dirty.markChannel(lc.id) // the notifier also closes it if the state unregistered it meanwhile
		c.kickPrimary()
		if c.log.Enabled(ctx, slog.LevelInfo) { // else its arguments are garbage all the same
			c.log.Info("controller: channel registered", "channel", lc.id, "target", lc.targetID,
				"connector", lc.connectorID, "peer", lc.peer.Addr)
		}
		c.watch(lc)
	})
}

// registrationFailed closes lc, whose registration failed with err or was
// given up because its channel died, on a goroutine of its own (closing a
// channel waits for its read loop).
func (c *Controller) registrationFailed(ctx context.Context, lc *local, err error) {
	c.watchers.goIfOpen(func() {
		switch {
		case ctx.Err() != nil: // closing: Close owns the channel
		case errors.Is(err, state.ErrSuperseded):
			// A stale attempt: the connector is on a later channel. No
			// GOOD_BYE: the stale channel is (nearly always) dead already.
			c.log.Info("controller: stale connection attempt not registered; closing it", "channel", lc.id,
				"target", lc.targetID, "connector", lc.connectorID, "instance", lc.instance, "attempt", lc.attempt, "err", err)
			c.dropLocal(lc, causeSuperseded)
		case lc.ch.Err() != nil:
			// Died while registering: unregister it, in case the registration
			// was applied after all (it was given up while being applied).
			// Logged as any other channel's end, with why, so that one search
			// finds it.
			c.logClosed(ctx, lc, "registration", "interrupted")
			c.dropLocal(lc, nil)
		default:
			c.log.Error("controller: cannot register channel; closing it", "channel", lc.id, "target", lc.targetID, "err", err)
			c.dropLocal(lc, &channel.CloseCause{Reason: "registration failed", Detail: err.Error(), Abnormal: true})
		}
	})
}

// watch unregisters lc the moment its channel dies, without a goroutine
// while it lives (decision 0021): the channel runs the function below when
// it dies. The other end of a registered channel, retire (when the state
// no longer has it, see retireUnregistered), and this one exclude each
// other through lc.ended; once c.ctx is done neither runs, as Close says
// goodbye to and unregisters every channel itself.
//
// The hook is kept for the channel's life: it holds only c and lc (the
// controller's context is c.ctx), 24 bytes rather than 48.
func (c *Controller) watch(lc *local) {
	lc.ch.AfterDone(func() {
		if !c.watchers.enter() {
			return // closing
		}
		defer c.watchers.exit()
		if c.ctx.Err() != nil || !lc.ended.CompareAndSwap(false, true) {
			return
		}
		c.logClosed(c.ctx, lc)
		c.dropLocal(lc, nil)
	})
}

// logClosed logs the end of lc's channel, with why: at WARN when that was
// abnormal, else at INFO.
func (c *Controller) logClosed(ctx context.Context, lc *local, attrs ...any) {
	// The reason and the line's arguments are made only for a line that is
	// logged: every reconnect closes a channel.
	if !c.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	reason, abnormal := lc.closeReason()
	level := slog.LevelInfo
	if abnormal {
		level = slog.LevelWarn
	} else if !c.log.Enabled(ctx, level) {
		return
	}
	c.log.Log(ctx, level, "controller: channel closed", append([]any{"channel", lc.id, "target", lc.targetID,
		"connector", lc.connectorID, "reason", reason}, attrs...)...)
}

// retireLater retires lc on a goroutine of its own (retire may wait for a
// GOOD_BYE), unless its channel died first or the controller is closing.
func (c *Controller) retireLater(lc *local) {
	c.watchers.goIfOpen(func() {
		if c.ctx.Err() != nil || !lc.ended.CompareAndSwap(false, true) {
			return
		}
		c.retire(c.ctx, lc)
	})
}

// gate tracks goroutines that may start only until it closes: closeAndWait
// refuses new ones and waits for those started. Unlike a bare WaitGroup it
// lets callbacks start late (a channel dying during Close) without racing
// with the Wait.
type gate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter counts the calling goroutine in, unless the gate is closed.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *gate) exit() { g.wg.Done() }

// goIfOpen runs f on a new goroutine, counted in, unless the gate is closed.
func (g *gate) goIfOpen(f func()) {
	if !g.enter() {
		return
	}
	go func() {
		defer g.exit()
		f()
	}()
}

// closeAndWait closes the gate and waits for the goroutines counted in.
func (g *gate) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// checkHello checks the identity a HELLO carries, as sent: the target may
// still be empty (an Authenticator may choose it).
func checkHello(h command.HelloPayload) error {
	if h.TargetID != "" {
		if err := command.CheckID("targetId", h.TargetID, command.MaxIDBytes); err != nil {
			return err
		}
	}
	if h.ConnectorID != "" {
		if err := command.CheckID("connectorId", h.ConnectorID, command.MaxIDBytes); err != nil {
			return err
		}
	}
	if h.Instance != "" {
		if err := command.CheckID("instance", h.Instance, command.MaxIDBytes); err != nil {
			return err
		}
	}
	return command.CheckMetadata(h.Metadata)
}

// invalidHello is the refusal (400) of a HELLO whose identity breaks the
// limits; err names the field and the limit.
func invalidHello(cmd *command.Command, err error) *command.Reply {
	r := command.Failed(cmd, "invalid HELLO: "+err.Error())
	r.Code = 400
	return r
}

// handshake runs the HELLO exchange and starts the channel; it returns the
// channel's metadata too (the state keeps it, the local record does not).
// It returns a nil *local when the connection was refused or broke (conn is
// then closed).
func (c *Controller) handshake(ctx context.Context, conn channel.Conn) (*local, map[string]string) {
	peer := channel.Peer(conn)
	if max := c.cfg.MaxChannels; max > 0 && c.localCount() >= max {
		c.refuseBeforeHello(ctx, conn, fmt.Errorf("controller: %w: node %s holds %d channels, its limit; connect to another node",
			channel.ErrLimitExceeded, c.nodeID, max))
		return nil, nil
	}
	if c.isolated.Load() {
		c.refuseBeforeHello(ctx, conn, fmt.Errorf("controller: %w: node %s is cut off from the cluster's leader; connect to another node",
			channel.ErrLimitExceeded, c.nodeID))
		return nil, nil
	}
	if src := peer.Source(); c.failures.blocked(src, time.Now()) {
		c.limited(ctx, conn, src)
		return nil, nil
	}
	// The HELLO's deadline is a timer that closes conn; ctx still ends the
	// handshake through AcceptHello. (A context per handshake, with its
	// timer, done channel and map of children, was garbage a registration
	// storm left between the channels' long-lived records.) The
	// Authenticator gets a context with the deadline.
	deadline := time.Now().Add(c.cfg.HelloTimeout)
	var timedOut atomic.Bool
	timer := time.AfterFunc(c.cfg.HelloTimeout, func() {
		timedOut.Store(true)
		_ = conn.Close()
	})

	var (
		said     command.HelloPayload // what the HELLO said (identity only), for the refusal's log line
		refusal  string               // metrics reason when the decider refused
		lc       *local
		metadata map[string]string
		coalesce bool // the connector accepts batch frames
	)
	decide := func(ctx context.Context, cmd *command.Command, hello command.HelloPayload) (*command.Reply, error) {
		said = command.HelloPayload{TargetID: hello.TargetID, ConnectorID: hello.ConnectorID}
		if hello.ProtocolVersion < 0 {
			refusal = "protocol"
			r := command.Failed(cmd, fmt.Sprintf("unsupported protocol version %d", hello.ProtocolVersion))
			r.Code = 400
			return r, nil
		}
		// What the connector says about itself is checked before the
		// Authenticator sees it, and again after (it may rewrite the target
		// and add metadata): everything here is stored with the channel.
		if err := checkHello(hello); err != nil {
			refusal = "protocol"
			return invalidHello(cmd, err), nil
		}
		req := HelloRequest{
			ConnectorID:     hello.ConnectorID,
			TargetID:        hello.TargetID,
			Token:           hello.Token,
			Metadata:        stripReserved(hello.Metadata),
			ProtocolVersion: hello.ProtocolVersion,
			Peer:            peer,
		}
		target := req.TargetID
		if a := c.cfg.Authenticator; a != nil {
			var err error
			actx, cancel := context.WithDeadline(ctx, deadline)
			target, err = a.Authenticate(actx, req)
			cancel()
			if err != nil {
				refusal = "unauthenticated"
				if errors.Is(err, ErrUnauthenticated) {
					return nil, err
				}
				c.log.Error("controller: authenticator failed", "peer", peer.Addr, "connector", req.ConnectorID, "err", err)
				return nil, fmt.Errorf("%w: authentication failed", ErrUnauthenticated)
			}
		}
		if target == "" {
			refusal = "protocol"
			r := command.Failed(cmd, "HELLO has no targetId: a connector must say which target it serves")
			r.Code = 400
			return r, nil
		}
		if err := command.CheckIdentity(hello.ConnectorID, target, req.Metadata); err != nil {
			refusal = "protocol"
			c.log.Warn("controller: identity over the limits after authentication", "peer", peer.Addr,
				"connector", req.ConnectorID, "err", err)
			return invalidHello(cmd, err), nil
		}
		if err := c.checkTargetRoom(target, hello.ConnectorID); err != nil {
			refusal = "limit"
			r := command.Failed(cmd, err.Error())
			r.Code = 429
			return r, nil
		}
		version := command.ProtocolVersion
		if hello.ProtocolVersion > 0 {
			version = min(version, hello.ProtocolVersion)
		}
		coalesce = slices.Contains(hello.Capabilities, command.CapabilityBatch)
		lc = &local{
			id:          command.NewID(),
			targetID:    target,
			connectorID: hello.ConnectorID,
			instance:    hello.Instance,
			attempt:     hello.Attempt,
			peer:        peer,
		}
		metadata = req.Metadata
		maxInFlight := c.cfg.Channel.MaxHandlers
		if maxInFlight == 0 {
			maxInFlight = channel.DefaultMaxHandlers
		}
		return command.Succeeded(cmd, command.HelloReplyPayload{
			TargetID:        target,
			ChannelID:       lc.id,
			ProtocolVersion: version,
			Limits:          command.Limits{MaxFrameBytes: channel.DefaultMaxFrameBytes, MaxInFlight: maxInFlight},
			HeartbeatMs:     c.cfg.HealthInterval.Milliseconds(),
			NodeID:          c.nodeID,
			Capabilities:    []string{command.CapabilityBatch}, // the gRPC twin unpacks batches
		})
	}

	_, _, err := channel.AcceptHello(ctx, conn, decide)
	if !timer.Stop() && err == nil {
		err = fmt.Errorf("channel: hello: %w", channel.ErrClosed) // the deadline passed as the reply went out
	}
	if timedOut.Load() {
		err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	}
	if err != nil {
		c.refused(ctx, timedOut.Load(), conn, peer, said, refusal, err)
		return nil, nil
	}
	chCfg := c.cfg.Channel
	chCfg.Coalesce = coalesce
	chCfg.InFlightTotal = &c.inFlight
	chCfg.Logger = channelLogger(chCfg.Logger, lc.id, lc.targetID)
	lc.ch = channel.New(conn, c.cfg.Handler, chCfg)
	if !c.addLocal(lc) {
		// Closing: the connector will reconnect elsewhere. The Channel dies
		// of its conn's end; not lc.ch.Close, which waits for the read loop:
		// on a Connect handler's goroutine (serveOnHandler) that loop runs
		// only once this returns.
		_ = conn.Close()
		return nil, nil
	}
	return lc, metadata
}

// refused handles a failed handshake: count it, let the connector read the
// refusal, close the connection.
func (c *Controller) refused(ctx context.Context, timedOut bool, conn channel.Conn, peer channel.PeerInfo, said command.HelloPayload,
	refusal string, err error) {
	reason := refusal
	switch {
	case ctx.Err() != nil: // closing: not the connector's fault
		reason = ""
	case reason != "":
	case timedOut:
		reason = "timeout"
	case errors.Is(err, channel.ErrProtocol), errors.Is(err, channel.ErrMalformedFrame):
		reason = "protocol"
	}
	if reason != "" {
		now := time.Now()
		if reason == "unauthenticated" || reason == "protocol" {
			c.failures.fail(peer.Source(), now)
		}
		if ok, suppressed := c.refusedLog.Allow(now); ok {
			c.log.Warn("controller: HELLO refused", "peer", peer.Addr, "target", said.TargetID,
				"connector", said.ConnectorID, "reason", reason, "err", err, "not_logged_since_last", suppressed)
		}
		if m := c.cfg.Metrics; m != nil {
			m.HelloRejected(reason)
		}
	} else {
		c.log.Debug("controller: connection ended before HELLO completed", "peer", peer.Addr, "err", err)
	}
	if reason != "" && reason != "timeout" {
		c.linger(ctx, conn)
	}
	_ = conn.Close()
}

// limited refuses conn, from a source that has used up its failed HELLOs,
// without looking at its HELLO: the Authenticator does not run. The peer is
// told to retry later (RESOURCE_EXHAUSTED over gRPC).
func (c *Controller) limited(ctx context.Context, conn channel.Conn, src string) {
	if m := c.cfg.Metrics; m != nil {
		m.HelloRejected("rate_limited")
	}
	if ok, suppressed := c.limitedLog.Allow(time.Now()); ok {
		c.log.Warn("controller: connections refused before HELLO: too many failed HELLOs from their source",
			"source", src, "rate", c.cfg.FailedHelloRate, "burst", c.cfg.FailedHelloBurst,
			"also_refused_since_last_line", suppressed)
	}
	c.refuseBeforeHello(ctx, conn, fmt.Errorf("controller: %w: too many failed HELLOs from %s; retry later", channel.ErrLimitExceeded, src))
}

// refuseBeforeHello refuses conn without looking at its HELLO, telling the
// peer err, which it can retry (RESOURCE_EXHAUSTED over gRPC: a connector
// backs off and tries its next endpoint).
func (c *Controller) refuseBeforeHello(ctx context.Context, conn channel.Conn, err error) {
	// Take the HELLO off the wire first, unread, waiting at most maxLinger:
	// ending the stream before the connector has sent it would make its
	// Send fail with a bare end of stream rather than with this reason.
	rctx, cancel := context.WithTimeout(ctx, min(maxLinger, c.cfg.HelloTimeout))
	stop := context.AfterFunc(rctx, func() { _ = conn.Close() })
	_, _ = conn.Recv()
	stop()
	cancel()
	if cw, ok := conn.(channel.CloseWithErrorer); ok {
		_ = cw.CloseWithError(err)
		return
	}
	_ = conn.Close()
}

// linger waits, at most maxLinger (or until ctx is done), for the peer to
// close conn after reading our refusal, discarding anything it sends.
// Closing at once could destroy the refusal before the peer reads it.
func (c *Controller) linger(ctx context.Context, conn channel.Conn) {
	lctx, cancel := context.WithTimeout(ctx, min(maxLinger, c.cfg.HelloTimeout))
	defer cancel()
	stop := context.AfterFunc(lctx, func() { _ = conn.Close() })
	defer stop()
	for {
		if _, err := conn.Recv(); err != nil {
			return
		}
	}
}
