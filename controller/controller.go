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
	"github.com/exchangekit/exchange/internal/logthrottle"
	"github.com/exchangekit/exchange/state"
)

// Controller accepts channels from connectors, authenticates their HELLO,
// registers them in the replicated state, health-checks them, tells each
// whether it is its target's primary, and sends commands to targets. See the
// package documentation for the order of operations and the goroutines it
// runs.
//
// A Controller is safe for concurrent use.
type Controller struct {
	cfg    Config
	lis    channel.Listener
	store  Cluster
	log    *slog.Logger
	nodeID string

	ctx    context.Context // the workers' lifetime; cancelled first by Close
	cancel context.CancelFunc

	mu      sync.Mutex        // protects the fields below
	local   map[string]*local // channel id → live local channel
	running bool              // Run was called
	closing bool              // Close has begun: no new local channels
	unsub   func()            // store subscription

	workers   sync.WaitGroup // accept loop, connections until registered, health loop, primary notifier
	watchers  gate           // the work done when a registered channel dies or is retired (see watch)
	handlers  gate           // handshakes run on the listener's goroutines (serveOnHandler)
	applierWG sync.WaitGroup // the applier: stops with ctx, after the workers

	applier     *applier
	events      *dispatcher
	primaryKick chan struct{} // buffered(1): "the state changed, reconcile"
	dirty       primaryDirty  // what changed since the notifier last looked
	turn        atomic.Uint64 // rotates ties in routing
	routes      routeCache    // targets' routes, kept between state changes
	isolated    atomic.Bool   // cut off from the leader: connectors sent away
	inFlight    atomic.Int64  // InFlight summed over this node's channels (Counts)

	failures   *failureLimiter       // failed HELLOs per source
	refusedLog *logthrottle.Throttle // "HELLO refused" lines
	// primaryFailLog throttles "PRIMARY notification failed" lines.
	primaryFailLog *logthrottle.Throttle
	limitedLog     *logthrottle.Throttle // "refused: too many failed HELLOs" lines

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed when Close has finished
}

// local is a live channel held by this node.
type local struct {
	id          string
	targetID    string
	connectorID string
	instance    string // the connector instance and attempt its HELLO said (0/"" if none)
	attempt     uint64
	peer        channel.PeerInfo
	ch          *channel.Channel
	lastHealthy atomic.Int64 // unix nanoseconds of the last healthy reply; 0: none yet
	// registeredAt is when the channel's registration was asked for, in
	// unix nanoseconds (the state keeps the time.Time).
	registeredAt int64

	// registered is set once the channel is in the state; from then on, its
	// absence from the state means another node (or a take-over) removed it.
	registered atomic.Bool
	goneOnce   sync.Once   // the state no longer has the channel: retire it, once
	replaced   atomic.Bool // set before it is retired: taken over by a newer channel of another instance of its connector
	superseded atomic.Bool // set before it is retired: taken over by a later attempt of its own connector instance
	ended      atomic.Bool // set by the first of "the channel died" and "retire it" (see watch)
	// cause is why this side closes the channel, set before the GOOD_BYE
	// (the connector may end the stream before CloseWithCause runs).
	cause atomic.Pointer[channel.CloseCause]
}

// Why the controller closes a channel (channel.CloseCause); a failed health
// check carries its own detail.
var (
	causeShutdown  = &channel.CloseCause{Reason: "shutdown (controller closing)"}
	causeRebalance = &channel.CloseCause{Reason: "rebalancing (connector asked to move to another node)"}
	causeIsolation = &channel.CloseCause{Reason: "isolation (node cut off from the cluster's leader)", Abnormal: true}
	causeTakeOver  = &channel.CloseCause{Reason: "evicted by take-over (a newer channel of its connector)"}
	// causeSuperseded: the connector instance itself is on a later
	// connection attempt (decision 0018, stale attempts).
	causeSuperseded = &channel.CloseCause{Reason: "superseded by a later connection attempt of the same connector instance"}
	causeRemoved    = &channel.CloseCause{Reason: "removed from the state by another node", Abnormal: true}
)

// intend records why the controller is about to close lc; the first reason
// wins. Call it before the GOOD_BYE.
func (lc *local) intend(cause *channel.CloseCause) { lc.cause.CompareAndSwap(nil, cause) }

// closeWith closes lc's channel, saying why: cause, or the reason recorded
// by intend (cause may be nil).
func (lc *local) closeWith(cause *channel.CloseCause) {
	if cause != nil {
		lc.intend(cause)
	}
	if cc := lc.cause.Load(); cc != nil {
		_ = lc.ch.CloseWithCause(cc)
		return
	}
	_ = lc.ch.Close()
}

// closeReason says in plain words why lc's channel closed, and whether that
// was abnormal: the controller's own reason if it closed it, else the
// channel's.
func (lc *local) closeReason() (string, bool) {
	if cc := lc.cause.Load(); cc != nil {
		return channel.CloseReason(cc)
	}
	return channel.CloseReason(lc.ch.Err())
}

// New returns a Controller that will accept channels on lis and keep its
// registry in the cluster clu (standalone.New for one process, a
// cluster.Node for a raft cluster). It starts nothing: call Run. The
// Controller owns lis and closes it on Close; it does not own clu. Its node
// id is clu's: Config.NodeID, when set, must equal it.
func New(cfg Config, lis channel.Listener, clu Cluster) (*Controller, error) {
	if lis == nil || clu == nil {
		return nil, errors.New("controller: New needs a listener and a cluster")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if cfg.NodeID != "" && cfg.NodeID != clu.NodeID() {
		return nil, fmt.Errorf("controller: Config.NodeID %q differs from the cluster's node id %q", cfg.NodeID, clu.NodeID())
	}
	cfg.NodeID = clu.NodeID()
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{
		cfg:         cfg,
		lis:         lis,
		store:       clu,
		log:         cfg.Logger.With("node", cfg.NodeID),
		nodeID:      cfg.NodeID,
		ctx:         ctx,
		cancel:      cancel,
		local:       map[string]*local{},
		primaryKick: make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	c.failures = newFailureLimiter(cfg.FailedHelloRate, cfg.FailedHelloBurst)
	c.primaryFailLog = logthrottle.New(retryLogInterval)
	c.refusedLog = logthrottle.New(refusedLogInterval)
	c.limitedLog = logthrottle.New(limitedLogInterval)
	c.applier = newApplier(clu, c.log)
	c.events = newDispatcher(cfg.OnEvent, c.log)
	if cfg.Authenticator == nil {
		c.log.Debug("controller: no Authenticator configured: every HELLO is accepted")
	}
	return c, nil
}

// NodeID returns this node's id.
func (c *Controller) NodeID() string { return c.nodeID }

// Run runs the controller until ctx is done or Close is called, then shuts it
// down (as Close does) and returns nil. In order, it:
//
//  1. subscribes to the cluster's events (listener events, primary notifier)
//     and takes the commands other nodes forward to its channels;
//  2. queues, first in the group commit, the removal of the channels this
//     node held before (they died with the previous process): retried until
//     it succeeds, ahead of every registration, so Run never waits for a
//     leader;
//  3. starts the accept loop, the health loop and the primary notifier.
//
// Run also returns nil at once if Close was called before it (so starting Run
// on a goroutine and closing soon after is not an error). It returns an
// error if it is already running or if the listener fails for good (after
// shutting down).
func (c *Controller) Run(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closing:
		c.mu.Unlock()
		<-c.done
		return nil
	case c.running:
		c.mu.Unlock()
		return errors.New("controller: already running")
	}
	c.running = true
	c.applierWG.Go(func() { c.applier.run(c.ctx) })
	c.events.Start()
	c.unsub = c.store.Subscribe(c.onStoreEvents)
	c.store.HandleForward(c.deliver)
	if af, ok := c.store.(asyncForwarding); ok {
		af.HandleForwardAsync(c.deliverAsync)
	}
	c.routes.start()
	c.applier.push(applyReq{op: state.Op{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: c.nodeID}}})
	c.workers.Go(func() { c.notifyPrimaries(c.ctx) })
	c.workers.Go(func() { c.healthLoop(c.ctx) })
	if c.cfg.IsolationTimeout > 0 {
		c.workers.Go(func() { c.watchIsolation(c.ctx) })
	}
	if c.cfg.RebalanceDelay > 0 {
		c.workers.Go(func() { c.rebalance(c.ctx) })
	}
	if hl, ok := c.lis.(connHandlerListener); ok {
		// Handshakes on the listener's goroutines (decision 0048); the
		// accept loop still runs, for the listener's end.
		hl.HandleConns(c.serveOnHandler)
	}
	lisErr := make(chan error, 1)
	c.workers.Go(func() { lisErr <- c.acceptLoop(c.ctx) })
	c.mu.Unlock()

	select {
	case <-ctx.Done():
		_ = c.Close()
		return nil
	case <-c.ctx.Done():
		<-c.done
		return nil
	case err := <-lisErr:
		_ = c.Close()
		return err
	}
}

// Close shuts the controller down: it stops accepting, stops the health loop
// and the primary notifier, sends GOOD_BYE{reconnect:true} to every local
// channel (Config.HealthConcurrency at a time, each bounded by
// Config.GoodByeTimeout) so their connectors reconnect elsewhere, closes them,
// unregisters them all in one Apply, delivers the last listener events, and
// waits for every goroutine it started. It closes the listener.
//
// Close is bounded as a whole by Config.ShutdownTimeout: the GOOD_BYEs share
// one deadline (three quarters of it), after which the channels not yet
// told are closed without one, and the unregistration gets the rest. A
// connector that ignores GOOD_BYE therefore costs at most that deadline, not
// a GoodByeTimeout per batch of HealthConcurrency channels.
//
// Close is idempotent; it returns the error of the final unregistration, if
// any (the channels are then removed on this node's next start).
func (c *Controller) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		locals := make([]*local, 0, len(c.local))
		for _, lc := range c.local {
			locals = append(locals, lc)
		}
		unsub := c.unsub
		c.mu.Unlock()

		// One deadline for the whole shutdown; the GOOD_BYEs must be done
		// a quarter of it early, so the unregistration always has time.
		start := time.Now()
		sctx, scancel := context.WithDeadline(context.Background(), start.Add(c.cfg.ShutdownTimeout))
		defer scancel()
		gctx, gcancel := context.WithDeadline(sctx, start.Add(c.cfg.ShutdownTimeout*3/4))
		defer gcancel()

		c.cancel()
		_ = c.lis.Close()
		c.handlers.closeAndWait()
		c.workers.Wait()
		c.watchers.closeAndWait()

		if len(locals) > 0 {
			c.log.Info("controller: closing: GOOD_BYE to every channel", "channels", len(locals),
				"reason", causeShutdown.Reason)
		}
		c.goodbyeAll(gctx, locals, causeShutdown)
		c.applierWG.Wait() // it stopped on c.ctx; what it left queued is taken below
		c.closeErr = c.unregisterAll(sctx, locals)
		if unsub != nil {
			unsub()
		}
		c.events.Close() // delivers what is queued, then returns
		close(c.done)
	})
	<-c.done
	return c.closeErr
}

// goodbyeAll says GOOD_BYE{reconnect:true} to every channel,
// HealthConcurrency at a time, each bounded by GoodByeTimeout and all by ctx,
// and closes them with cause. Once ctx is done, the channels not yet told are
// closed without a GOOD_BYE, and the GOOD_BYEs in flight are abandoned.
func (c *Controller) goodbyeAll(ctx context.Context, locals []*local, cause *channel.CloseCause) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, c.cfg.HealthConcurrency)
	told := 0
send:
	for _, lc := range locals {
		if ctx.Err() != nil { // select would pick at random between ready cases
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break send
		}
		told++
		wg.Go(func() {
			defer func() { <-sem }()
			gctx, cancel := context.WithTimeout(ctx, c.cfg.GoodByeTimeout)
			defer cancel()
			lc.intend(cause)
			if err := c.goodbye(gctx, lc); err != nil {
				c.log.Debug("controller: GOOD_BYE failed", "channel", lc.id, "reason", cause.Reason, "err", err)
			}
			lc.closeWith(cause)
		})
	}
	if rest := locals[told:]; len(rest) > 0 {
		c.log.Warn("controller: shutdown deadline reached: closing channels without GOOD_BYE",
			"channels", len(rest), "shutdown_timeout", c.cfg.ShutdownTimeout)
		for _, lc := range rest {
			lc.closeWith(cause)
		}
	}
	wg.Wait()
}

// unregisterAll removes locals and any unregistration still queued, in one
// Apply bounded by ctx.
func (c *Controller) unregisterAll(ctx context.Context, locals []*local) error {
	ids := c.applier.leftoverUnregisters()
	for _, lc := range locals {
		ids = append(ids, lc.id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		return nil
	}
	ops := make([]state.Op, len(ids))
	for i, id := range ids {
		ops[i] = state.Op{Unregister: &state.UnregisterChannel{ChannelID: id}}
	}
	if err := state.Err(c.store.Apply(ctx, ops...)); err != nil {
		return fmt.Errorf("controller: close: unregister %d channels: %w", len(ids), err)
	}
	return nil
}

// addLocal records a live channel, unless Close has begun.
func (c *Controller) addLocal(lc *local) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.local[lc.id] = lc
	return true
}

// dropLocal forgets a dead channel (closing it with cause, if it is still
// alive) and queues its unregistration, unless Close has begun (Close
// unregisters every channel itself, in one Apply).
func (c *Controller) dropLocal(lc *local, cause *channel.CloseCause) {
	c.mu.Lock()
	closing := c.closing
	if !closing {
		delete(c.local, lc.id)
	}
	c.mu.Unlock()
	lc.closeWith(cause)
	if !closing {
		c.applier.unregister(lc.id)
	}
}

// locals returns a snapshot of the live local channels.
func (c *Controller) locals() map[string]*local {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]*local, len(c.local))
	for id, lc := range c.local {
		out[id] = lc
	}
	return out
}

// localsOf returns the live local channels among ids, by id: what
// channelInfo needs for a few channels, without copying every local one as
// locals does (an O(N) copy per call made a REST send cost O(N)).
func (c *Controller) localsOf(ids ...string) map[string]*local {
	out := make(map[string]*local, len(ids))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if lc := c.local[id]; lc != nil {
			out[id] = lc
		}
	}
	return out
}

// localChannel returns the live local channel id, if any.
func (c *Controller) localChannel(id string) *local {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.local[id]
}

// kickPrimary asks the primary notifier to reconcile; it never blocks.
func (c *Controller) kickPrimary() {
	select {
	case c.primaryKick <- struct{}{}:
	default:
	}
}
