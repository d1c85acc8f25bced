package wschannel_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/wschannel"
	"github.com/exchangekit/exchange/command"
)

// legacyFrames are the LEGACY frames of the reference's documentation
// (gravitee-exchange §3.3, §3.4) with the frames they stand for here, after
// the legacy adaptations. Each must encode to exactly this text (enc) and
// decode to the frame (dec).
var legacyFrames = []struct {
	name     string
	f        *channel.Frame
	wire     string
	enc, dec bool
}{
	{"hello command", cmdFrame("h1", command.TypeHello, `{"targetId":"my-target"}`),
		`command: {"id":"h1","type":"HELLO_COMMAND","payload":{"node":{"installationId":"my-target"}}}`, true, true},
	{"hello reply", replyFrame("h1", command.TypeHello, command.StatusSucceeded, "", `{"targetId":"my-target"}`),
		`reply: {"commandId":"h1","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":"my-target"}}`, true, true},
	{"hello reply with our fields", replyFrame("h1", command.TypeHello, command.StatusSucceeded, "", `{"targetId":"my-target","channelId":"c","limits":{"maxFrameBytes":5}}`),
		`reply: {"commandId":"h1","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":"my-target"}}`, true, false},
	{"hello refused", replyFrame("h1", command.TypeHello, command.StatusError, "boom", ""),
		`reply: {"commandId":"h1","type":"HELLO_REPLY","commandStatus":"ERROR","errorDetails":"boom","message":"boom"}`, true, true},
	{"primary", cmdFrame("", command.TypePrimary, `{"primary":true}`), `primary: true`, true, false},
	{"replica", cmdFrame("", command.TypePrimary, `{"primary":false,"epoch":7}`), `replica: true`, true, false},
	{"good bye without reconnection", cmdFrame("g1", command.TypeGoodBye, `{"targetId":"t","reconnect":false}`),
		`command: {"id":"g1","type":"GOODBYE_COMMAND"}`, true, false},
	{"good bye reply", replyFrame("g1", command.TypeGoodBye, command.StatusSucceeded, "", `{"targetId":"inst"}`),
		`reply: {"commandId":"g1","type":"GOODBYE_REPLY","commandStatus":"SUCCEEDED","installationId":"inst"}`, false, true},
	{"ignored reply", replyFrame("c1", command.TypeNoReply, command.StatusError, "", ""),
		`reply: {"commandId":"c1","type":"IGNORED_REPLY","commandStatus":"ERROR"}`, true, false},
	{"no reply loses its details", replyFrame("c1", command.TypeNoReply, command.StatusError, "the handler failed", ""),
		`reply: {"commandId":"c1","type":"IGNORED_REPLY","commandStatus":"ERROR"}`, true, false},
	{"health check", cmdFrame("hc", command.TypeHealthCheck, `{}`),
		`command: {"id":"hc","type":"HEALTH_CHECK","payload":{}}`, true, true},
	{"application command", cmdFrame("a1", "DEPLOY", `{"api":"x;;y","n":1}`),
		`command: {"id":"a1","type":"DEPLOY","payload":{"api":"x;;y","n":1}}`, true, true},
	{"application reply", replyFrame("a1", "DEPLOY", command.StatusSucceeded, "", `{"ok":true}`),
		`reply: {"commandId":"a1","type":"DEPLOY","commandStatus":"SUCCEEDED","payload":{"ok":true}}`, true, true},
	{"unknown", replyFrame("a2", command.TypeUnknown, command.StatusError, "Command unknown", ""),
		`reply: {"commandId":"a2","type":"UNKNOWN","commandStatus":"ERROR","errorDetails":"Command unknown","payload":{}}`, true, true},
	{"reply with a prefix inside", replyFrame("a3", "X", command.StatusSucceeded, "", `{"s":"reply: command: "}`),
		`reply: {"commandId":"a3","type":"X","commandStatus":"SUCCEEDED","payload":{"s":"reply: command: "}}`, true, true},
}

func TestLegacyFrames(t *testing.T) {
	for _, tc := range legacyFrames {
		t.Run(tc.name, func(t *testing.T) {
			if tc.enc {
				got, err := wschannel.AppendLegacyFrame(nil, tc.f)
				if err != nil || string(got) != tc.wire {
					t.Errorf("AppendLegacyFrame() = (%s, %v)\nwant %s", got, err, tc.wire)
				}
			}
			if tc.dec {
				got, err := wschannel.DecodeLegacyFrame([]byte(tc.wire))
				if err != nil {
					t.Fatalf("DecodeLegacyFrame() = %v", err)
				}
				if diff := cmp.Diff(tc.f, got, frameCmp); diff != "" {
					t.Errorf("DecodeLegacyFrame() mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestLegacyDecode(t *testing.T) {
	for _, lit := range []string{"primary: true", "replica: true", " primary: true\n"} {
		f, err := wschannel.DecodeLegacyFrame([]byte(lit))
		if err != nil || f.Command == nil || f.Command.Type != command.TypePrimary || f.Command.ID == "" {
			t.Fatalf("DecodeLegacyFrame(%q) = (%+v, %v), want a PRIMARY command with a fresh id", lit, f, err)
		}
		p, _ := command.Decode[command.PrimaryPayload](f.Command.Payload)
		if p.Primary != strings.Contains(lit, "primary") {
			t.Errorf("DecodeLegacyFrame(%q): primary = %t", lit, p.Primary)
		}
	}
	// The legacy HELLO_REPLY with an error keeps the message.
	f, err := wschannel.DecodeLegacyFrame([]byte(`reply: {"commandId":"h","type":"HELLO_REPLY","commandStatus":"ERROR","message":"no"}`))
	if err != nil || f.Reply.Type != command.TypeHello || f.Reply.Status != command.StatusError || f.Reply.Error != "no" {
		t.Errorf("HELLO_REPLY ERROR decoded as (%+v, %v)", f.Reply, err)
	}
	// IGNORED_REPLY without details gets some.
	f, err = wschannel.DecodeLegacyFrame([]byte(`reply: {"commandId":"c","type":"IGNORED_REPLY"}`))
	if err != nil || f.Reply.Type != command.TypeNoReply || f.Reply.Status != command.StatusError || f.Reply.Error == "" {
		t.Errorf("IGNORED_REPLY decoded as (%+v, %v), want NO_REPLY, ERROR, a reason", f.Reply, err)
	}
	for _, bad := range []string{
		"", "primary: false", `t:COMMAND;;et:X;;e:{"id":"1","type":"X"}`, `command: {"id":`, `reply: [1]`,
		`command: {"id":"h","type":"HELLO_COMMAND","payload":"x"}`,
	} {
		if f, err := wschannel.DecodeLegacyFrame([]byte(bad)); !errors.Is(err, channel.ErrMalformedFrame) {
			t.Errorf("DecodeLegacyFrame(%q) = (%+v, %v), want an error wrapping ErrMalformedFrame", bad, f, err)
		}
	}
	// Encoding refuses a GOOD_BYE asking to reconnect, and broken frames.
	if _, err := wschannel.AppendLegacyFrame(nil, cmdFrame("g", command.TypeGoodBye, `{"reconnect":true}`)); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("AppendLegacyFrame(GOOD_BYE{reconnect:true}) = %v, want an error wrapping ErrClosed", err)
	}
	for _, f := range []*channel.Frame{nil, {}, cmdFrame("p", command.TypePrimary, `x`), {Command: &command.Command{ID: "x", Type: "X"}, Reply: &command.Reply{}}} {
		if _, err := wschannel.AppendLegacyFrame(nil, f); !errors.Is(err, channel.ErrMalformedFrame) {
			t.Errorf("AppendLegacyFrame(%+v) = %v, want an error wrapping ErrMalformedFrame", f, err)
		}
	}
}

// legacyPeer opens a raw legacy connection (no protocol header) to srv and
// accepts it.
func legacyPeer(t *testing.T, srv *wschannel.Server, d *wschannel.Dialer, path string, header http.Header) (*websocket.Conn, channel.Conn) {
	t.Helper()
	ws, _, err := websocket.Dial(testContext(t), d.URL+path, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatalf("websocket.Dial() = %v", err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	b, err := srv.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return ws, b
}

func readText(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	typ, b, err := ws.Read(testContext(t))
	if err != nil || typ != websocket.MessageBinary {
		t.Fatalf("peer Read() = (%v, %q, %v), want a binary message", typ, b, err)
	}
	return string(b)
}

// TestLegacyConn: the adaptations a legacy connection makes on the
// controller's side, against a raw legacy peer.
func TestLegacyConn(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{})
	ctx := testContext(t)

	for _, tc := range []struct{ path, proto, want string }{
		{"/ws/controller", "", "legacy"},
		{"/ws/controller/some/gateway", "", "legacy"},
		{wschannel.ControllerPath, "", "legacy"},
		{wschannel.ControllerPath, "LEGACY", "legacy"},
		{wschannel.ControllerPath, "whatever", "legacy"},
		{wschannel.ControllerPath, " V1 ", "v1"},
		{"/ws/controller", "v1", "v1"},
	} {
		h := http.Header{}
		if tc.proto != "" {
			h.Set(wschannel.ProtocolHeader, tc.proto)
		}
		ws, b := legacyPeer(t, srv, d, tc.path, h)
		hello := `command: {"id":"h1","type":"HELLO_COMMAND","payload":{"node":{"installationId":"gw"}}}`
		if tc.want == "v1" {
			hello = `t:COMMAND;;et:HELLO;;e:{"id":"h1","type":"HELLO","payload":{"targetId":"gw"}}`
		}
		if err := ws.Write(ctx, websocket.MessageBinary, []byte(hello)); err != nil {
			t.Fatal(err)
		}
		f, err := b.Recv()
		if err != nil || f.Command == nil || f.Command.Type != command.TypeHello || string(f.Command.Payload) != `{"targetId":"gw"}` {
			t.Errorf("%s, header %q: Recv() = (%+v, %v), want HELLO{targetId:gw} (protocol %s)", tc.path, tc.proto, f, err, tc.want)
		}
		_ = b.Close()
	}

	ws, b := legacyPeer(t, srv, d, "/ws/controller", nil)
	// PRIMARY: written as the literal, answered here.
	if err := b.Send(cmdFrame("p1", command.TypePrimary, `{"primary":true,"epoch":3}`)); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, ws); got != "primary: true" {
		t.Errorf("peer read %q, want primary: true", got)
	}
	if f, err := b.Recv(); err != nil || f.Reply == nil || f.Reply.CommandID != "p1" || f.Reply.Status != command.StatusSucceeded {
		t.Errorf("Recv() after PRIMARY = (%+v, %v), want a SUCCEEDED reply to p1", f, err)
	}
	// HEALTH_CHECK: not written; answered by a ping (the raw peer answers
	// pings while it reads).
	readDone := make(chan string, 1)
	go func() {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			readDone <- err.Error()
			return
		}
		readDone <- string(b)
	}()
	if err := b.Send(cmdFrame("hc", command.TypeHealthCheck, `{}`)); err != nil {
		t.Fatal(err)
	}
	f, err := b.Recv()
	if err != nil || f.Reply == nil || f.Reply.CommandID != "hc" || f.Reply.Status != command.StatusSucceeded {
		t.Fatalf("Recv() after HEALTH_CHECK = (%+v, %v), want a reply to hc", f, err)
	}
	if p, _ := command.Decode[command.HealthCheckReplyPayload](f.Reply.Payload); !p.Healthy || !strings.Contains(p.Detail, "ping") {
		t.Errorf("health reply payload = %s, want healthy by ping", f.Reply.Payload)
	}
	// GOOD_BYE without reconnection: GOODBYE_COMMAND; its GOODBYE_REPLY.
	if err := b.Send(cmdFrame("g1", command.TypeGoodBye, `{"targetId":"gw","reconnect":false}`)); err != nil {
		t.Fatal(err)
	}
	if got := <-readDone; got != `command: {"id":"g1","type":"GOODBYE_COMMAND"}` {
		t.Errorf("peer read %q after GOOD_BYE{reconnect:false}, want the GOODBYE_COMMAND (and no HEALTH_CHECK before it)", got)
	}
	_ = ws.Write(ctx, websocket.MessageBinary, []byte(`reply: {"commandId":"g1","type":"GOODBYE_REPLY","commandStatus":"SUCCEEDED","installationId":"gw"}`))
	if f, err := b.Recv(); err != nil || f.Reply == nil || f.Reply.Type != command.TypeGoodBye || string(f.Reply.Payload) != `{"targetId":"gw"}` {
		t.Errorf("Recv() of GOODBYE_REPLY = (%+v, %v), want GOOD_BYE{targetId:gw}", f, err)
	}
	// GOOD_BYE with reconnection: the connection is closed with 1013.
	if err := b.Send(cmdFrame("g2", command.TypeGoodBye, `{"targetId":"gw","reconnect":true}`)); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Send(GOOD_BYE{reconnect:true}) = %v, want an error wrapping ErrClosed", err)
	}
	_, _, err = ws.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusTryAgainLater || ce.Reason != "GoodBye Command with reconnection requested." {
		t.Errorf("peer read = %v, want close 1013 \"GoodBye Command with reconnection requested.\"", err)
	}
}

// TestLegacyHealthWithoutPong: a legacy peer that answers no ping is
// reported unhealthy.
func TestLegacyHealthWithoutPong(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{PingInterval: -1, PongTimeout: 50 * time.Millisecond})
	_, b := legacyPeer(t, srv, d, "/ws/controller", nil) // the peer never reads: no pong
	c := cmdFrame("hc", command.TypeHealthCheck, `{}`)
	c.Command.Timeout = time.Hour // bounded by PongTimeout
	if err := b.Send(c); err != nil {
		t.Fatal(err)
	}
	f, err := b.Recv()
	if err != nil || f.Reply == nil {
		t.Fatalf("Recv() = (%+v, %v), want the health reply", f, err)
	}
	if p, _ := command.Decode[command.HealthCheckReplyPayload](f.Reply.Payload); p.Healthy || !strings.Contains(p.Detail, "no pong") {
		t.Errorf("health reply payload = %s, want unhealthy, no pong", f.Reply.Payload)
	}
}

// TestBearerToken: the upgrade request's bearer token reaches a HELLO that
// carries none; one that carries a token keeps it.
func TestBearerToken(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{})
	ctx := testContext(t)
	for _, tc := range []struct{ hello, want string }{
		{`{"targetId":"gw"}`, `{"targetId":"gw","token":"tok"}`},
		{`{"targetId":"gw","token":""}`, `{"targetId":"gw","token":"tok"}`},
		{`{"targetId":"gw","token":"own"}`, `{"targetId":"gw","token":"own"}`},
	} {
		ws := rawDial(t, srv, d, http.Header{wschannel.ProtocolHeader: {"v1"}, "Authorization": {"Bearer tok"}})
		b, err := srv.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = ws.Write(ctx, websocket.MessageBinary, []byte(`t:COMMAND;;et:HELLO;;e:{"id":"h","type":"HELLO","payload":`+tc.hello+`}`))
		f, err := b.Recv()
		if err != nil || string(f.Command.Payload) != tc.want {
			t.Errorf("HELLO %s with a bearer token: Recv() = (%+v, %v), want payload %s", tc.hello, f, err, tc.want)
		}
		_ = b.Close()
	}
	for _, tc := range []struct{ header, want string }{
		{"Bearer abc", "abc"}, {"bearer  abc ", "abc"}, {"Basic abc", ""}, {"", ""}, {"Bearer", ""},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", tc.header)
		if got := wschannel.BearerToken(r); got != tc.want {
			t.Errorf("BearerToken(%q) = %q, want %q", tc.header, got, tc.want)
		}
	}
}

// TestAuthenticate: Config.Authenticate refuses an upgrade with 401 and an
// empty body, as the reference does.
func TestAuthenticate(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{Authenticate: func(r *http.Request) error {
		if wschannel.BearerToken(r) != "s3cret" {
			return errors.New("no")
		}
		return nil
	}})
	ctx := testContext(t)
	_, resp, err := websocket.Dial(ctx, d.URL+wschannel.ControllerPath, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Dial() without the token = (%v, %v), want 401", resp, err)
	}
	d.Header = http.Header{"Authorization": {"Bearer s3cret"}}
	connect(t, srv, d)
}

// TestClientGoodByeClose: a Dialer's Conn that received a GOOD_BYE closes as
// the reference's connector does (§3.6).
func TestClientGoodByeClose(t *testing.T) {
	for _, tc := range []struct {
		reconnect bool
		code      websocket.StatusCode
		reason    string
	}{
		{true, websocket.StatusTryAgainLater, "GoodBye Command with reconnection requested."},
		{false, websocket.StatusNormalClosure, "GoodBye Command without reconnection."},
	} {
		srv, d := startServer(t, false, wschannel.Config{})
		a, b := connect(t, srv, d)
		gb := cmdFrame("g", command.TypeGoodBye, `{"targetId":"t","reconnect":false}`)
		if tc.reconnect {
			gb = cmdFrame("g", command.TypeGoodBye, `{"targetId":"t","reconnect":true}`)
		}
		if err := b.Send(gb); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Recv(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = a.Close() }()
		_, err := b.Recv()
		if err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("reconnect %t: the controller's Recv() = %v, want the close reason %q", tc.reconnect, err, tc.reason)
		}
	}
}

// TestSourceLimits: connections and handshakes per source, connections in
// all, and the handshake timeout.
func TestSourceLimits(t *testing.T) {
	refused := func(t *testing.T, d *wschannel.Dialer, why string) {
		t.Helper()
		c, err := d.Dial(testContext(t))
		if err == nil {
			_ = c.Close()
			t.Fatalf("%s: Dial() succeeded, want 503", why)
		}
		if !strings.Contains(err.Error(), "503") {
			t.Fatalf("%s: Dial() = %v, want HTTP 503", why, err)
		}
	}
	t.Run("connections per source", func(t *testing.T) {
		srv, d := startServer(t, false, wschannel.Config{MaxConnectionsPerSource: 1})
		a, b := connect(t, srv, d)
		b.(channel.HandshakeCompleter).HandshakeComplete() // established: still counts
		refused(t, d, "a second connection from loopback")
		_ = a.Close()
		_ = b.Close()
		connect(t, srv, d)
	})
	t.Run("connections", func(t *testing.T) {
		srv, d := startServer(t, false, wschannel.Config{MaxConnections: 1})
		_, b := connect(t, srv, d)
		refused(t, d, "a second connection")
		_ = b.Close()
		connect(t, srv, d)
	})
	t.Run("handshakes per source", func(t *testing.T) {
		srv, d := startServer(t, false, wschannel.Config{MaxHandshakesPerSource: 1})
		_, b := connect(t, srv, d)
		refused(t, d, "a second handshake from loopback")
		b.(channel.HandshakeCompleter).HandshakeComplete()
		connect(t, srv, d)
	})
	t.Run("handshake timeout", func(t *testing.T) {
		srv, d := startServer(t, false, wschannel.Config{HandshakeTimeout: 20 * time.Millisecond})
		a, _ := connect(t, srv, d) // says nothing
		if f, err := a.Recv(); !errors.Is(err, channel.ErrMalformedFrame) || !strings.Contains(err.Error(), "no HELLO within") {
			t.Errorf("Recv() on a silent connection = (%+v, %v), want a close 1002 naming the handshake timeout", f, err)
		}
		// One that speaks in time stays.
		a2, b2 := connect(t, srv, d)
		if err := a2.Send(cmdFrame("h", command.TypeHello, `{}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := b2.Recv(); err != nil {
			t.Fatal(err)
		}
		if err := b2.Send(replyFrame("h", command.TypeHello, command.StatusSucceeded, "", `{}`)); err != nil {
			t.Errorf("Send() after the handshake timeout passed = %v (the connection spoke in time)", err)
		}
	})
}
