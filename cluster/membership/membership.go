package membership

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/exchangekit/exchange/internal/backoff"
)

// joinBackoff spaces Start's join attempts.
var joinBackoff = backoff.Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second}

// Membership is this node's view of the cluster's members, kept by
// hashicorp/memberlist (SWIM gossip with Lifeguard failure detection). It is
// safe for concurrent use.
type Membership struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	d      *delegate
	events chan Event    // unbuffered; closed by dispatch when it returns
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	addr string // this node's gossip address, ip:port

	mu     sync.Mutex // protects the following
	closed bool
	left   bool
}

// Start creates this node's memberlist on cfg.BindAddr, and joins the
// cluster through cfg.Join: it retries the addresses with backoff until one
// of them answers or ctx ends (then it fails with ErrJoin, after at most one
// more Timings.TCPTimeout). A node with no Join address starts alone. With
// cfg.JoinInBackground, Start returns once the memberlist runs and the join
// goes on, retried, on a goroutine until it succeeds or Close.
//
// Start fails with ErrNodeIDConflict when a live node already uses
// cfg.NodeID at another address. The first event is this node's own join.
func Start(ctx context.Context, cfg Config) (*Membership, error) {
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	meta := cfg.meta()
	enc, err := encodeMeta(meta)
	if err != nil {
		return nil, err
	}
	d := &delegate{
		local:       cfg.NodeID,
		log:         lg,
		q:           newEventQueue(),
		departedTTL: cfg.DepartedTTL,
		meta:        enc,
		members:     make(map[string]memberEntry),
	}
	mc.Delegate, mc.Events, mc.Conflict, mc.Alive = d, d, d, d

	if cfg.WrapTransport != nil {
		if err := wrapTransport(mc, cfg.WrapTransport); err != nil {
			return nil, fmt.Errorf("membership: start memberlist on %s: %w", cfg.BindAddr, err)
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if mc.Transport != nil {
			_ = mc.Transport.Shutdown() // memberlist shuts a given transport down on some failures only
		}
		return nil, fmt.Errorf("membership: start memberlist on %s: %w", cfg.BindAddr, err)
	}
	m := &Membership{
		cfg:    cfg,
		log:    lg,
		ml:     ml,
		d:      d,
		events: make(chan Event),
		done:   make(chan struct{}),
	}
	m.addr = ml.LocalNode().Address() // fixed once bound; before any gossip writes it
	m.wg.Go(m.dispatch)
	if cfg.JoinInBackground {
		m.wg.Go(m.joinInBackground)
		lg.Info("membership: started; joining in the background", "node", cfg.NodeID, "addr", m.addr)
		return m, nil
	}

	if err := m.join(ctx); err != nil {
		_ = m.Close()
		return nil, err
	}
	if c, ok := d.conflict(); ok {
		_ = m.Close()
		return nil, fmt.Errorf("%w: %q is already at %s", ErrNodeIDConflict, cfg.NodeID, c.Addr)
	}
	if cfg.ReconnectInterval > 0 {
		m.wg.Go(m.reconnect)
	}
	lg.Info("membership: started", "node", cfg.NodeID, "addr", m.LocalNode().Addr, "members", ml.NumMembers())
	return m, nil
}

// join joins the cluster through cfg.Join, retrying with backoff until ctx
// ends.
func (m *Membership) join(ctx context.Context) error {
	self := m.ml.LocalNode().Address()
	var addrs []string
	for _, a := range m.cfg.Join {
		if a != self && a != m.cfg.BindAddr {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		n, err := m.ml.Join(addrs)
		if n > 0 {
			if err != nil {
				m.log.Warn("membership: some join addresses did not answer", "joined", n, "err", err)
			}
			return nil
		}
		if err == nil {
			err = errors.New("no address answered")
		}
		m.log.Debug("membership: join attempt failed", "attempt", attempt+1, "addrs", addrs, "err", err)
		t := time.NewTimer(joinBackoff.Delay(attempt, rand.Int64N))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w through %v after %d attempts: %w (last: %w)", ErrJoin, addrs, attempt+1, context.Cause(ctx), err)
		case <-m.done:
			t.Stop()
			return fmt.Errorf("%w through %v: %w", ErrJoin, addrs, ErrClosed)
		case <-t.C:
		}
	}
}

// joinInBackground joins through cfg.Join until one address answers or
// Close.
func (m *Membership) joinInBackground() {
	if err := m.join(context.Background()); err != nil {
		return // closed
	}
	if c, ok := m.d.conflict(); ok {
		m.log.Error("membership: another node uses this node id", "node", m.cfg.NodeID, "at", c.Addr)
	}
}

// dispatch is the one goroutine that delivers queued events on m.events.
func (m *Membership) dispatch() {
	defer close(m.events)
	for {
		ev, ok := m.d.q.pop()
		if !ok {
			select {
			case <-m.d.q.wake:
				continue
			case <-m.done:
				return
			}
		}
		select {
		case m.events <- ev:
		case <-m.done:
			return
		}
	}
}

// reconnect is the one goroutine that, every ReconnectInterval, exchanges
// state with one member this node holds failed (memberlist Join, bounded by
// Timings.TCPTimeout). If that member is up again (a partition healed), the
// exchange tells it that it was declared dead, it refutes with a new
// incarnation, and both sides see each other alive again.
func (m *Membership) reconnect() {
	t := time.NewTicker(m.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		var failed []Member
		for _, mem := range m.d.known() {
			if mem.State == StateDead && mem.Meta.NodeID != m.cfg.NodeID && mem.Addr != "" {
				failed = append(failed, mem)
			}
		}
		if len(failed) == 0 {
			continue
		}
		mem := failed[rand.IntN(len(failed))]
		if _, err := m.ml.Join([]string{mem.Addr}); err != nil {
			m.log.Debug("membership: failed member still unreachable", "member", mem.Meta.NodeID, "addr", mem.Addr, "err", err)
			continue
		}
		m.log.Info("membership: reached a failed member again", "member", mem.Meta.NodeID, "addr", mem.Addr)
	}
}

// Events returns the channel of membership changes, for one consumer. Events
// of one node arrive in order. The channel is never a backlog: while the
// consumer is busy, a node's newer event replaces its older undelivered one
// (a join updated before delivery stays a join), so a slow consumer sees
// every node's latest state but may miss intermediate ones (a failure
// followed by a rejoin then shows as a join with a new Meta.Incarnation).
// memberlist is never blocked. The channel is closed by Close.
func (m *Membership) Events() <-chan Event { return m.events }

// Coalesced returns how many events were replaced by newer ones before
// delivery (a measure of how far the consumer of Events fell behind).
func (m *Membership) Coalesced() uint64 { return m.d.q.coalescedCount() }

// LocalNode returns this node: alive, or left after Leave. It is built from
// this node's own copies (its meta, the address it bound): memberlist's
// node records change under its lock, so they are only read in its
// callbacks.
func (m *Membership) LocalNode() Member {
	m.mu.Lock()
	state := StateAlive
	if m.left {
		state = StateLeft
	}
	m.mu.Unlock()
	meta, _, err := decodeMeta(m.d.nodeMeta())
	if err != nil {
		meta = Meta{NodeID: m.cfg.NodeID}
	}
	return Member{Meta: meta, Addr: m.addr, State: state}
}

// Members returns every known node, sorted by NodeID: the live ones and those
// that left or failed within Config.DepartedTTL, as memberlist's events
// reported them (copied in its callbacks, under its lock: memberlist's own
// node records are written concurrently by its gossip).
func (m *Membership) Members() []Member {
	byID := m.d.known()
	out := make([]Member, 0, len(byID))
	for _, mem := range byID {
		out = append(out, mem)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Meta.NodeID, b.Meta.NodeID) })
	return out
}

// UpdateMeta replaces this node's Meta (its NodeID may be empty, else it must
// be the node's) and gossips it. It returns once the update has been
// broadcast or ctx ends (without a deadline, Config.LeaveTimeout bounds the
// wait); the new Meta is in effect locally either way.
func (m *Membership) UpdateMeta(ctx context.Context, meta Meta) error {
	if meta.NodeID == "" {
		meta.NodeID = m.cfg.NodeID
	}
	if meta.NodeID != m.cfg.NodeID {
		return fmt.Errorf("membership: update meta: NodeID %q is not this node's %q", meta.NodeID, m.cfg.NodeID)
	}
	enc, err := encodeMeta(meta)
	if err != nil {
		return fmt.Errorf("membership: update meta: %w", err)
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return fmt.Errorf("membership: update meta: %w", ErrClosed)
	case m.left:
		m.mu.Unlock()
		return fmt.Errorf("membership: update meta: %w", ErrLeft)
	}
	m.d.setMeta(enc)
	res := m.goTimed(ctx, m.ml.UpdateNode)
	m.mu.Unlock()
	return m.await(ctx, "update meta", res)
}

// Leave tells the cluster this node is leaving: the others see it as
// StateLeft (EventLeave), not as failed. It gossips the leave twice (a flag in
// the node's meta, then memberlist's leave message), so it takes a few gossip
// rounds (about 0.5-1 s with the LAN profile). It returns once the leave message has
// been gossiped or ctx ends (without a deadline, Config.LeaveTimeout bounds
// the wait). The node keeps answering gossip until Close, so call Close after
// Leave. Leave twice is harmless.
func (m *Membership) Leave(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("membership: leave: %w", ErrClosed)
	}
	var res <-chan error
	if m.left {
		res = m.goTimed(ctx, m.ml.Leave) // a no-op once left
	} else {
		m.left = true
		m.d.setLeaving()
		res = m.goTimed(ctx, m.leave)
	}
	m.mu.Unlock()
	return m.await(ctx, "leave", res)
}

// leave gossips the leaving flag in this node's meta, then memberlist's leave
// message, within timeout. The flag goes first and on its own (memberlist's
// leave message would cancel a meta update still queued for this node), so
// that the others know the leave message is a leave: memberlist does not tell
// them (see wireMeta.Leaving).
func (m *Membership) leave(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if err := m.ml.UpdateNode(timeout); err != nil {
		m.log.Warn("membership: leaving flag not gossiped in time; some nodes may see this leave as a failure", "err", err)
	}
	rest := time.Until(deadline)
	if rest <= 0 {
		return errors.New("no time left for the leave message")
	}
	return m.ml.Leave(rest)
}

// goTimed runs fn, a memberlist call bounded by a timeout parameter, on a
// goroutine Close waits for, with the time left before ctx's deadline (else
// Config.LeaveTimeout). Call with m.mu held and m not closed.
func (m *Membership) goTimed(ctx context.Context, fn func(time.Duration) error) <-chan error {
	res := make(chan error, 1)
	timeout := m.cfg.LeaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := ctx.Err(); err != nil || timeout <= 0 {
		res <- context.DeadlineExceeded
		return res
	}
	m.wg.Go(func() {
		if err := fn(timeout); err != nil {
			// memberlist's only error here is its own timeout.
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
			res <- err
			return
		}
		res <- nil
	})
	return res
}

// await waits for res or ctx.
func (m *Membership) await(ctx context.Context, op string, res <-chan error) error {
	select {
	case err := <-res:
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("membership: %s: %w", op, context.Cause(ctx))
			}
			return fmt.Errorf("membership: %s: %w", op, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("membership: %s: %w", op, context.Cause(ctx))
	}
}

// Close stops gossiping without leaving: the other nodes will declare this
// one dead after their failure detection delay (call Leave first for a
// graceful exit). It closes the Events channel and waits for every goroutine
// Membership started (a Leave or UpdateMeta still waiting for its broadcast
// ends at its timeout). memberlist's own goroutines stop shortly after (its
// Shutdown does not wait for them). Close is idempotent.
func (m *Membership) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	err := m.ml.Shutdown()
	close(m.done)
	m.wg.Wait()
	if err != nil {
		return fmt.Errorf("membership: close: %w", err)
	}
	return nil
}

// toMember converts a memberlist node (whose own State field memberlist
// v0.6.0 leaves unset). A node whose metadata does not decode (NotifyAlive
// keeps such nodes out) gets a Meta with just its NodeID.
func toMember(n *memberlist.Node, state State) Member {
	meta, _, err := decodeMeta(n.Meta)
	if err != nil || meta.NodeID == "" {
		meta = Meta{NodeID: n.Name}
	}
	return Member{Meta: meta, Addr: n.Address(), State: state}
}
