package connector_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

// connected starts a connector with cfg and mux on a fresh fake controller
// and returns the controller's side of the channel.
func connected(ctx context.Context, t *testing.T, cfg connector.Config, mux *command.Mux) (*connector.Connector, *fakeController, *peer) {
	t.Helper()
	fc := newFakeController(t)
	c := newConnector(t, cfg, mux, fc.dialer())
	start(t, c)
	p := fc.next(ctx)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}
	return c, fc, p
}

func healthOf(ctx context.Context, t *testing.T, p *peer) command.HealthCheckReplyPayload {
	t.Helper()
	r := p.send(ctx, t, command.TypeHealthCheck, command.HealthCheckPayload{})
	if !r.Succeeded() {
		t.Fatalf("HEALTH_CHECK reply = %+v, want SUCCEEDED", r)
	}
	out, err := command.Decode[command.HealthCheckReplyPayload](r.Payload)
	if err != nil {
		t.Fatalf("HEALTH_CHECK payload: %v", err)
	}
	return out
}

func TestHealthDefaultsToHealthy(t *testing.T) {
	ctx := testContext(t)
	_, _, p := connected(ctx, t, testConfig(t), nil)
	if got := healthOf(ctx, t, p); got != (command.HealthCheckReplyPayload{Healthy: true}) {
		t.Errorf("health = %+v, want healthy", got)
	}
}

// The healthy answer, encoded once and shared by the replies, is exactly
// what encoding it each time gave (the controller recognises these bytes
// without decoding them), every time, with or without a Health function.
func TestHealthyReplyBytes(t *testing.T) {
	want, err := command.Encode(command.HealthCheckReplyPayload{Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, health := range []func(context.Context) (bool, string){
		nil,
		func(context.Context) (bool, string) { return true, "" },
	} {
		ctx := testContext(t)
		cfg := testConfig(t)
		cfg.Health = health
		_, _, p := connected(ctx, t, cfg, nil)
		for range 3 {
			r := p.send(ctx, t, command.TypeHealthCheck, command.HealthCheckPayload{})
			if !r.Succeeded() || string(r.Payload) != string(want) {
				t.Fatalf("HEALTH_CHECK reply = %+v (payload %s), want SUCCEEDED with %s", r, r.Payload, want)
			}
		}
	}
}

func TestHealthFunction(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	cfg.Health = func(ctx context.Context) (bool, string) {
		if _, ok := ctx.Deadline(); !ok {
			return true, "no deadline on the health context"
		}
		return false, "disk full"
	}
	_, _, p := connected(ctx, t, cfg, nil)
	if got := healthOf(ctx, t, p); got != (command.HealthCheckReplyPayload{Healthy: false, Detail: "disk full"}) {
		t.Errorf("health = %+v, want unhealthy with detail", got)
	}
}

func TestUserHealthCheckHandlerOverrides(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	cfg.Health = func(context.Context) (bool, string) {
		t.Error("Config.Health called despite a user handler")
		return true, ""
	}
	mux := command.NewMux()
	mux.Register(command.TypeHealthCheck, command.Typed(func(context.Context, command.HealthCheckPayload) (command.HealthCheckReplyPayload, error) {
		return command.HealthCheckReplyPayload{Healthy: false, Detail: "from the user"}, nil
	}))
	_, _, p := connected(ctx, t, cfg, mux)
	if got := healthOf(ctx, t, p); got.Detail != "from the user" {
		t.Errorf("health = %+v, want the user handler's answer", got)
	}
}

func TestUserHandlers(t *testing.T) {
	ctx := testContext(t)
	var userPrimary, userGoodBye atomic.Int32
	mux := command.NewMux()
	mux.Register("ECHO", command.Typed(func(_ context.Context, in string) (string, error) { return in, nil }))
	mux.RegisterFunc("FAIL", func(context.Context, *command.Command) (*command.Reply, error) {
		return nil, errors.New("boom")
	})
	mux.RegisterFunc("PANIC", func(context.Context, *command.Command) (*command.Reply, error) { panic("oops") })
	mux.RegisterFunc(command.TypePrimary, func(context.Context, *command.Command) (*command.Reply, error) {
		userPrimary.Add(1)
		return nil, nil
	})
	mux.RegisterFunc(command.TypeGoodBye, func(context.Context, *command.Command) (*command.Reply, error) {
		userGoodBye.Add(1)
		return nil, nil
	})
	c, _, p := connected(ctx, t, testConfig(t), mux)

	r := p.send(ctx, t, "ECHO", "hello")
	if out, _ := command.Decode[string](r.Payload); !r.Succeeded() || out != "hello" {
		t.Errorf("ECHO reply = %+v (%q), want SUCCEEDED hello", r, out)
	}
	var remote *channel.RemoteError
	if _, err := p.ch.Send(ctx, command.MustCommand("FAIL", nil)); !errors.As(err, &remote) || remote.Message != "boom" {
		t.Errorf("FAIL = %v, want a *channel.RemoteError boom", err)
	}
	if _, err := p.ch.Send(ctx, command.MustCommand("PANIC", nil)); !errors.As(err, &remote) {
		t.Errorf("PANIC = %v, want a *channel.RemoteError", err)
	}
	var unknown *channel.UnknownCommandError
	if _, err := p.ch.Send(ctx, command.MustCommand("NOPE", nil)); !errors.As(err, &unknown) {
		t.Errorf("NOPE = %v, want a *channel.UnknownCommandError", err)
	}
	if _, err := p.ch.Send(ctx, command.MustCommand(command.TypeHello, command.HelloPayload{})); !errors.As(err, &unknown) {
		t.Errorf("second HELLO = %v, want a *channel.UnknownCommandError", err)
	}

	// GOOD_BYE and PRIMARY are always the connector's own.
	p.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 1})
	if !c.IsPrimary() || userPrimary.Load() != 0 {
		t.Errorf("PRIMARY: IsPrimary() = %v, user handler calls %d; want true and 0", c.IsPrimary(), userPrimary.Load())
	}
	p.send(ctx, t, command.TypeGoodBye, command.GoodByePayload{Reconnect: true})
	if userGoodBye.Load() != 0 {
		t.Errorf("user GOOD_BYE handler called %d times, want 0", userGoodBye.Load())
	}
}

func TestBuiltinsRejectBadPayloads(t *testing.T) {
	ctx := testContext(t)
	c, _, p := connected(ctx, t, testConfig(t), nil)
	for _, typ := range []command.Type{command.TypePrimary, command.TypeGoodBye} {
		r, err := p.ch.Send(ctx, &command.Command{Type: typ, Payload: []byte("{not json")})
		if err != nil || r.Status != command.StatusError || r.Code != 400 {
			t.Errorf("%s with a bad payload = %+v, %v; want an ERROR reply with code 400", typ, r, err)
		}
	}
	if c.IsPrimary() || c.State() != connector.StateConnected {
		t.Errorf("after bad payloads: IsPrimary %v, State %v; want false, Connected", c.IsPrimary(), c.State())
	}
}

func TestPrimary(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	rec := newRecorder(&cfg)
	fc := newFakeController(t)
	c := newConnector(t, cfg, nil, fc.dialer())
	start(t, c)
	p1 := fc.next(ctx)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}
	if c.IsPrimary() {
		t.Fatal("IsPrimary() = true before any PRIMARY, want false")
	}

	steps := []struct {
		primary     bool
		epoch       uint64
		wantPrimary bool
		wantEpoch   uint64
	}{
		{true, 3, true, 3},
		{true, 2, true, 3}, // stale: ignored
		{false, 4, false, 4},
		{false, 4, false, 4}, // no change: no callback
		{true, 5, true, 5},
	}
	for _, s := range steps {
		r := p1.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: s.primary, Epoch: s.epoch})
		if !r.Succeeded() {
			t.Fatalf("PRIMARY%+v reply = %+v, want SUCCEEDED (stale ones too)", s, r)
		}
		if c.IsPrimary() != s.wantPrimary || c.Epoch() != s.wantEpoch {
			t.Errorf("after PRIMARY{%v, %d}: IsPrimary %v, Epoch %d; want %v, %d",
				s.primary, s.epoch, c.IsPrimary(), c.Epoch(), s.wantPrimary, s.wantEpoch)
		}
	}

	// The role is dropped the moment the channel closes.
	_ = p1.ch.Close()
	rec.waitFor(ctx, t, "the role dropped", func(_ []connector.StateChange, p []primaryCall) bool { return len(p) == 4 })
	if c.IsPrimary() {
		t.Error("IsPrimary() = true after the channel closed")
	}
	p2 := fc.next(ctx)
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected() = %v", err)
	}
	if c.IsPrimary() || c.Epoch() != 5 {
		t.Errorf("after reconnecting: IsPrimary %v, Epoch %d; want false, 5", c.IsPrimary(), c.Epoch())
	}
	p2.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 4}) // stale across reconnects
	if c.IsPrimary() {
		t.Error("a stale PRIMARY on the new channel made the connector primary")
	}
	p2.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 6})
	rec.waitFor(ctx, t, "the new role", func(_ []connector.StateChange, p []primaryCall) bool { return len(p) == 5 })

	want := []primaryCall{{true, 3}, {false, 4}, {true, 5}, {false, 5}, {true, 6}}
	if got := rec.primaryList(); !equalPrimary(got, want) {
		t.Errorf("OnPrimary calls = %v, want %v", got, want)
	}
}

func TestPrimaryEpochsArePerTarget(t *testing.T) {
	ctx := testContext(t)
	fc := newFakeController(t)
	targets := []string{"first", "second"}
	var n atomic.Int32
	fc.decide = func(_ context.Context, cmd *command.Command, _ command.HelloPayload) (*command.Reply, error) {
		i := n.Add(1) - 1
		return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: targets[min(int(i), 1)], ChannelID: cmd.ID})
	}
	c := newConnector(t, testConfig(t), nil, fc.dialer())
	start(t, c)
	p1 := fc.next(ctx)
	p1.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 9})
	_ = p1.ch.Close()
	p2 := fc.next(ctx)
	// The controller moved us to another target: its epochs start afresh.
	p2.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 1})
	if !c.IsPrimary() || c.Epoch() != 1 || c.TargetID() != "second" {
		t.Errorf("IsPrimary %v, Epoch %d, TargetID %q; want true, 1, second", c.IsPrimary(), c.Epoch(), c.TargetID())
	}
}

func TestCallbacksMayCallTheConnector(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	seen := make(chan bool, 1)
	var c *connector.Connector
	cfg.OnPrimary = func(primary bool, _ uint64) {
		// Runs on the notifier, with no lock held: the getters must not block.
		select {
		case seen <- c.IsPrimary() == primary:
		default:
		}
	}
	cfg.OnState = func(connector.StateChange) { _ = c.State() }
	fc := newFakeController(t)
	c = newConnector(t, cfg, nil, fc.dialer())
	start(t, c)
	p := fc.next(ctx)
	p.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 1})
	select {
	case ok := <-seen:
		if !ok {
			t.Error("IsPrimary() in OnPrimary disagrees with the callback")
		}
	case <-ctx.Done():
		t.Fatal("OnPrimary not called")
	}
}

func equalPrimary(a, b []primaryCall) bool {
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

// A connector whose every handler slot is taken by slow user commands still
// answers HEALTH_CHECK and PRIMARY (control commands have capacity of their
// own in the channel), and the slow commands then complete.
func TestBusyConnectorAnswersControlCommands(t *testing.T) {
	const n = channel.DefaultMaxHandlers
	ctx := testContext(t)
	var started atomic.Int32
	all, release := make(chan struct{}), make(chan struct{})
	mux := command.NewMux()
	mux.RegisterFunc("SLOW", func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		if started.Add(1) == n {
			close(all)
		}
		select {
		case <-release:
			return command.Succeeded(cmd, "done")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	_, _, p := connected(ctx, t, testConfig(t), mux)

	errs := make(chan error, n)
	for i := range n {
		go func() {
			r, err := p.ch.Send(ctx, command.MustCommand("SLOW", i))
			if err == nil && !r.Succeeded() {
				err = errors.New("reply " + r.Status.String() + ": " + r.Error)
			}
			errs <- err
		}()
	}
	select {
	case <-all:
	case err := <-errs:
		t.Fatalf("a SLOW command ended before all %d were running: %v", n, err)
	case <-ctx.Done():
		t.Fatalf("%d of %d SLOW commands running", started.Load(), n)
	}
	// The in-flight limit is reached on both sides (the controller's
	// MaxInFlight, the connector's MaxHandlers): one more user command is busy.
	if _, err := p.ch.Send(ctx, command.MustCommand("SLOW", -1)); !errors.Is(err, channel.ErrBusy) {
		t.Errorf("one more SLOW = %v, want busy", err)
	}
	for range 3 {
		if got := healthOf(ctx, t, p); !got.Healthy {
			t.Errorf("health of a busy connector = %+v, want healthy", got)
		}
	}
	if r := p.send(ctx, t, command.TypePrimary, command.PrimaryPayload{Primary: true, Epoch: 1}); !r.Succeeded() {
		t.Errorf("PRIMARY to a busy connector = %+v, want SUCCEEDED", r)
	}
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("SLOW = %v, want it to complete", err)
		}
	}
}
