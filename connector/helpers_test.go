package connector_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

const (
	defaultTestTimeout      = 10 * time.Second      // bound for every wait
	defaultTestShortTimeout = 10 * time.Millisecond // for "must NOT happen" assertions
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errUnreachable = errors.New("test: endpoint unreachable")

// testContext is the context every test waits with.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testLogger logs to t.Log, and stops once the test is over.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.over = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	over bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.over {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// testConfig is a Config with fast backoff for tests on real time.
func testConfig(t testing.TB) connector.Config {
	cfg := connector.DefaultConfig()
	cfg.TargetID = "target-a"
	cfg.HelloTimeout = defaultTestTimeout
	cfg.BackoffBase = time.Millisecond
	cfg.BackoffMax = 5 * time.Millisecond
	cfg.Logger = testLogger(t)
	return cfg
}

// fakeController is a minimal controller over the embedded twin: it accepts
// connections, runs the controller side of HELLO with decide, and hands each
// channel to the test through next.
type fakeController struct {
	t         testing.TB
	lis       *embedded.Listener
	decide    channel.HelloDecider
	mux       *command.Mux // answers connector → controller commands
	heartbeat time.Duration
	raw       bool // hand over bare Conns, no Channel (see withRaw)
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	peers     chan *peer
	hellos    atomic.Int32 // HELLOs seen, accepted or refused
	ids       atomic.Int32

	mu  sync.Mutex // protects all
	all []*peer
}

// peer is one channel accepted by the fake controller: a Channel, or the
// bare Conn with a raw controller.
type peer struct {
	hello command.HelloPayload
	id    string
	ch    *channel.Channel
	conn  channel.Conn // raw controllers only
}

type fakeOption func(*fakeController)

func withMux(m *command.Mux) fakeOption        { return func(f *fakeController) { f.mux = m } }
func withHeartbeat(d time.Duration) fakeOption { return func(f *fakeController) { f.heartbeat = d } }

// withRaw makes the controller hand the test bare Conns after the handshake,
// with no channel.Channel on its side. Tests inside a synctest bubble use it:
// channel.Channel.Send recycles channels and timers through process-wide
// sync.Pools, which must not carry bubble-made objects out of the bubble.
func withRaw() fakeOption { return func(f *fakeController) { f.raw = true } }

func newFakeController(t testing.TB, opts ...fakeOption) *fakeController {
	ctx, cancel := context.WithCancel(t.Context())
	f := &fakeController{t: t, lis: embedded.Listen(), mux: command.NewMux(), ctx: ctx, cancel: cancel,
		peers: make(chan *peer, 64)}
	f.decide = f.accept
	for _, o := range opts {
		o(f)
	}
	f.wg.Go(f.acceptLoop)
	t.Cleanup(f.stop)
	return f
}

// accept is the default decider: it accepts the target asked for.
func (f *fakeController) accept(_ context.Context, cmd *command.Command, hello command.HelloPayload) (*command.Reply, error) {
	return command.Succeeded(cmd, command.HelloReplyPayload{
		TargetID:        hello.TargetID,
		ChannelID:       fmt.Sprintf("ch-%d", f.ids.Add(1)),
		ProtocolVersion: command.ProtocolVersion,
		HeartbeatMs:     f.heartbeat.Milliseconds(),
	})
}

func (f *fakeController) acceptLoop() {
	for {
		conn, err := f.lis.Accept(f.ctx)
		if err != nil {
			return
		}
		f.wg.Go(func() { f.handshake(conn) })
	}
}

func (f *fakeController) handshake(conn channel.Conn) {
	var reply *command.Reply
	decide := func(ctx context.Context, cmd *command.Command, hello command.HelloPayload) (*command.Reply, error) {
		f.hellos.Add(1)
		r, err := f.decide(ctx, cmd, hello)
		reply = r
		return r, err
	}
	hello, _, err := channel.AcceptHello(f.ctx, conn, decide)
	if err != nil {
		_ = conn.Close()
		return
	}
	out, _ := command.Decode[command.HelloReplyPayload](reply.Payload)
	p := &peer{hello: hello, id: out.ChannelID, conn: conn}
	if !f.raw {
		p.ch, p.conn = channel.New(conn, f.mux, channel.Config{}), nil
	}
	f.mu.Lock()
	f.all = append(f.all, p)
	f.mu.Unlock()
	select {
	case f.peers <- p:
	case <-f.ctx.Done():
	}
}

// dialer is how connectors reach this controller.
func (f *fakeController) dialer() channel.Dialer { return f.lis }

// next returns the next channel accepted, or fails the test.
func (f *fakeController) next(ctx context.Context) *peer {
	f.t.Helper()
	select {
	case p := <-f.peers:
		return p
	case <-ctx.Done():
		f.t.Fatalf("no connection reached the controller: %v", ctx.Err())
		return nil
	}
}

// expectNoConnection fails the test if a connection arrives within d.
func (f *fakeController) expectNoConnection(d time.Duration) {
	f.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case p := <-f.peers:
		f.t.Fatalf("unexpected connection %s", p.id)
	case <-t.C:
	}
}

func (f *fakeController) stop() {
	_ = f.lis.Close()
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	all := slices.Clone(f.all)
	f.mu.Unlock()
	for _, p := range all {
		p.close()
	}
}

func (p *peer) close() {
	if p.conn != nil {
		_ = p.conn.Close()
		return
	}
	_ = p.ch.Close()
}

// rawSend writes cmd on a raw peer's Conn.
func (p *peer) rawSend(t testing.TB, cmd *command.Command) {
	t.Helper()
	if err := p.conn.Send(&channel.Frame{Command: cmd}); err != nil {
		t.Fatalf("raw Send(%s) = %v", cmd, err)
	}
}

// rawReply reads the next frame on a raw peer's Conn, which must be a reply.
func (p *peer) rawReply(t testing.TB) *command.Reply {
	t.Helper()
	f, err := p.conn.Recv()
	if err != nil || f.Reply == nil {
		t.Fatalf("raw Recv() = %+v, %v; want a reply", f, err)
	}
	return f.Reply
}

// send sends a built-in or user command to the connector on p.
func (p *peer) send(ctx context.Context, t testing.TB, typ command.Type, payload any) *command.Reply {
	t.Helper()
	r, err := p.ch.Send(ctx, command.MustCommand(typ, payload))
	if err != nil {
		t.Fatalf("controller Send(%s) = %v, want a reply", typ, err)
	}
	return r
}

// start runs c in the background; the returned channel yields Run's result.
// Close is registered as a cleanup.
func start(t testing.TB, c *connector.Connector) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- c.Run(t.Context()) }()
	t.Cleanup(func() { _ = c.Close() })
	return errc
}

// newConnector builds a connector or fails the test.
func newConnector(t testing.TB, cfg connector.Config, mux *command.Mux, ds ...channel.Dialer) *connector.Connector {
	t.Helper()
	c, err := connector.New(cfg, mux, ds...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return c
}

// waitRun waits for Run's result.
func waitRun(ctx context.Context, t testing.TB, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		t.Fatalf("Run did not return: %v", ctx.Err())
		return nil
	}
}

// recorder records OnState and OnPrimary calls.
type recorder struct {
	mu      sync.Mutex
	states  []connector.StateChange
	prims   []primaryCall
	changed chan struct{} // buffered(1)
}

type primaryCall struct {
	Primary bool
	Epoch   uint64
}

func newRecorder(cfg *connector.Config) *recorder {
	r := &recorder{changed: make(chan struct{}, 1)}
	cfg.OnState = func(sc connector.StateChange) {
		r.mu.Lock()
		r.states = append(r.states, sc)
		r.mu.Unlock()
		r.signal()
	}
	cfg.OnPrimary = func(p bool, e uint64) {
		r.mu.Lock()
		r.prims = append(r.prims, primaryCall{p, e})
		r.mu.Unlock()
		r.signal()
	}
	return r
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) stateList() []connector.StateChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.states)
}

func (r *recorder) primaryList() []primaryCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.prims)
}

// waitFor waits until cond holds over the recorded calls.
func (r *recorder) waitFor(ctx context.Context, t testing.TB, what string, cond func(states []connector.StateChange, prims []primaryCall) bool) {
	t.Helper()
	for {
		r.mu.Lock()
		ok := cond(r.states, r.prims)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; states %v, primary calls %v", what, ctx.Err(), r.stateList(), r.primaryList())
		}
	}
}

// countStates counts the recorded changes to s.
func countStates(states []connector.StateChange, s connector.State) int {
	n := 0
	for _, sc := range states {
		if sc.State == s {
			n++
		}
	}
	return n
}

// countingDialer counts Dial calls and can fail them.
type countingDialer struct {
	d     channel.Dialer // nil: always fail
	calls atomic.Int32
}

func (c *countingDialer) Dial(ctx context.Context) (channel.Conn, error) {
	c.calls.Add(1)
	if c.d == nil {
		return nil, fmt.Errorf("dial: %w", errUnreachable)
	}
	return c.d.Dial(ctx)
}
