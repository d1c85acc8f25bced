package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/backoff"
	"github.com/exchangekit/exchange/internal/queue"
)

// Connector keeps one channel open to a controller node: it dials its
// endpoints with failover, says HELLO, answers the controller's commands with
// a command.Mux (plus the built-ins GOOD_BYE, PRIMARY and HEALTH_CHECK), and
// reconnects with jittered exponential backoff whenever the channel is lost,
// until Close or Run's context ends it.
//
// A Connector is safe for concurrent use. Run may be called once.
type Connector struct {
	cfg     Config
	mux     *command.Mux
	dialers []channel.Dialer
	log     *slog.Logger
	policy  backoff.Policy
	int64n  func(int64) int64 // backoff randomness; tests substitute a fixed one
	window  *window           // nil when deduplication is disabled
	// instance identifies this Connector value (this run of the process)
	// in its HELLOs, and attempts counts its connection attempts: the
	// controller then never lets a stale attempt, registered late, take
	// over the connector's current channel (decision 0018).
	instance string
	attempts atomic.Uint64

	life    context.Context // cancelled by Close
	cancel  context.CancelFunc
	runDone chan struct{}   // closed when Run has returned
	done    chan struct{}   // closed once stopped (Run returned, or Close before Run)
	runCtx  context.Context // Run's context, for user handlers; set before any channel exists
	wg      sync.WaitGroup  // channel closers

	mu        sync.Mutex // protects the fields below
	started   bool       // Run was called
	closed    bool       // Close was called
	stopped   bool       // done is closed
	stopErr   error      // what Run returned
	state     State
	sess      *session      // the live channel, nil when not connected
	connected chan struct{} // closed when a channel is published; replaced when it goes
	targetID  string        // adopted from the last HELLO reply
	primary   bool
	epoch     uint64
	maxEpoch  map[string]uint64        // target → highest PRIMARY epoch seen
	events    *queue.Dispatcher[event] // the notifier: runs callbacks in order (notify.go)
}

// session is one live channel.
type session struct {
	ch        *channel.Channel
	endpoint  int
	channelID string
	targetID  string
	loop      func()        // the channel's read loop, run by serve (channel.NewHosted)
	heartbeat time.Duration // silence after which the channel is taken for dead; 0: never
	ready     chan struct{} // closed once published; handlers wait for it
	born      time.Time     // when sess was made: last counts from it
	last      atomic.Int64  // when the last command arrived, as time since born (heartbeat watchdog)
	detached  bool          // guarded by Connector.mu: no longer the live channel

	mu      sync.Mutex  // protects the fields below
	cause   error       // why the session ends, when something other than the channel's death ends it; the first wins
	closing bool        // a Close of ch has been started
	over    bool        // serve is done: nothing may start a goroutine for this session any more
	linger  *time.Timer // after GOOD_BYE: closes ch if the controller does not
	silence *time.Timer // the heartbeat watchdog (watchSilence)
}

// New returns a Connector that will connect to the first reachable of
// endpoints (at least one) and answer commands with mux (nil: an empty Mux).
// Nothing happens until Run.
func New(cfg Config, mux *command.Mux, endpoints ...channel.Dialer) (*Connector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: at least one endpoint is required", ErrInvalidConfig)
	}
	for i, d := range endpoints {
		if d == nil {
			return nil, fmt.Errorf("%w: endpoint %d is nil", ErrInvalidConfig, i)
		}
	}
	cfg = cfg.withDefaults()
	if cfg.ConnectorID == "" {
		cfg.ConnectorID = command.NewID()
	}
	cfg.Metadata = maps.Clone(cfg.Metadata) // sent on every HELLO; the caller may reuse its map
	if mux == nil {
		mux = command.NewMux()
	}
	life, cancel := context.WithCancel(context.Background())
	c := &Connector{
		cfg:       cfg,
		mux:       mux,
		dialers:   append([]channel.Dialer(nil), endpoints...),
		log:       cfg.Logger.With("connectorId", cfg.ConnectorID),
		policy:    cfg.policy(),
		int64n:    rand.Int64N,
		instance:  command.NewID(),
		life:      life,
		cancel:    cancel,
		runDone:   make(chan struct{}),
		done:      make(chan struct{}),
		connected: make(chan struct{}),
		targetID:  cfg.TargetID,
		maxEpoch:  make(map[string]uint64),
	}
	c.events = newNotifier(cfg, c.log)
	if cfg.DedupWindow > 0 {
		c.window = newWindow(cfg.DedupWindow)
	}
	return c, nil
}

// Run connects and keeps the Connector connected until ctx is done or Close
// is called (Run then returns nil), or until a fatal stop:
//   - the controller refused the HELLO: an error wrapping the
//     *channel.HelloRejectedError (errors.Is channel.ErrHelloRejected); no retry;
//   - the controller said GOOD_BYE{reconnect:false}: a *GoodByeError (errors.Is
//     ErrGoodBye).
//
// Any other loss of the channel (broken stream, controller crash, malformed
// frame, missed heartbeats) and any failed dial or handshake leads to a
// reconnection after the backoff. Before returning, Run closes the channel and
// waits for every goroutine it started, callbacks included. Run may be called
// once; it returns ErrClosed if Close came first.
func (c *Connector) Run(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.started:
		c.mu.Unlock()
		return errors.New("connector: Run already called")
	}
	c.started = true
	ctx, cancel := context.WithCancel(ctx)
	c.runCtx = ctx
	c.mu.Unlock()
	defer close(c.runDone)
	defer cancel()
	stop := context.AfterFunc(c.life, cancel)
	defer stop()

	c.events.Start() // the notifier: owned by Run, which closes it below

	ep, err := c.loop(ctx)
	// End the contexts of user handlers still running on closing channels,
	// then wait for the closers, and so for those handlers (a channel's
	// Close waits for its handlers). loop started every closer.
	cancel()
	c.wg.Wait()

	c.mu.Lock()
	c.state = StateStopped
	c.enqueueState(StateChange{State: StateStopped, Endpoint: ep, Err: err})
	c.finishLocked(err)
	c.mu.Unlock()
	c.events.Close() // runs the callbacks left, StateStopped last
	return err
}

// loop is Run's body. It returns the last endpoint used and Run's result.
func (c *Connector) loop(ctx context.Context) (int, error) {
	failures, ep := 0, 0
	var wait sleeper // one timer for every backoff wait of this Run
	defer wait.stop()
	for {
		if ctx.Err() != nil {
			return ep, nil
		}
		c.setState(StateChange{State: StateConnecting, Endpoint: ep, Attempt: failures})
		sess, err := c.connect(ctx, ep)
		if err != nil {
			var rejected *channel.HelloRejectedError
			switch {
			case ctx.Err() != nil:
				c.setState(StateChange{State: StateDisconnected, Endpoint: ep, Err: ErrClosed})
				return ep, nil
			case errors.As(err, &rejected):
				c.log.Error("connector: hello rejected; not retrying", "endpoint", c.endpointName(ep), "reason", rejected.Reason)
				c.setState(StateChange{State: StateDisconnected, Endpoint: ep, Err: err})
				return ep, err
			}
			delay := c.policy.Delay(failures, c.int64n)
			failures++
			if c.log.Enabled(ctx, slog.LevelWarn) { // the arguments alone cost allocations, per attempt of a storm
				c.log.Warn("connector: connection attempt failed", "endpoint", c.endpointName(ep), "attempt", failures,
					"err", err, "retryIn", delay)
			}
			c.setState(StateChange{State: StateDisconnected, Endpoint: ep, Err: err, Delay: delay})
			ep = (ep + 1) % len(c.dialers)
			if !wait.sleep(ctx, delay) {
				return ep, nil
			}
			continue
		}

		up := time.Now()
		cause := c.serve(ctx, sess)
		if time.Since(up) >= c.cfg.StableAfter {
			failures = 0
		}
		var gb *GoodByeError
		var delay time.Duration
		var stop bool
		var result error
		switch {
		case ctx.Err() != nil:
			cause, stop = ErrClosed, true
		case errors.As(cause, &gb) && !gb.Reconnect:
			stop, result = true, cause
		case gb != nil:
			// The controller asks us to come back, elsewhere if we can: the
			// first backoff step (jittered) on the next endpoint.
			delay = c.policy.Delay(0, c.int64n)
			ep = (ep + 1) % len(c.dialers)
		default:
			// The one that worked is tried first again.
			delay = c.policy.Delay(failures, c.int64n)
			failures++
		}
		reason, abnormal := lostReason(cause, sess.ch.Err())
		level := slog.LevelInfo
		if abnormal {
			level = slog.LevelWarn
		}
		if c.log.Enabled(ctx, level) {
			c.log.Log(ctx, level, "connector: channel lost", "endpoint", c.endpointName(sess.endpoint),
				"channelId", sess.channelID, "reason", reason, "retryIn", delay, "stopping", stop)
		}
		c.setState(StateChange{State: StateDisconnected, Endpoint: sess.endpoint,
			ChannelID: sess.channelID, TargetID: sess.targetID, Err: cause, Delay: delay})
		if stop {
			return ep, result
		}
		if !wait.sleep(ctx, delay) {
			return ep, nil
		}
	}
}

// endpointName names endpoint ep in logs and errors: its dialer's String (the
// gRPC and WebSocket twins give their address), else "#ep".
func (c *Connector) endpointName(ep int) string {
	if s, ok := c.dialers[ep].(fmt.Stringer); ok {
		return s.String()
	}
	return "#" + strconv.Itoa(ep)
}

// lostReason says in plain words why a channel was lost, given what ended it
// (serve's cause) and the channel's Err, and whether that was abnormal.
func lostReason(cause, chErr error) (string, bool) {
	var gb *GoodByeError
	switch {
	case errors.As(cause, &gb):
		if gb.Reconnect {
			return "GOOD_BYE from the controller (asked to reconnect)", false
		}
		return "GOOD_BYE from the controller (asked to stop)", false
	case errors.Is(cause, ErrHeartbeatMissed):
		return "keepalive timeout: " + cause.Error(), true
	case errors.Is(cause, ErrClosed):
		return "connector closing", false
	}
	if r, abnormal := channel.CloseReason(chErr); r != "" {
		return r, abnormal
	}
	return cause.Error(), true
}

// connect dials endpoint ep, runs the handshake and publishes the new channel.
func (c *Connector) connect(ctx context.Context, ep int) (*session, error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.HelloTimeout)
	defer cancel()
	conn, err := c.dialers[ep].Dial(actx)
	if err != nil {
		return nil, &attemptError{op: "dial", endpoint: c.endpointName(ep), err: err}
	}
	reply, err := channel.Hello(actx, conn, command.HelloPayload{
		TargetID:        c.cfg.TargetID,
		ConnectorID:     c.cfg.ConnectorID,
		Token:           c.cfg.Token,
		ProtocolVersion: command.ProtocolVersion,
		Metadata:        c.cfg.Metadata,
		Capabilities:    []string{command.CapabilityBatch}, // the gRPC twin unpacks batches
		Instance:        c.instance,
		Attempt:         c.attempts.Add(1),
	})
	if err != nil {
		_ = conn.Close()
		return nil, &attemptError{op: "hello on", endpoint: c.endpointName(ep), err: err}
	}
	sess := &session{
		endpoint:  ep,
		channelID: reply.ChannelID,
		targetID:  reply.TargetID,
		ready:     make(chan struct{}),
		born:      time.Now(),
	}
	if sess.targetID == "" {
		sess.targetID = c.cfg.TargetID
	}
	if reply.HeartbeatMs > 0 && c.cfg.MissedHeartbeats > 0 {
		sess.heartbeat = time.Duration(reply.HeartbeatMs) * time.Millisecond * time.Duration(c.cfg.MissedHeartbeats)
	}
	chCfg := c.cfg.Channel
	chCfg.Coalesce = slices.Contains(reply.Capabilities, command.CapabilityBatch)
	// The read loop runs on Run's goroutine (serve), which would otherwise
	// only wait for the channel to end: a connected connector owns one
	// goroutine fewer.
	sess.ch, sess.loop = channel.NewHosted(conn, c.handler(sess), chCfg)

	c.mu.Lock()
	c.sess = sess
	c.targetID = sess.targetID
	c.state = StateConnected
	close(c.connected)
	c.enqueueState(StateChange{State: StateConnected, Endpoint: ep, ChannelID: sess.channelID, TargetID: sess.targetID})
	c.mu.Unlock()
	close(sess.ready)
	if c.log.Enabled(ctx, slog.LevelInfo) {
		c.log.Info("connector: connected", "endpoint", c.endpointName(ep), "channelId", sess.channelID, "targetId", sess.targetID)
	}
	return sess, nil
}

// serve runs sess's read loop until sess ends, then detaches sess and closes
// its channel; it returns why sess ended. The loop returns when the channel
// dies; whatever else ends sess (ctx done, a GOOD_BYE the controller does not
// follow with a close, silence past the heartbeat) closes the channel from a
// callback (end), which ends the loop.
func (c *Connector) serve(ctx context.Context, sess *session) error {
	stopCtx := context.AfterFunc(ctx, func() { c.end(sess, ErrClosed) })
	if sess.heartbeat > 0 {
		sess.mu.Lock()
		sess.silence = time.AfterFunc(sess.heartbeat, func() { c.watchSilence(sess) })
		sess.mu.Unlock()
	}

	sess.loop()

	sess.mu.Lock()
	sess.over = true
	cause := sess.cause
	for _, t := range []*time.Timer{sess.linger, sess.silence} {
		if t != nil {
			t.Stop()
		}
	}
	sess.mu.Unlock()
	stopCtx()
	if cause == nil {
		cause = fmt.Errorf("connector: channel %s: %w", sess.channelID, sess.ch.Err())
	}
	c.detach(sess)
	c.closeChannel(sess.ch) // dead already; this lets its Close finish on a goroutine Run waits for
	return cause
}

// end ends sess for cause, unless something ended it first: it records cause
// and closes the channel on a goroutine Run waits for (a stuck handler must not
// hold anyone up), which ends serve's read loop. Once serve is done it does
// nothing.
func (c *Connector) end(sess *session, cause error) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.over {
		return
	}
	if sess.cause == nil {
		sess.cause = cause
	}
	if !sess.closing {
		sess.closing = true
		c.wg.Go(func() { _ = sess.ch.Close() })
	}
}

// goodByeReceived ends sess on the controller's GOOD_BYE: the first one is recorded
// as the cause, sess is detached at once, and the channel is closed after
// goodByeLinger unless the controller closes it first (it does once it has
// the reply: the linger lets the reply out).
func (c *Connector) goodByeReceived(sess *session, p command.GoodByePayload) {
	sess.mu.Lock()
	if sess.over || sess.cause != nil {
		sess.mu.Unlock()
		return // a GOOD_BYE (or something else) is already ending sess
	}
	sess.cause = &GoodByeError{TargetID: sess.targetID, ChannelID: sess.channelID, Reconnect: p.Reconnect}
	sess.linger = time.AfterFunc(goodByeLinger, func() { c.end(sess, nil) })
	sess.mu.Unlock()
	c.detach(sess)
}

// watchSilence is the heartbeat watchdog's timer function: commands do not
// reset the timer (a reset per command), each records when it came, and the
// timer, when it fires, is put off by as much; after heartbeat of silence it
// ends sess.
func (c *Connector) watchSilence(sess *session) {
	sess.mu.Lock()
	if sess.over {
		sess.mu.Unlock()
		return
	}
	if quiet := time.Since(sess.born) - time.Duration(sess.last.Load()); quiet < sess.heartbeat {
		sess.silence.Reset(sess.heartbeat - quiet)
		sess.mu.Unlock()
		return
	}
	sess.mu.Unlock()
	c.end(sess, fmt.Errorf("connector: channel %s: %w (no command for %s)", sess.channelID, ErrHeartbeatMissed, sess.heartbeat))
}

// detach makes sess no longer the live channel: Send stops using it, and the
// primary role is dropped, since the connector can no longer know whether it
// still holds it.
func (c *Connector) detach(sess *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sess.detached = true
	if c.sess == sess {
		c.sess = nil
		c.state = StateDisconnected
		c.connected = make(chan struct{})
	}
	if c.primary {
		c.primary = false
		c.enqueuePrimary(false, c.epoch)
	}
}

// closeChannel closes ch without waiting for its handlers (a stuck handler
// must not keep the connector from reconnecting), but returns only once ch is
// dead, so pending Sends have failed. The close completes on a goroutine that
// Run waits for.
func (c *Connector) closeChannel(ch *channel.Channel) {
	c.wg.Go(func() { _ = ch.Close() })
	<-ch.Done()
}

// sleeper waits out backoff delays with one timer, made by its first wait
// and reset for the next ones: a reconnect loop in a storm waits after every
// attempt.
type sleeper struct{ t *time.Timer }

// sleep waits d, or until ctx is done; it reports whether the wait ran out.
func (s *sleeper) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	if s.t == nil {
		s.t = time.NewTimer(d)
	} else {
		s.t.Reset(d) // since Go 1.23 a Reset timer delivers no stale value
	}
	select {
	case <-s.t.C:
		return true
	case <-ctx.Done():
		s.t.Stop()
		return false
	}
}

func (s *sleeper) stop() {
	if s.t != nil {
		s.t.Stop()
	}
}

// Close stops the Connector: Run's channel is closed and Run returns nil.
// Close waits until Run has returned and every goroutine of the Connector has
// ended, user handlers included (their contexts are cancelled; they must
// return). It is idempotent and returns nil. It must not be called from a
// handler or a callback (OnState, OnPrimary): cancel Run's context there.
func (c *Connector) Close() error {
	c.mu.Lock()
	c.closed = true
	started := c.started
	if !started {
		c.state = StateStopped
		c.finishLocked(nil)
	}
	c.mu.Unlock()
	c.cancel()
	if started {
		<-c.runDone
	}
	return nil
}

// finishLocked records that the Connector has stopped. c.mu must be held.
func (c *Connector) finishLocked(err error) {
	if c.stopped {
		return
	}
	c.stopped, c.stopErr = true, err
	close(c.done)
}

// Send sends cmd to the controller node the connector is connected to and
// waits for its reply, until ctx is done (or the channel's default timeout).
// When not connected it fails at once with ErrNotConnected (also wrapping
// ErrClosed once the Connector is closed). If the channel closes while the
// call waits, it fails at once with an error wrapping channel.ErrClosed. See
// channel.Channel.Send for the other errors.
func (c *Connector) Send(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	c.mu.Lock()
	sess, closed := c.sess, c.closed || c.stopped
	c.mu.Unlock()
	switch {
	case sess == nil && closed:
		return nil, fmt.Errorf("%w: %w", ErrNotConnected, ErrClosed)
	case sess == nil:
		return nil, ErrNotConnected
	}
	return sess.ch.Send(ctx, cmd)
}

// WaitConnected blocks until the Connector has a live channel, ctx is done, or
// the Connector stops (it then returns Run's fatal error, or an error wrapping
// ErrClosed).
func (c *Connector) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		sess, stopped, stopErr, connected := c.sess, c.stopped, c.stopErr, c.connected
		c.mu.Unlock()
		switch {
		case sess != nil:
			return nil
		case stopped && stopErr != nil:
			return stopErr
		case stopped:
			return fmt.Errorf("%w: %w", ErrNotConnected, ErrClosed)
		}
		select {
		case <-connected:
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("connector: wait connected: %w", ctx.Err())
		}
	}
}

// IsPrimary reports whether the controller has told this connector that it is
// its target's primary, on the current channel. It is false after every
// (re)connection until a PRIMARY{primary:true} arrives, and false from the
// moment a channel closes.
func (c *Connector) IsPrimary() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.primary
}

// Epoch returns the epoch of the last PRIMARY accepted (the fencing token of
// the role); it is kept when the role is dropped.
func (c *Connector) Epoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// TargetID returns the target adopted from the last HELLO reply (the
// controller may rewrite the one asked for), or Config.TargetID before the
// first connection.
func (c *Connector) TargetID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.targetID
}

// ChannelID returns the id of the live channel, or "" when not connected.
func (c *Connector) ChannelID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return ""
	}
	return c.sess.channelID
}

// ConnectorID returns the connector id sent in HELLO (Config.ConnectorID or
// the one generated by New).
func (c *Connector) ConnectorID() string { return c.cfg.ConnectorID }

// State returns the current connection state.
func (c *Connector) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// setState records a state change and queues it for OnState.
func (c *Connector) setState(sc StateChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = sc.State
	c.enqueueState(sc)
}
