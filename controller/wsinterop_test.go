package controller_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/wschannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/refclient"
)

// The interop tests: a controller on the WebSocket twin, and connectors of
// the reference written from its documented frames (internal/refclient,
// which shares no code with wschannel), through the whole life of a channel
// in both protocols.

// wsHarness runs a controller whose connectors arrive over WebSocket; it
// returns the harness and the server's ws:// base URL.
func wsHarness(t *testing.T, cfg controller.Config) (*harness, string) {
	t.Helper()
	srv := wschannel.NewServer(wschannel.Config{})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	if cfg.Handler == nil {
		mux := command.NewMux()
		mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
			return command.Succeeded(c, c.Payload)
		})
		mux.RegisterFunc("FAIL", func(context.Context, *command.Command) (*command.Reply, error) {
			return nil, errors.New("the handler failed")
		})
		cfg.Handler = mux
	}
	h := newHarness(t, cfg, harnessOpts{lis: srv})
	return h, "ws://" + strings.TrimPrefix(ts.URL, "http://")
}

func wsContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitTarget waits until target has n channels and a primary.
func waitTarget(h *harness, target string, n int) controller.TargetInfo {
	h.t.Helper()
	var ti controller.TargetInfo
	h.waitFor("target "+target+" with a primary", func() bool {
		var ok bool
		ti, ok = h.ctrl.Target(target)
		return ok && len(ti.Channels) == n && ti.PrimaryID != ""
	})
	return ti
}

func TestReferenceConnectorV1(t *testing.T) {
	cfg := fastConfig()
	cfg.HealthInterval = 20 * time.Millisecond
	h, base := wsHarness(t, cfg)
	ctx := wsContext(t)

	c, err := refclient.Dial(ctx, base+"/exchange/controller", refclient.V1, nil)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := c.Hello(ctx, "gw-v1")
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	wantPrefix := `t:REPLY;;et:HELLO;;e:{"commandId":"` + hello.ID() + `","type":"HELLO","commandStatus":"SUCCEEDED","payload":{"targetId":"gw-v1",`
	if !strings.HasPrefix(hello.Raw, wantPrefix) {
		t.Fatalf("HELLO reply = %s, want it to start with %s", hello.Raw, wantPrefix)
	}
	k := c.Start(map[string]refclient.Handler{
		"ECHO": func(f refclient.Frame) string {
			return refclient.Reply(refclient.V1, f.ID(), "ECHO", "SUCCEEDED", "", `{"echo":"a;;b;;e:c"}`)
		},
	})
	t.Cleanup(k.Close)

	// PRIMARY, then health checks, answered as the reference's connector does.
	if err := k.WaitFor(ctx, "PRIMARY{primary:true}", func(_ []refclient.Frame, p []bool) bool { return len(p) > 0 && p[len(p)-1] }); err != nil {
		t.Fatal(err)
	}
	waitTarget(h, "gw-v1", 1)
	if err := k.WaitFor(ctx, "two health checks", func(r []refclient.Frame, _ []bool) bool { return count(r, "HEALTH_CHECK") >= 2 }); err != nil {
		t.Fatal(err)
	}
	h.waitFor("a healthy health check", func() bool {
		ti, _ := h.ctrl.Target("gw-v1")
		return len(ti.Channels) == 1 && !ti.Channels[0].LastHealthyAt.IsZero()
	})

	// Controller → connector, ";;" in the payload both ways.
	r, err := h.ctrl.Send(ctx, "gw-v1", command.MustCommand("ECHO", map[string]string{"q": "case x in a) foo ;; esac"}))
	if err != nil || string(r.Payload) != `{"echo":"a;;b;;e:c"}` || r.Status != command.StatusSucceeded {
		t.Fatalf("Send(ECHO) = (%+v, %v)", r, err)
	}
	// A type the reference connector has no handler for: NO_REPLY.
	_, err = h.ctrl.Send(ctx, "gw-v1", command.MustCommand("NOPE", nil))
	if re := (*channel.RemoteError)(nil); !errors.As(err, &re) {
		t.Fatalf("Send(NOPE) = %v, want a *channel.RemoteError (NO_REPLY)", err)
	}

	// Connector → controller.
	id := refclient.NewID()
	f, err := k.Send(ctx, id, refclient.Command(refclient.V1, id, "ECHO", `{"n":";;"}`))
	if want := `t:REPLY;;et:ECHO;;e:{"commandId":"` + id + `","type":"ECHO","commandStatus":"SUCCEEDED","payload":{"n":";;"}}`; err != nil || f.Raw != want {
		t.Fatalf("connector's ECHO: reply (%s, %v), want %s", f.Raw, err, want)
	}
	id = refclient.NewID()
	f, err = k.Send(ctx, id, refclient.Command(refclient.V1, id, "WRONG", `{}`))
	if err != nil || f.Type != "UNKNOWN" || f.Str("commandStatus") != "ERROR" || f.Str("errorDetails") == "" {
		t.Fatalf("connector's WRONG: reply (%s, %v), want UNKNOWN, ERROR, errorDetails", f.Raw, err)
	}
	// A handler that fails: NO_REPLY, and the socket stays open (weakness 22).
	id = refclient.NewID()
	f, err = k.Send(ctx, id, refclient.Command(refclient.V1, id, "FAIL", `{}`))
	if err != nil || f.Type != "NO_REPLY" || f.Str("commandStatus") != "ERROR" || !strings.Contains(f.Str("errorDetails"), "the handler failed") {
		t.Fatalf("connector's FAIL: reply (%s, %v), want NO_REPLY, ERROR, the handler's error", f.Raw, err)
	}
	id = refclient.NewID()
	if f, err = k.Send(ctx, id, refclient.Command(refclient.V1, id, "ECHO", `{}`)); err != nil || f.Str("commandStatus") != "SUCCEEDED" {
		t.Fatalf("ECHO after a failed handler = (%s, %v), want it answered", f.Raw, err)
	}

	// GOOD_BYE: the controller stops; the connector closes with 1013.
	if err := h.ctrl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.WaitFor(ctx, "GOOD_BYE", func(r []refclient.Frame, _ []bool) bool {
		for _, f := range r {
			if f.Type == "GOOD_BYE" {
				re, _ := f.Payload()["reconnect"].(bool)
				return re && f.Payload()["targetId"] == "gw-v1"
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	<-k.Done()
}

func TestReferenceConnectorLegacy(t *testing.T) {
	cfg := fastConfig()
	cfg.HealthInterval = 20 * time.Millisecond
	h, base := wsHarness(t, cfg)
	ctx := wsContext(t)

	// No protocol header, legacy path: LEGACY frames.
	c, err := refclient.Dial(ctx, base+"/ws/controller/gateway", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := c.Hello(ctx, "gw-legacy")
	if want := `reply: {"commandId":"` + hello.ID() + `","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":"gw-legacy"}}`; err != nil || hello.Raw != want {
		t.Fatalf("hello: (%s, %v), want %s", hello.Raw, err, want)
	}
	k := c.Start(map[string]refclient.Handler{
		"ECHO": func(f refclient.Frame) string {
			return refclient.Reply(refclient.Legacy, f.ID(), "ECHO", "SUCCEEDED", "", `{"echo":true}`)
		},
	})
	t.Cleanup(k.Close)
	if err := k.WaitFor(ctx, "primary: true", func(r []refclient.Frame, _ []bool) bool {
		return len(r) > 0 && r[0].Raw == "primary: true"
	}); err != nil {
		t.Fatal(err)
	}
	waitTarget(h, "gw-legacy", 1)

	// Health checks: never written to a legacy peer (it would not answer);
	// answered by a WebSocket ping instead, so the channel stays.
	sweeps := h.metrics.count("sweep")
	h.waitFor("three health sweeps", func() bool { return h.metrics.count("sweep") >= sweeps+3 })
	ti, ok := h.ctrl.Target("gw-legacy")
	if !ok || len(ti.Channels) != 1 || ti.Channels[0].LastHealthyAt.IsZero() {
		t.Fatalf("after three health sweeps: target %+v (found %t), want its channel kept and healthy", ti, ok)
	}
	for _, k := range []string{"health:timeout", "health:error", "health:unhealthy"} {
		if n := h.metrics.count(k); n != 0 {
			t.Errorf("metric %s = %d, want 0", k, n)
		}
	}

	// Controller → connector.
	r, err := h.ctrl.Send(ctx, "gw-legacy", command.MustCommand("ECHO", map[string]int{"n": 1}))
	if err != nil || string(r.Payload) != `{"echo":true}` {
		t.Fatalf("Send(ECHO) = (%+v, %v)", r, err)
	}
	// The legacy connector ignores what it has no handler for: IGNORED_REPLY
	// is NO_REPLY here.
	_, err = h.ctrl.Send(ctx, "gw-legacy", command.MustCommand("NOPE", nil))
	if re := (*channel.RemoteError)(nil); !errors.As(err, &re) {
		t.Fatalf("Send(NOPE) = %v, want a *channel.RemoteError (IGNORED_REPLY)", err)
	}
	if err := k.WaitFor(ctx, "the ECHO and NOPE commands", func(r []refclient.Frame, _ []bool) bool {
		return count(r, "ECHO") == 1 && count(r, "NOPE") == 1 && count(r, "HEALTH_CHECK") == 0 &&
			strings.HasPrefix(find(r, "ECHO").Raw, `command: {"id":"`) && strings.Contains(find(r, "ECHO").Raw, `","type":"ECHO","payload":{"n":1}`)
	}); err != nil {
		t.Fatal(err)
	}

	// Connector → controller.
	id := refclient.NewID()
	f, err := k.Send(ctx, id, refclient.Command(refclient.Legacy, id, "ECHO", `{"n":2}`))
	if want := `reply: {"commandId":"` + id + `","type":"ECHO","commandStatus":"SUCCEEDED","payload":{"n":2}}`; err != nil || f.Raw != want {
		t.Fatalf("connector's ECHO: reply (%s, %v), want %s", f.Raw, err, want)
	}
	id = refclient.NewID()
	f, err = k.Send(ctx, id, refclient.Command(refclient.Legacy, id, "FAIL", `{}`))
	if want := `reply: {"commandId":"` + id + `","type":"IGNORED_REPLY","commandStatus":"ERROR"}`; err != nil || f.Raw != want {
		t.Fatalf("connector's FAIL: reply (%s, %v), want %s", f.Raw, err, want)
	}
	id = refclient.NewID()
	f, err = k.Send(ctx, id, refclient.Command(refclient.Legacy, id, "WRONG", `{}`))
	if err != nil || f.Type != "UNKNOWN" || f.Str("commandStatus") != "ERROR" {
		t.Fatalf("connector's WRONG: reply (%s, %v), want UNKNOWN, ERROR", f.Raw, err)
	}

	// The controller stops: a legacy peer cannot be asked to reconnect, so
	// instead of GOOD_BYE it sees the socket closed with 1013.
	if err := h.ctrl.Close(); err != nil {
		t.Fatal(err)
	}
	<-k.Done()
	if code, reason := k.CloseStatus(); code != websocket.StatusTryAgainLater || reason != "GoodBye Command with reconnection requested." {
		t.Errorf("close = %d %q, want 1013 \"GoodBye Command with reconnection requested.\" (err %v)", code, reason, k.Err())
	}
	if err := k.WaitFor(ctx, "no GOOD_BYE frame", func(r []refclient.Frame, _ []bool) bool {
		return count(r, "GOOD_BYE") == 0 && count(r, "GOODBYE_COMMAND") == 0
	}); err != nil {
		t.Fatal(err)
	}
}

// TestReferenceConnectorRefusals: the answers a reference connector gets
// when it breaks the rules or is refused.
func TestReferenceConnectorRefusals(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.AuthenticatorFunc(func(_ context.Context, req controller.HelloRequest) (string, error) {
		if req.Token != "s3cret" {
			return "", controller.ErrUnauthenticated
		}
		return req.TargetID, nil
	})
	h, base := wsHarness(t, cfg)
	ctx := wsContext(t)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	t.Run("token in the upgrade request", func(t *testing.T) {
		c, err := refclient.Dial(ctx, base+"/exchange/controller", refclient.V1, bearer("s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.WS.CloseNow()
		if f, err := c.Hello(ctx, "gw-tok"); err != nil || f.Str("commandStatus") != "SUCCEEDED" {
			t.Fatalf("hello with the right bearer token = (%s, %v), want SUCCEEDED", f.Raw, err)
		}
		waitTarget(h, "gw-tok", 1)
	})
	t.Run("wrong token, legacy", func(t *testing.T) {
		c, err := refclient.Dial(ctx, base+"/ws/controller", refclient.Legacy, bearer("nope"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.WS.CloseNow()
		f, err := c.Hello(ctx, "gw-tok")
		if err != nil || f.Type != "HELLO_REPLY" || f.Str("commandStatus") != "ERROR" || f.Str("errorDetails") == "" || f.Str("message") != f.Str("errorDetails") {
			t.Fatalf("legacy hello with a wrong token = (%s, %v), want HELLO_REPLY ERROR with errorDetails and message", f.Raw, err)
		}
		if _, err := c.Read(ctx); websocket.CloseStatus(err) == -1 {
			t.Errorf("after the refusal: %v, want the socket closed", err)
		}
	})
	t.Run("first command not HELLO", func(t *testing.T) {
		c, err := refclient.Dial(ctx, base+"/exchange/controller", refclient.V1, bearer("s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.WS.CloseNow()
		id := refclient.NewID()
		if err := c.Write(ctx, refclient.Command(refclient.V1, id, "ECHO", `{}`)); err != nil {
			t.Fatal(err)
		}
		if f, err := c.Read(ctx); err != nil || f.ID() != id || f.Str("commandStatus") != "ERROR" {
			t.Fatalf("reply to a first ECHO = (%s, %v), want an ERROR reply", f.Raw, err)
		}
		_, err = c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusProtocolError || ce.Reason != "Hello Command is first expected to initialize the exchange channel" {
			t.Errorf("close = %v, want 1002 \"Hello Command is first expected to initialize the exchange channel\"", err)
		}
	})
	t.Run("malformed frame", func(t *testing.T) {
		c, err := refclient.Dial(ctx, base+"/exchange/controller", refclient.V1, bearer("s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.WS.CloseNow()
		if f, err := c.Hello(ctx, "gw-bad"); err != nil || f.Str("commandStatus") != "SUCCEEDED" {
			t.Fatalf("hello = (%s, %v)", f.Raw, err)
		}
		// Not silently dropped (weakness 23): the answer is a close naming it.
		if err := c.Write(ctx, `t:COMMAND;;et:ECHO;;e:{"id":"1","type":`); err != nil {
			t.Fatal(err)
		}
		for {
			_, err := c.Read(ctx)
			if err == nil {
				continue // PRIMARY and such, sent before the bad frame was read
			}
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusProtocolError || !strings.Contains(ce.Reason, "malformed") {
				t.Errorf("after a malformed frame: %v, want close 1002 naming it", err)
			}
			break
		}
	})
}

func count(fs []refclient.Frame, typ string) int {
	n := 0
	for _, f := range fs {
		if f.Type == typ {
			n++
		}
	}
	return n
}

func find(fs []refclient.Frame, typ string) refclient.Frame {
	for _, f := range fs {
		if f.Type == typ {
			return f
		}
	}
	return refclient.Frame{}
}

// TestReferenceConnectorsShareTarget: a V1 and a legacy connector serve one
// target; exactly one is told it is primary, and when it leaves the other
// is told, in its own protocol's words.
func TestReferenceConnectorsShareTarget(t *testing.T) {
	h, base := wsHarness(t, fastConfig())
	ctx := wsContext(t)
	start := func(path, proto string) *refclient.Connector {
		c, err := refclient.Dial(ctx, base+path, proto, nil)
		if err != nil {
			t.Fatal(err)
		}
		if f, err := c.Hello(ctx, "shared"); err != nil || !strings.Contains(f.Raw, `"commandStatus":"SUCCEEDED"`) {
			t.Fatalf("hello over %s = (%s, %v)", proto, f.Raw, err)
		}
		k := c.Start(nil)
		t.Cleanup(k.Close)
		return k
	}
	v1 := start("/exchange/controller", refclient.V1)
	waitTarget(h, "shared", 1)
	legacy := start("/ws/controller", refclient.Legacy)
	waitTarget(h, "shared", 2)
	if err := v1.WaitFor(ctx, "PRIMARY{primary:true}", func(_ []refclient.Frame, p []bool) bool { return len(p) == 1 && p[0] }); err != nil {
		t.Fatal(err)
	}
	if p, known := legacy.Primary(); known && p {
		t.Fatalf("the legacy connector was told it is primary too")
	}
	v1.Close() // the primary leaves
	if err := legacy.WaitFor(ctx, "primary: true", func(r []refclient.Frame, p []bool) bool {
		return len(p) > 0 && p[len(p)-1] && r[len(r)-1].Raw == "primary: true"
	}); err != nil {
		t.Fatal(err)
	}
	waitTarget(h, "shared", 1)
}
