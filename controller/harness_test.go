package controller_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// testTimeout bounds every wait of a test.
const testTimeout = 10 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// signal wakes waiters whenever something observable changed.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) fire() {
	s.mu.Lock()
	close(s.ch)
	s.ch = make(chan struct{})
	s.mu.Unlock()
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// waitFor waits until cond holds, re-checking on every signal and every few
// milliseconds, and fails the test after testTimeout.
func waitFor(t *testing.T, sig *signal, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		woken := sig.wait()
		if cond() {
			return
		}
		select {
		case <-woken:
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// testLogger logs to t (shown on failure or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeMetrics counts what the controller reports.
type fakeMetrics struct {
	sig *signal
	mu  sync.Mutex
	m   map[string]int // "hello:<reason>", "health:<reason>", "sent", "handled", "sweep"; "pending": the last value; "pendingMax"
}

func (f *fakeMetrics) add(k string) {
	f.mu.Lock()
	f.m[k]++
	f.mu.Unlock()
	f.sig.fire()
}

func (f *fakeMetrics) count(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[k]
}

func (f *fakeMetrics) Sent(command.Type, time.Duration, error)             { f.add("sent") }
func (f *fakeMetrics) Handled(command.Type, time.Duration, command.Status) { f.add("handled") }
func (f *fakeMetrics) HelloRejected(reason string)                         { f.add("hello:" + reason) }
func (f *fakeMetrics) HealthCheckFailed(reason string)                     { f.add("health:" + reason) }
func (f *fakeMetrics) HealthSweep(time.Duration)                           { f.add("sweep") }

// PrimaryNoticesPending records the last value under "pending".
func (f *fakeMetrics) PrimaryNoticesPending(n int) {
	f.mu.Lock()
	f.m["pending"] = n
	f.m["pendingMax"] = max(f.m["pendingMax"], n)
	f.mu.Unlock()
	f.sig.fire()
}

// eventLog records listener events.
type eventLog struct {
	sig *signal
	mu  sync.Mutex
	evs []controller.Event
}

func (l *eventLog) add(e controller.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
	l.sig.fire()
}

func (l *eventLog) all() []controller.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]controller.Event(nil), l.evs...)
}

// harness runs one controller over the embedded twin.
type harness struct {
	t       *testing.T
	sig     *signal
	lis     channel.Listener
	dialer  channel.Dialer
	store   controller.Cluster
	ctrl    *controller.Controller
	metrics *fakeMetrics
	events  *eventLog
	cancel  context.CancelFunc

	runDone   chan struct{} // closed when Run returned
	runResult error
	// closeErrOK: the test expects Close to fail (set before closing).
	closeErrOK bool
}

type harnessOpts struct {
	store controller.Cluster // default: a new state.Memory
	lis   channel.Listener   // default: embedded.Listen()
	dial  channel.Dialer     // with lis: how connectors reach it
}

// fastConfig returns a config whose loops are quiet unless a test turns them
// on: the health loop effectively never runs.
func fastConfig() controller.Config {
	return controller.Config{
		NodeID:         "node-a",
		HealthInterval: time.Hour,
		HealthTimeout:  5 * time.Second,
		GoodByeTimeout: 2 * time.Second,
	}
}

func newHarness(t *testing.T, cfg controller.Config, o ...harnessOpts) *harness {
	t.Helper()
	var opts harnessOpts
	if len(o) > 0 {
		opts = o[0]
	}
	h := &harness{t: t, sig: newSignal(), runDone: make(chan struct{})}
	h.metrics = &fakeMetrics{sig: h.sig, m: map[string]int{}}
	h.events = &eventLog{sig: h.sig}
	h.store = opts.store
	if h.store == nil {
		h.store = standalone.New(cfg.NodeID)
	}
	if opts.lis != nil {
		h.lis, h.dialer = opts.lis, opts.dial
	} else {
		el := embedded.Listen()
		h.lis, h.dialer = el, el
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = h.metrics
	}
	user := cfg.OnEvent
	cfg.OnEvent = func(e controller.Event) {
		h.events.add(e)
		if user != nil {
			user(e)
		}
	}
	ctrl, err := controller.New(cfg, h.lis, h.store)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	h.ctrl = ctrl
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() {
		h.runResult = ctrl.Run(ctx)
		close(h.runDone)
	}()
	t.Cleanup(func() {
		if err := ctrl.Close(); err != nil && !h.closeErrOK {
			t.Errorf("Close() = %v", err)
		}
		cancel()
		if err := h.wait(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return h
}

// wait waits (bounded) for Run to return and returns its result.
func (h *harness) wait() error {
	h.t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-h.runDone:
		return h.runResult
	case <-timer.C:
		return errors.New("Run did not return in time")
	}
}

// waitFor waits for cond, woken by any event, metric or connector change.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	waitFor(h.t, h.sig, what, cond)
}

// waitRegistered waits until channel id is (or is no longer) registered.
func (h *harness) waitRegistered(id string, want bool) {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("channel %s registered=%t", id, want), func() bool {
		_, ok := h.ctrl.Channel(id)
		return ok == want
	})
}

// connOpts describe a fake connector.
type connOpts struct {
	target      string
	connectorID string
	token       string
	metadata    map[string]string
	// health: "" or "healthy", "unhealthy", "silent" (never answers).
	health string
	// silentGoodBye: GOOD_BYE is recorded but never answered (the handler
	// waits until its context ends).
	silentGoodBye bool
	// failPrimary makes the first n PRIMARY commands fail.
	failPrimary int
	// handlers answer other command types.
	handlers map[command.Type]command.Handler
	// capabilities are announced in HELLO.
	capabilities []string
	// instance and attempt are announced in HELLO (decision 0018).
	instance string
	attempt  uint64
}

// connector plays a connector: it dials, says HELLO, and answers
// HEALTH_CHECK, PRIMARY and GOOD_BYE, recording what it was told.
type connector struct {
	sig   *signal
	opts  connOpts
	ch    *channel.Channel
	hello command.HelloReplyPayload

	mu          sync.Mutex
	primaries   []command.PrimaryPayload // successful PRIMARY commands, in order
	goodbyes    []command.GoodByePayload
	checks      int
	received    []command.Type
	failPrimary int
}

// dial connects a fake connector; the caller closes it.
func (h *harness) dial(ctx context.Context, o connOpts) (*connector, error) {
	conn, err := h.dialer.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return h.attach(ctx, conn, o)
}

// attach says HELLO on an open conn and runs the fake connector on it.
func (h *harness) attach(ctx context.Context, conn channel.Conn, o connOpts) (*connector, error) {
	hctx, cancel := context.WithTimeout(ctx, testTimeout)
	defer cancel()
	hello, err := channel.Hello(hctx, conn, command.HelloPayload{
		TargetID: o.target, ConnectorID: o.connectorID, Token: o.token, Metadata: o.metadata,
		Capabilities: o.capabilities, Instance: o.instance, Attempt: o.attempt,
	})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	c := &connector{sig: h.sig, opts: o, hello: hello, failPrimary: o.failPrimary}
	mux := command.NewMux()
	mux.RegisterFunc(command.TypeHealthCheck, c.onHealthCheck)
	mux.RegisterFunc(command.TypePrimary, c.onPrimary)
	mux.RegisterFunc(command.TypeGoodBye, c.onGoodBye)
	for typ, hd := range o.handlers {
		mux.Register(typ, c.recording(hd))
	}
	c.ch = channel.New(conn, mux, channel.Config{Logger: slog.New(slog.DiscardHandler)})
	return c, nil
}

// connect dials a fake connector and closes it at the end of the test.
func (h *harness) connect(o connOpts) *connector {
	h.t.Helper()
	c, err := h.dial(h.t.Context(), o)
	if err != nil {
		h.t.Fatalf("connect(%+v) = %v", o, err)
	}
	h.t.Cleanup(c.close)
	return c
}

func (c *connector) id() string { return c.hello.ChannelID }

func (c *connector) close() { _ = c.ch.Close() }

func (c *connector) changed() {
	c.sig.fire()
}

func (c *connector) onHealthCheck(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	c.mu.Lock()
	c.checks++
	c.mu.Unlock()
	c.changed()
	switch c.opts.health {
	case "unhealthy":
		return command.Succeeded(cmd, command.HealthCheckReplyPayload{Healthy: false, Detail: "disk full"})
	case "silent":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return command.Succeeded(cmd, command.HealthCheckReplyPayload{Healthy: true})
}

func (c *connector) onPrimary(_ context.Context, cmd *command.Command) (*command.Reply, error) {
	p, err := command.Decode[command.PrimaryPayload](cmd.Payload)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	fail := c.failPrimary > 0
	if fail {
		c.failPrimary--
	} else {
		c.primaries = append(c.primaries, p)
	}
	c.mu.Unlock()
	c.changed()
	if fail {
		return nil, errors.New("primary handler failed on purpose")
	}
	return command.Succeeded(cmd, command.PrimaryReplyPayload{})
}

func (c *connector) onGoodBye(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	p, err := command.Decode[command.GoodByePayload](cmd.Payload)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.goodbyes = append(c.goodbyes, p)
	c.mu.Unlock()
	c.changed()
	if c.opts.silentGoodBye {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return command.Succeeded(cmd, command.GoodByeReplyPayload{TargetID: p.TargetID})
}

func (c *connector) recording(h command.Handler) command.Handler {
	return command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		c.mu.Lock()
		c.received = append(c.received, cmd.Type)
		c.mu.Unlock()
		c.changed()
		return h.Handle(ctx, cmd)
	})
}

// belief returns the last PRIMARY this connector accepted.
func (c *connector) belief() (command.PrimaryPayload, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.primaries) == 0 {
		return command.PrimaryPayload{}, false
	}
	return c.primaries[len(c.primaries)-1], true
}

func (c *connector) goodbyeList() []command.GoodByePayload {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]command.GoodByePayload(nil), c.goodbyes...)
}

func (c *connector) healthChecks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks
}

func (c *connector) receivedCount(t command.Type) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.received {
		if r == t {
			n++
		}
	}
	return n
}

// waitBelief waits until the connector's last accepted PRIMARY is want.
func (h *harness) waitBelief(c *connector, want command.PrimaryPayload) {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("channel %s told %+v", c.id(), want), func() bool {
		got, ok := c.belief()
		return ok && got == want
	})
}

// echo is a handler answering with the command's payload.
var echo = command.HandlerFunc(func(_ context.Context, cmd *command.Command) (*command.Reply, error) {
	return &command.Reply{Status: command.StatusSucceeded, Payload: cmd.Payload}, nil
})

// channelHello runs the connector handshake on conn for target.
func channelHello(t *testing.T, conn channel.Conn, target string) (command.HelloReplyPayload, error) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	return channel.Hello(ctx, conn, command.HelloPayload{TargetID: target})
}

// newBareChannel runs a channel with no handler on conn.
func newBareChannel(conn channel.Conn) *channel.Channel {
	return channel.New(conn, nil, channel.Config{Logger: slog.New(slog.DiscardHandler)})
}

// waitClosed waits until the connector's channel has seen its connection end.
func (h *harness) waitClosed(c *connector) {
	h.t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-c.ch.Done():
	case <-timer.C:
		h.t.Fatalf("channel %s still open", c.id())
	}
}
