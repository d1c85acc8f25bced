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
	"github.com/exchangekit/exchange/state"
)

// Store is the replicated state as the controller needs it: state.Memory for
// a single node, the raft-backed store of package cluster in a cluster.
//
// Apply applies ops in order (on the raft leader, through the log) and
// returns when they are applied; Apply's error joins the ops' errors and
// every op is attempted. View calls fn with the current State, read-only and
// not to be kept. Subscribe calls fn with the events of every Apply, in
// order; fn runs with the store locked, so it must not block or call back
// into the store.
type Store interface {
	Apply(ctx context.Context, ops ...state.Op) error
	View(fn func(*state.State))
	Subscribe(fn func([]state.Event)) (cancel func())
}

var _ Store = (*state.Memory)(nil)

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
	store  Store
	log    *slog.Logger
	nodeID string

	ctx    context.Context // the workers' lifetime; cancelled first by Close
	cancel context.CancelFunc

	mu      sync.Mutex        // protects the fields below
	local   map[string]*local // channel id → live local channel
	running bool              // Run was called
	closing bool              // Close has begun: no new local channels
	unsub   func()            // store subscription

	workers   sync.WaitGroup // accept loop, connections, health loop, primary notifier
	applierWG sync.WaitGroup // the applier: stops with ctx, after the workers
	eventsWG  sync.WaitGroup // the event dispatcher: stopped last

	applier     *applier
	events      *dispatcher
	primaryKick chan struct{} // buffered(1): "the state changed, reconcile"
	turn        atomic.Uint64 // rotates ties in routing
	routes      routeCache    // targets' routes, kept between state changes
	forwarder   forwarder     // nil: no forwarding (single node)

	failures   *failureLimiter // failed HELLOs per source
	refusedLog logThrottle     // "HELLO refused" lines
	limitedLog logThrottle     // "refused: too many failed HELLOs" lines

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed when Close has finished
}

// local is a live channel held by this node.
type local struct {
	id          string
	targetID    string
	connectorID string
	peer        channel.PeerInfo
	metadata    map[string]string // until registered
	ch          *channel.Channel
	lastHealthy atomic.Int64 // unix nanoseconds of the last healthy reply; 0: none yet
}

// New returns a Controller that will accept channels on lis and keep its
// registry in store. It starts nothing: call Run. The Controller owns lis and
// closes it on Close.
func New(cfg Config, lis channel.Listener, store Store) (*Controller, error) {
	if lis == nil || store == nil {
		return nil, errors.New("controller: New needs a listener and a store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{
		cfg:         cfg,
		lis:         lis,
		store:       store,
		log:         cfg.Logger.With("node", cfg.NodeID),
		nodeID:      cfg.NodeID,
		ctx:         ctx,
		cancel:      cancel,
		local:       map[string]*local{},
		primaryKick: make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	c.failures = newFailureLimiter(cfg.FailedHelloRate, cfg.FailedHelloBurst)
	c.refusedLog.every = refusedLogInterval
	c.limitedLog.every = limitedLogInterval
	c.applier = newApplier(store, c.nodeID, c.log)
	c.events = newDispatcher(cfg.OnEvent, c.log)
	if cfg.Authenticator == nil {
		c.log.Warn("controller: no Authenticator configured: every HELLO is accepted")
	}
	return c, nil
}

// NodeID returns this node's id.
func (c *Controller) NodeID() string { return c.nodeID }

// Run runs the controller until ctx is done or Close is called, then shuts it
// down (as Close does) and returns nil. In order, it:
//
//  1. subscribes to the store's events (listener events, primary notifier);
//  2. removes from the state the channels this node held before (they died
//     with the previous process), retrying until it succeeds;
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
	c.eventsWG.Go(c.events.run)
	c.unsub = c.store.Subscribe(c.onStoreEvents)
	c.routes.start()
	c.mu.Unlock()

	startCtx, cancelStart := context.WithCancel(c.ctx)
	stop := context.AfterFunc(ctx, cancelStart)
	err := c.removeStale(startCtx)
	stop()
	cancelStart()
	if err != nil { // ctx done or Close called during start
		_ = c.Close()
		return nil
	}

	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.workers.Go(func() { c.notifyPrimaries(c.ctx) })
	c.workers.Go(func() { c.healthLoop(c.ctx) })
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

// removeStale applies RemoveNodeChannels for this node, retrying with backoff
// until it succeeds or ctx is done.
func (c *Controller) removeStale(ctx context.Context) error {
	bo := newBackoff(50*time.Millisecond, 5*time.Second)
	defer bo.stop()
	for {
		err := c.store.Apply(ctx, state.Op{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: c.nodeID}})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Warn("controller: cannot remove the channels of this node's previous run; retrying", "err", err)
		if err := bo.wait(ctx); err != nil {
			return err
		}
	}
}

// Close shuts the controller down: it stops accepting, stops the health loop
// and the primary notifier, sends GOOD_BYE{reconnect:true} to every local
// channel (Config.HealthConcurrency at a time, each bounded by
// Config.GoodByeTimeout) so their connectors reconnect elsewhere, closes them,
// unregisters them all in one Apply, delivers the last listener events, and
// waits for every goroutine it started. It closes the listener. Close is
// idempotent; it returns the error of the final unregistration, if any (the
// channels are then removed on this node's next start).
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

		c.cancel()
		_ = c.lis.Close()
		c.workers.Wait()

		c.goodbyeAll(locals)
		c.applierWG.Wait() // it stopped on c.ctx; what it left queued is taken below
		c.closeErr = c.unregisterAll(locals)
		if unsub != nil {
			unsub()
		}
		c.events.stop() // delivers what is queued, then returns
		c.eventsWG.Wait()
		close(c.done)
	})
	<-c.done
	return c.closeErr
}

// goodbyeAll says GOOD_BYE{reconnect:true} to every channel, bounded, and
// closes them.
func (c *Controller) goodbyeAll(locals []*local) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, c.cfg.HealthConcurrency)
	for _, lc := range locals {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.GoodByeTimeout)
			defer cancel()
			if err := c.goodbye(ctx, lc); err != nil {
				c.log.Debug("controller: GOOD_BYE on close failed", "channel", lc.id, "err", err)
			}
			_ = lc.ch.Close()
		})
	}
	wg.Wait()
}

// unregisterAll removes locals and any unregistration still queued, in one
// Apply.
func (c *Controller) unregisterAll(locals []*local) error {
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
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.GoodByeTimeout)
	defer cancel()
	if err := c.store.Apply(ctx, ops...); err != nil {
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

// dropLocal forgets a dead channel and queues its unregistration, unless
// Close has begun (Close unregisters every channel itself, in one Apply).
func (c *Controller) dropLocal(lc *local) {
	c.mu.Lock()
	closing := c.closing
	if !closing {
		delete(c.local, lc.id)
	}
	c.mu.Unlock()
	_ = lc.ch.Close()
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

// backoff is a reusable exponential wait.
type backoff struct {
	base, cur, ceiling time.Duration
	t                  *time.Timer
}

func newBackoff(base, ceiling time.Duration) *backoff {
	return &backoff{base: base, cur: base, ceiling: ceiling}
}

// reset makes the next wait the shortest again.
func (b *backoff) reset() { b.cur = b.base }

// wait sleeps the current delay (or until ctx is done) and doubles it.
func (b *backoff) wait(ctx context.Context) error {
	if b.t == nil {
		b.t = time.NewTimer(b.cur)
	} else {
		b.t.Reset(b.cur)
	}
	b.cur = min(2*b.cur, b.ceiling)
	select {
	case <-b.t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *backoff) stop() {
	if b.t != nil {
		b.t.Stop()
	}
}
