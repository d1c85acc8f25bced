package connector_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

func TestNewValidates(t *testing.T) {
	fc := newFakeController(t)
	good := testConfig(t)
	tests := []struct {
		name string
		cfg  func(c connector.Config) connector.Config
		ds   []channel.Dialer
	}{
		{"no target", func(c connector.Config) connector.Config { c.TargetID = ""; return c }, []channel.Dialer{fc.dialer()}},
		{"negative timeout", func(c connector.Config) connector.Config { c.HelloTimeout = -1; return c }, []channel.Dialer{fc.dialer()}},
		{"max below base", func(c connector.Config) connector.Config { c.BackoffBase = 2 * time.Minute; c.BackoffMax = 0; return c }, []channel.Dialer{fc.dialer()}},
		{"bad channel config", func(c connector.Config) connector.Config { c.Channel.MaxInFlight = -1; return c }, []channel.Dialer{fc.dialer()}},
		{"connector id with a newline", func(c connector.Config) connector.Config { c.ConnectorID = "gw\n1"; return c }, []channel.Dialer{fc.dialer()}},
		{"target id too long", func(c connector.Config) connector.Config { c.TargetID = strings.Repeat("t", 129); return c }, []channel.Dialer{fc.dialer()}},
		{"metadata value too long", func(c connector.Config) connector.Config {
			c.Metadata = map[string]string{"k": strings.Repeat("v", 513)}
			return c
		}, []channel.Dialer{fc.dialer()}},
		{"no endpoint", func(c connector.Config) connector.Config { return c }, nil},
		{"nil endpoint", func(c connector.Config) connector.Config { return c }, []channel.Dialer{nil}},
	}
	for _, tt := range tests {
		if _, err := connector.New(tt.cfg(good), nil, tt.ds...); !errors.Is(err, connector.ErrInvalidConfig) {
			t.Errorf("%s: New() = %v, want ErrInvalidConfig", tt.name, err)
		}
	}
	if err := (connector.Config{TargetID: "t"}).Validate(); err != nil {
		t.Errorf("Config{TargetID}.Validate() = %v, want nil (zero values mean defaults)", err)
	}
}

func TestHelloCarriesIdentityAndAdoptsTarget(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	fc.decide = func(_ context.Context, cmd *command.Command, _ command.HelloPayload) (*command.Reply, error) {
		return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: "rewritten", ChannelID: "ch-77", ProtocolVersion: 1})
	}
	cfg := testConfig(t)
	cfg.ConnectorID = "conn-1"
	cfg.Token = "secret"
	cfg.Metadata = map[string]string{"zone": "eu-1", "version": "1.2.3"}
	c := newConnector(t, cfg, nil, fc.dialer())
	if got := c.TargetID(); got != "target-a" {
		t.Errorf("TargetID() before connecting = %q, want the configured %q", got, "target-a")
	}
	start(t, c)
	p := fc.next(ctx)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}

	h := p.hello
	if h.TargetID != "target-a" || h.ConnectorID != "conn-1" || h.Token != "secret" ||
		h.ProtocolVersion != command.ProtocolVersion || !maps.Equal(h.Metadata, cfg.Metadata) {
		t.Errorf("HELLO = %+v, want target-a, conn-1, secret, version %d, metadata %v", h, command.ProtocolVersion, cfg.Metadata)
	}
	if got := c.TargetID(); got != "rewritten" {
		t.Errorf("TargetID() = %q, want the controller's %q", got, "rewritten")
	}
	if got := c.ChannelID(); got != "ch-77" {
		t.Errorf("ChannelID() = %q, want %q", got, "ch-77")
	}
	if got := c.State(); got != connector.StateConnected {
		t.Errorf("State() = %v, want Connected", got)
	}
}

func TestGeneratedConnectorIDIsStableAcrossReconnects(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	start(t, c)
	p1 := fc.next(ctx)
	_ = p1.ch.Close()
	p2 := fc.next(ctx)
	if p1.hello.ConnectorID == "" || p1.hello.ConnectorID != p2.hello.ConnectorID || p1.hello.ConnectorID != c.ConnectorID() {
		t.Errorf("connector ids = %q, %q (ConnectorID() %q), want one non-empty id", p1.hello.ConnectorID, p2.hello.ConnectorID, c.ConnectorID())
	}
}

func TestHelloRejectedIsFinal(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	fc.decide = func(context.Context, *command.Command, command.HelloPayload) (*command.Reply, error) {
		return nil, errors.New("bad token")
	}
	cfg := testConfig(t)
	rec := newRecorder(&cfg)
	c := newConnector(t, cfg, nil, fc.dialer())
	err := waitRun(ctx, t, start(t, c))

	var rejected *channel.HelloRejectedError
	if !errors.Is(err, channel.ErrHelloRejected) || !errors.As(err, &rejected) || !strings.Contains(rejected.Reason, "bad token") {
		t.Fatalf("Run() = %v, want a *channel.HelloRejectedError with the reason", err)
	}
	if n := fc.hellos.Load(); n != 1 {
		t.Errorf("controller saw %d HELLOs, want exactly 1 (no retry)", n)
	}
	if got := c.State(); got != connector.StateStopped {
		t.Errorf("State() = %v, want Stopped", got)
	}
	if werr := c.WaitConnected(ctx); !errors.Is(werr, channel.ErrHelloRejected) {
		t.Errorf("WaitConnected() = %v, want the rejection", werr)
	}
	states := rec.stateList()
	want := []connector.State{connector.StateConnecting, connector.StateDisconnected, connector.StateStopped}
	if !sameStates(states, want) || !errors.Is(states[2].Err, channel.ErrHelloRejected) {
		t.Errorf("states = %v, want %v ending with the rejection", states, want)
	}
}

func TestReconnectAfterControllerDrops(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	start(t, c)
	p1 := fc.next(ctx)
	_ = p1.ch.Close() // the controller crashes or drops the stream
	p2 := fc.next(ctx)
	if p2.id == p1.id {
		t.Fatalf("second connection has the same channel id %q", p2.id)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}
	if got := c.ChannelID(); got != p2.id {
		t.Errorf("ChannelID() = %q, want the new channel %q", got, p2.id)
	}
}

func TestReconnectAfterMalformedFrame(t *testing.T) {
	ctx := testContext(t)
	lis := embedded.Listen()
	accept := func(ctx context.Context, cmd *command.Command, h command.HelloPayload) (*command.Reply, error) {
		return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: h.TargetID, ChannelID: "ch-x"})
	}
	second := make(chan channel.Conn, 1)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { _ = lis.Close() })
	wg.Go(func() {
		// A controller that breaks the protocol after the handshake: a frame
		// carrying neither a command nor a reply, which cannot be answered.
		conn, err := lis.Accept(ctx)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, _, err := channel.AcceptHello(ctx, conn, accept); err != nil {
			return
		}
		_ = conn.Send(&channel.Frame{})
		conn2, err := lis.Accept(ctx)
		if err != nil {
			return
		}
		if _, _, err := channel.AcceptHello(ctx, conn2, accept); err != nil {
			_ = conn2.Close()
			return
		}
		second <- conn2 // buffered(1)
	})
	cfg := testConfig(t)
	rec := newRecorder(&cfg)
	c := newConnector(t, cfg, nil, lis)
	start(t, c)
	select {
	case conn2 := <-second:
		t.Cleanup(func() { _ = conn2.Close() })
	case <-ctx.Done():
		t.Fatal("no reconnection after a malformed frame")
	}
	rec.waitFor(ctx, t, "the disconnection", func(s []connector.StateChange, _ []primaryCall) bool {
		return countStates(s, connector.StateDisconnected) >= 1
	})
	if d := firstState(rec.stateList(), connector.StateDisconnected); !errors.Is(d.Err, channel.ErrMalformedFrame) {
		t.Errorf("Disconnected.Err = %v, want channel.ErrMalformedFrame", d.Err)
	}
}

func TestGoodByeReconnect(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	cfg := testConfig(t)
	rec := newRecorder(&cfg)
	c := newConnector(t, cfg, nil, fc.dialer())
	errc := start(t, c)
	p1 := fc.next(ctx)

	r := p1.send(ctx, t, command.TypeGoodBye, command.GoodByePayload{TargetID: "target-a", Reconnect: true})
	if !r.Succeeded() {
		t.Fatalf("GOOD_BYE reply = %+v, want SUCCEEDED", r)
	}
	if out, _ := command.Decode[command.GoodByeReplyPayload](r.Payload); out.TargetID != "target-a" {
		t.Errorf("GOOD_BYE reply payload = %+v, want the target echoed", out)
	}
	_ = p1.ch.Close()
	fc.next(ctx)

	rec.waitFor(ctx, t, "the GOOD_BYE disconnection", func(s []connector.StateChange, _ []primaryCall) bool {
		return countStates(s, connector.StateDisconnected) >= 1
	})
	var gb *connector.GoodByeError
	if d := firstState(rec.stateList(), connector.StateDisconnected); !errors.As(d.Err, &gb) || !gb.Reconnect || gb.ChannelID != p1.id {
		t.Errorf("Disconnected.Err = %v, want a *GoodByeError with Reconnect on %s", d.Err, p1.id)
	}
	select {
	case err := <-errc:
		t.Fatalf("Run() = %v after GOOD_BYE{reconnect:true}, want it to keep running", err)
	default:
	}
}

func TestGoodByeNoReconnectStops(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	errc := start(t, c)
	p1 := fc.next(ctx)
	if r := p1.send(ctx, t, command.TypeGoodBye, command.GoodByePayload{TargetID: "target-a"}); !r.Succeeded() {
		t.Fatalf("GOOD_BYE reply = %+v, want SUCCEEDED", r)
	}
	_ = p1.ch.Close()

	err := waitRun(ctx, t, errc)
	var gb *connector.GoodByeError
	if !errors.Is(err, connector.ErrGoodBye) || !errors.As(err, &gb) || gb.Reconnect || gb.ChannelID != p1.id {
		t.Fatalf("Run() = %v, want a *GoodByeError without reconnect for %s", err, p1.id)
	}
	if n := fc.hellos.Load(); n != 1 {
		t.Errorf("controller saw %d HELLOs, want 1", n)
	}
	if _, err := c.Send(ctx, command.MustCommand("PING", nil)); !errors.Is(err, connector.ErrNotConnected) {
		t.Errorf("Send() after stop = %v, want ErrNotConnected", err)
	}
}

func TestEndpointFailover(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	down := &countingDialer{}
	up := &countingDialer{d: fc.dialer()}
	cfg := testConfig(t)
	rec := newRecorder(&cfg)
	c := newConnector(t, cfg, nil, down, up)
	start(t, c)

	p1 := fc.next(ctx)
	if d, u := down.calls.Load(), up.calls.Load(); d != 1 || u != 1 {
		t.Fatalf("dials = %d to the dead endpoint, %d to the live one; want 1 and 1", d, u)
	}
	_ = p1.ch.Close()
	fc.next(ctx)
	// After a drop, the endpoint that worked is tried first again.
	if d, u := down.calls.Load(), up.calls.Load(); d != 1 || u != 2 {
		t.Errorf("dials after the drop = %d dead, %d live; want 1 and 2", d, u)
	}
	rec.waitFor(ctx, t, "the second connection", func(s []connector.StateChange, _ []primaryCall) bool {
		return countStates(s, connector.StateConnected) == 2
	})
	var eps []int
	for _, sc := range rec.stateList() {
		eps = append(eps, sc.Endpoint)
	}
	// Connecting(0) Disconnected(0) Connecting(1) Connected(1) Disconnected(1) Connecting(1) Connected(1)
	if want := []int{0, 0, 1, 1, 1, 1, 1}; !equalInts(eps, want) {
		t.Errorf("state endpoints = %v, want %v", eps, want)
	}
	if first := rec.stateList()[1]; !errors.Is(first.Err, errUnreachable) {
		t.Errorf("first Disconnected.Err = %v, want the dial error", first.Err)
	}
}

func TestGoodByeReconnectMovesToNextEndpoint(t *testing.T) {
	ctx := testContext(t)
	a, b := newFakeController(t), newFakeController(t)
	c := newConnector(t, testConfig(t), nil, a.dialer(), b.dialer())
	start(t, c)
	pa := a.next(ctx)
	pa.send(ctx, t, command.TypeGoodBye, command.GoodByePayload{TargetID: "target-a", Reconnect: true})
	_ = pa.ch.Close()
	b.next(ctx) // the controller asked us to leave: go elsewhere
}

func TestSendToController(t *testing.T) {
	ctx := testContext(t)
	mux := command.NewMux()
	mux.Register("PING", command.Typed(func(_ context.Context, in string) (string, error) { return "pong:" + in, nil }))
	fc := newFakeController(t, withMux(mux))
	c := newConnector(t, testConfig(t), nil, fc.dialer())

	if _, err := c.Send(ctx, command.MustCommand("PING", "x")); !errors.Is(err, connector.ErrNotConnected) {
		t.Fatalf("Send() before Run = %v, want ErrNotConnected", err)
	}
	start(t, c)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}
	r, err := c.Send(ctx, command.MustCommand("PING", "x"))
	if err != nil {
		t.Fatalf("Send() = %v", err)
	}
	if out, _ := command.Decode[string](r.Payload); out != "pong:x" {
		t.Errorf("reply = %q, want %q", out, "pong:x")
	}
	if _, err := c.Send(ctx, command.MustCommand("NOPE", nil)); !errors.Is(err, channel.ErrUnknownCommand) {
		t.Errorf("Send(unknown type) = %v, want channel.ErrUnknownCommand", err)
	}
	_ = c.Close()
	if _, err := c.Send(ctx, command.MustCommand("PING", "x")); !errors.Is(err, connector.ErrNotConnected) || !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Send() after Close = %v, want ErrNotConnected and ErrClosed", err)
	}
}

func TestPendingSendFailsAtOnceOnDisconnect(t *testing.T) {
	ctx := testContext(t)
	entered := make(chan struct{})
	mux := command.NewMux()
	mux.RegisterFunc("SLOW", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		close(entered)
		<-ctx.Done() // never answers; ends when the channel closes
		return nil, ctx.Err()
	})
	fc := newFakeController(t, withMux(mux))
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	start(t, c)
	p := fc.next(ctx)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := c.Send(ctx, command.MustCommand("SLOW", nil)) // deadline: the whole test timeout
		errc <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the command never reached the controller")
	}
	_ = p.ch.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, channel.ErrClosed) {
			t.Errorf("pending Send() = %v, want an error wrapping channel.ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("pending Send did not fail when the channel closed")
	}
}

func TestCloseStopsRunAndWaits(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	entered, handlerDone := make(chan struct{}), make(chan struct{})
	mux := command.NewMux()
	mux.RegisterFunc("BLOCK", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		defer close(handlerDone)
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	c := newConnector(t, testConfig(t), mux, fc.dialer())
	errc := start(t, c)
	p := fc.next(ctx)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_, _ = p.ch.Send(ctx, command.MustCommand("BLOCK", nil))
	}()
	t.Cleanup(func() { <-sent })

	// Close cancels the handler's context and waits for it.
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the command never reached the connector")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	select {
	case <-handlerDone:
	default:
		t.Error("Close returned before the handler did")
	}
	if err := waitRun(ctx, t, errc); err != nil {
		t.Errorf("Run() = %v after Close, want nil", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if err := c.Run(ctx); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Run() after Close = %v, want ErrClosed", err)
	}
	if err := c.WaitConnected(ctx); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("WaitConnected() after Close = %v, want ErrClosed", err)
	}
	if got := c.State(); got != connector.StateStopped {
		t.Errorf("State() = %v, want Stopped", got)
	}
	// A local close never reconnects (weakness 21).
	fc.expectNoConnection(defaultTestShortTimeout)
	if n := fc.hellos.Load(); n != 1 {
		t.Errorf("controller saw %d HELLOs, want 1", n)
	}
}

func TestCloseBeforeRun(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := c.Run(ctx); !errors.Is(err, connector.ErrClosed) {
		t.Errorf("Run() after Close = %v, want ErrClosed", err)
	}
	if n := fc.hellos.Load(); n != 0 {
		t.Errorf("controller saw %d HELLOs, want 0", n)
	}
}

func TestRunContextCancelStops(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	t.Cleanup(func() { _ = c.Close() })
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(runCtx) }()
	fc.next(ctx)
	if err := c.Run(ctx); err == nil || errors.Is(err, connector.ErrClosed) {
		t.Errorf("second concurrent Run() = %v, want an error (Run may be called once)", err)
	}
	cancel()
	if err := waitRun(ctx, t, errc); err != nil {
		t.Errorf("Run() = %v after its context ended, want nil", err)
	}
}

func TestStateSequence(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	cfg := testConfig(t)
	rec := newRecorder(&cfg)
	c := newConnector(t, cfg, nil, fc.dialer())
	if got := c.State(); got != connector.StateIdle {
		t.Errorf("State() before Run = %v, want Idle", got)
	}
	errc := start(t, c)
	p1 := fc.next(ctx)
	_ = p1.ch.Close()
	p2 := fc.next(ctx)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}
	_ = c.Close()
	if err := waitRun(ctx, t, errc); err != nil {
		t.Fatalf("Run() = %v", err)
	}

	// Run returns only once every callback has run.
	states := rec.stateList()
	want := []connector.State{
		connector.StateConnecting, connector.StateConnected, connector.StateDisconnected,
		connector.StateConnecting, connector.StateConnected, connector.StateDisconnected,
		connector.StateStopped,
	}
	if !sameStates(states, want) {
		t.Fatalf("states = %v, want %v", states, want)
	}
	if s := states[1]; s.ChannelID != p1.id || s.TargetID != "target-a" {
		t.Errorf("first Connected = %+v, want channel %s of target-a", s, p1.id)
	}
	if s := states[2]; !errors.Is(s.Err, channel.ErrClosed) || s.ChannelID != p1.id || s.Delay < 0 || s.Delay >= time.Millisecond {
		t.Errorf("first Disconnected = %+v, want channel.ErrClosed on %s and a delay in [0, 1ms)", s, p1.id)
	}
	if s := states[4]; s.ChannelID != p2.id {
		t.Errorf("second Connected = %+v, want channel %s", s, p2.id)
	}
	if s := states[5]; !errors.Is(s.Err, connector.ErrClosed) || s.Delay != 0 {
		t.Errorf("last Disconnected = %+v, want ErrClosed and no delay", s)
	}
	if s := states[6]; s.Err != nil {
		t.Errorf("Stopped.Err = %v, want nil", s.Err)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[connector.State]string{
		connector.StateIdle: "Idle", connector.StateConnecting: "Connecting", connector.StateConnected: "Connected",
		connector.StateDisconnected: "Disconnected", connector.StateStopped: "Stopped", connector.State(9): "State(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func sameStates(got []connector.StateChange, want []connector.State) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].State != want[i] {
			return false
		}
	}
	return true
}

func firstState(states []connector.StateChange, s connector.State) connector.StateChange {
	for _, sc := range states {
		if sc.State == s {
			return sc
		}
	}
	return connector.StateChange{}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
