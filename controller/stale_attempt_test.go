package controller_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	goconnector "github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// gatedStore holds back the first Apply that registers a channel of
// connector conn: it signals entered, waits for release, applies, and
// signals applied. It plays a node so overloaded that a registration is
// applied long after the HELLO that asked for it.
type gatedStore struct {
	controller.Cluster
	conn     string
	once     sync.Once
	entered  chan struct{}
	release  chan struct{}
	applied  chan struct{}
	register atomic.Pointer[state.Channel] // the registration held back
}

func newGatedStore(c controller.Cluster, conn string) *gatedStore {
	return &gatedStore{Cluster: c, conn: conn, entered: make(chan struct{}), release: make(chan struct{}), applied: make(chan struct{})}
}

func (g *gatedStore) Apply(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	gated := false
	for _, op := range ops {
		if op.Register != nil && op.Register.Channel.ConnectorID == g.conn {
			g.once.Do(func() {
				gated = true
				ch := op.Register.Channel
				g.register.Store(&ch)
			})
		}
	}
	if !gated {
		return g.Cluster.Apply(ctx, ops...)
	}
	close(g.entered)
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer close(g.applied)
	return g.Cluster.Apply(ctx, ops...)
}

// lostLinkDialer plays a connector's network: its first connection reaches
// node A, but the link loses everything A sends (the HELLO reply among it),
// so the connector's HELLO fails and it gives up on that connection, which
// node A still holds (half-open); every later connection reaches node B.
type lostLinkDialer struct {
	a, b    channel.Dialer
	n       atomic.Int32
	mu      sync.Mutex
	first   channel.Conn // the underlying connection to A
	drained chan struct{}
}

func (d *lostLinkDialer) Dial(ctx context.Context) (channel.Conn, error) {
	if d.n.Add(1) > 1 {
		return d.b.Dial(ctx)
	}
	conn, err := d.a.Dial(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.first = conn
	d.mu.Unlock()
	go func() { // what A sends is lost
		defer close(d.drained)
		for {
			if _, err := conn.Recv(); err != nil {
				return
			}
		}
	}()
	return &lostConn{Conn: conn, d: d}, nil
}

// lostConn passes sends through and receives nothing: the first Recv fails
// as a lost link does.
type lostConn struct {
	channel.Conn
	d *lostLinkDialer
}

func (c *lostConn) Recv() (*channel.Frame, error) {
	return nil, errors.New("link lost (test)")
}

func (c *lostConn) Close() error {
	return nil // the connector's end is gone; node A's end stays open (half-open)
}

// A connector's first connection attempt (to node A) is given up by the
// connector, which connects again, to node B; node A registers the stale
// attempt only after that. The stale registration must not take the
// connector's live channel over: before decision 0018's amendment it did,
// the live channel was told GOOD_BYE{reconnect:false}, and the connector
// stopped for good. Now it is refused: node A closes the stale channel, the
// live one stays registered and the connector keeps running. Both with the
// stale channel still open on node A (half-open) and closed while its
// registration is being applied.
func TestStaleAttemptDoesNotTakeOver(t *testing.T) {
	for _, closeThrough := range []bool{false, true} {
		name := "stale channel open"
		if closeThrough {
			name = "stale channel closed"
		}
		t.Run(name, func(t *testing.T) { testStaleAttempt(t, closeThrough) })
	}
}

func testStaleAttempt(t *testing.T, closeThrough bool) {
	shared := standalone.New("node-a")
	gated := newGatedStore(shared, "gw")
	a := newHarness(t, fastConfig(), harnessOpts{store: gated})
	cfgB := fastConfig()
	cfgB.NodeID = "node-b"
	b := newHarness(t, cfgB, harnessOpts{store: nodeAs{Cluster: shared, id: "node-b"}})
	rec := recordState(b)

	d := &lostLinkDialer{a: a.dialer, b: b.dialer, drained: make(chan struct{})}
	t.Cleanup(func() {
		d.mu.Lock()
		first := d.first
		d.mu.Unlock()
		if first != nil {
			_ = first.Close()
			<-d.drained
		}
	})
	cfg := goconnector.Config{
		TargetID: "t", ConnectorID: "gw",
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		Logger:  testLogger(t),
		OnState: func(goconnector.StateChange) { b.sig.fire() },
	}
	mux := command.NewMux()
	mux.RegisterFunc("PING", func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
		return command.Succeeded(cmd, nil)
	})
	conn, err := goconnector.New(cfg, mux, d)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- conn.Run(runCtx) }()
	t.Cleanup(func() {
		stopRun()
		_ = conn.Close()
		<-runErr
	})

	// The connector is connected through node B, its channel registered,
	// while node A's registration of the first attempt is still pending.
	select {
	case <-gated.entered:
	case <-time.After(testTimeout):
		t.Fatal("node A never tried to register the first attempt")
	}
	stale := gated.register.Load()
	if closeThrough { // node A's end of the stale connection ends too
		d.mu.Lock()
		_ = d.first.Close()
		d.mu.Unlock()
	}
	b.waitFor("the connector connected through node B and registered", func() bool {
		id := conn.ChannelID()
		_, ok := b.ctrl.Channel(id)
		return conn.State() == goconnector.StateConnected && id != stale.ID && ok
	})
	live := conn.ChannelID()
	if stale.Instance == "" || stale.Attempt != 1 {
		t.Fatalf("first HELLO said instance %q attempt %d; want an instance, attempt 1", stale.Instance, stale.Attempt)
	}

	close(gated.release)
	select {
	case <-gated.applied:
	case <-time.After(testTimeout):
		t.Fatal("the stale registration was never applied")
	}
	// Node A closes the stale channel: its end of the first connection ends.
	select {
	case <-d.drained:
	case <-time.After(testTimeout):
		t.Fatal("node A did not close the stale channel")
	}
	a.waitFor("node A holds no channel", func() bool { return a.ctrl.LocalChannels() == 0 })

	if _, ok := b.ctrl.Channel(live); !ok {
		t.Errorf("the live channel %s is no longer registered", live)
	}
	if _, ok := a.ctrl.Channel(stale.ID); ok {
		t.Errorf("the stale channel %s is registered", stale.ID)
	}
	for _, change := range rec.all() {
		for _, e := range change {
			if e.ChannelID == live && e.Kind == state.ChannelUnregistered {
				t.Errorf("the live channel was unregistered: %+v", change)
			}
		}
	}
	// The connector is still connected on the live channel and running.
	// (A GOOD_BYE it was told would have ended Run: the barrier below, a
	// command sent through node B, is answered only by a live channel.)
	reply, err := b.ctrl.Send(t.Context(), "t", command.MustCommand("PING", nil))
	if err != nil || reply.Status != command.StatusSucceeded {
		t.Errorf("send to the target after the stale registration = %+v, %v; want an answer", reply, err)
	}
	select {
	case err := <-runErr:
		t.Fatalf("connector Run returned %v; it must keep running", err)
	default:
	}
	if got := conn.ChannelID(); got != live || conn.State() != goconnector.StateConnected {
		t.Errorf("connector on channel %s, state %v; want still on %s, connected", got, conn.State(), live)
	}
}

// A channel that dies while its registration waits in the node's queue is
// never registered: the registration is dropped, so a dead channel cannot
// take over a live one of its connector (whatever the connector sent in its
// HELLO).
func TestRegistrationDroppedWhenChannelDiesFirst(t *testing.T) {
	gated := newGatedStore(standalone.New("node-a"), "blocker")
	h := newHarness(t, fastConfig(), harnessOpts{store: gated})
	rec := recordState(h)

	// The HELLO is answered before the registration: connect returns while
	// the blocker's registration is held in Apply.
	blocker := h.connect(connOpts{target: "t0", connectorID: "blocker"})
	select {
	case <-gated.entered:
	case <-time.After(testTimeout):
		t.Fatal("the blocker's registration never reached the store")
	}
	dead := h.connect(connOpts{target: "t", connectorID: "gw"})
	h.waitFor("the registration queued", func() bool { return h.ctrl.QueuedOps() == 1 })
	dead.close()
	h.waitFor("the dead channel dropped", func() bool { return h.ctrl.LocalChannels() == 1 })

	close(gated.release)
	h.waitRegistered(blocker.id(), true)
	after := h.connect(connOpts{target: "t", connectorID: "other"}) // queued behind the dead one's
	h.waitRegistered(after.id(), true)
	for _, change := range rec.all() {
		for _, e := range change {
			if e.ChannelID == dead.id() {
				t.Errorf("the dead channel reached the state: %+v", change)
			}
		}
	}
}
