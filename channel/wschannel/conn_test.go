package wschannel_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/wschannel"
	"github.com/exchangekit/exchange/command"
)

// rawDial opens a bare WebSocket connection to srv's endpoint, as a
// reference connector would: the protocol header, nothing else.
func rawDial(t *testing.T, srv *wschannel.Server, d *wschannel.Dialer, header http.Header) *websocket.Conn {
	t.Helper()
	if header == nil {
		header = http.Header{wschannel.ProtocolHeader: {wschannel.ProtocolV1}}
	}
	ws, _, err := websocket.Dial(testContext(t), d.URL+wschannel.ControllerPath, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatalf("websocket.Dial() = %v", err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

// TestReferencePeer talks to a Server as the reference's connector does:
// V1 frames in binary messages.
func TestReferencePeer(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{})
	ws := rawDial(t, srv, d, nil)
	ctx := testContext(t)
	b, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })

	hello := `t:COMMAND;;et:HELLO;;e:{"id":"3f0a","type":"HELLO","payload":{"targetId":"8b1c"}}`
	if err := ws.Write(ctx, websocket.MessageBinary, []byte(hello)); err != nil {
		t.Fatalf("Write() = %v", err)
	}
	f, err := b.Recv()
	if err != nil || f.Command == nil || f.Command.ID != "3f0a" || string(f.Command.Payload) != `{"targetId":"8b1c"}` {
		t.Fatalf("Recv() of the HELLO = (%+v, %v), want the HELLO", f, err)
	}
	// An empty message is skipped, as the reference does.
	if err := ws.Write(ctx, websocket.MessageBinary, nil); err != nil {
		t.Fatal(err)
	}

	reply := &channel.Frame{Reply: &command.Reply{CommandID: "3f0a", Type: command.TypeHello, Status: command.StatusSucceeded, Payload: []byte(`{"targetId":"my-target"}`)}}
	if err := b.Send(reply); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	typ, got, err := ws.Read(ctx)
	want := `t:REPLY;;et:HELLO;;e:{"commandId":"3f0a","type":"HELLO","commandStatus":"SUCCEEDED","payload":{"targetId":"my-target"}}`
	if err != nil || typ != websocket.MessageBinary || string(got) != want {
		t.Fatalf("peer read (%v, %s, %v), want a binary message %s", typ, got, err, want)
	}

	// A frame that is not V1 makes Recv fail; the Conn then closes with 1002.
	if err := ws.Write(ctx, websocket.MessageBinary, []byte(`command: {"id":"x","type":"HELLO_COMMAND"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Recv(); !errors.Is(err, channel.ErrMalformedFrame) {
		t.Fatalf("Recv() of a legacy frame = (%+v, %v), want an error wrapping ErrMalformedFrame", f, err)
	}
	_ = b.Close()
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusProtocolError {
		t.Errorf("peer read after the malformed frame = %v, want a close with 1002", err)
	}
}

// TestTextMessage: a text message is refused as the reference refuses it,
// with 1003 "Unsupported text frame", on either protocol.
func TestTextMessage(t *testing.T) {
	for _, proto := range []string{wschannel.ProtocolV1, wschannel.ProtocolLegacy} {
		t.Run(proto, func(t *testing.T) {
			srv, d := startServer(t, false, wschannel.Config{})
			ws := rawDial(t, srv, d, http.Header{wschannel.ProtocolHeader: {proto}})
			ctx := testContext(t)
			b, err := srv.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			if err := ws.Write(ctx, websocket.MessageText, []byte(`t:COMMAND;;et:HELLO;;e:{"id":"1","type":"HELLO","payload":{}}`)); err != nil {
				t.Fatal(err)
			}
			if f, err := b.Recv(); !errors.Is(err, channel.ErrMalformedFrame) {
				t.Fatalf("Recv() of a text message = (%+v, %v), want an error wrapping ErrMalformedFrame", f, err)
			}
			_ = b.Close()
			_, _, err = ws.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusUnsupportedData || ce.Reason != "Unsupported text frame" {
				t.Errorf("peer read = %v, want close 1003 \"Unsupported text frame\"", err)
			}
		})
	}
}

// TestCloseCodes checks the close code each error maps to, and what the
// other end's Recv makes of it.
func TestCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		err     error
		code    websocket.StatusCode
		wantErr error
	}{
		{nil, websocket.StatusNormalClosure, channel.ErrClosed},
		{channel.ErrClosed, websocket.StatusNormalClosure, channel.ErrClosed},
		{fmt.Errorf("hello: %w: %w: first frame is not HELLO", channel.ErrProtocol, channel.ErrMalformedFrame), websocket.StatusProtocolError, channel.ErrMalformedFrame},
		{fmt.Errorf("%w: too many handshakes", channel.ErrLimitExceeded), websocket.StatusTryAgainLater, channel.ErrLimitExceeded},
		{channel.ErrFrameTooLarge, websocket.StatusMessageTooBig, channel.ErrFrameTooLarge},
		{errors.New("boom"), websocket.StatusInternalError, channel.ErrClosed},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			srv, d := startServer(t, false, wschannel.Config{})
			// The raw peer sees the code and reason.
			ws := rawDial(t, srv, d, nil)
			b, err := srv.Accept(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{})
			go func() { defer close(closed); closeWith(b, tc.err) }()
			_, _, err = ws.Read(testContext(t)) // reading answers the close handshake
			<-closed
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code || (tc.err != nil && !errors.Is(tc.err, channel.ErrClosed) && !strings.Contains(tc.err.Error(), ce.Reason)) {
				t.Errorf("peer read after CloseWithError(%v) = %v, want close code %d with the error as reason", tc.err, err, tc.code)
			}
			// A Dialer's Conn maps the code back.
			a, b2 := connect(t, srv, d)
			closeWith(b2, tc.err)
			if f, err := a.Recv(); !errors.Is(err, tc.wantErr) {
				t.Errorf("Recv() after the peer's CloseWithError(%v) = (%+v, %v), want an error wrapping %v", tc.err, f, err, tc.wantErr)
			}
		})
	}
}

func closeWith(c channel.Conn, err error) {
	if err == nil {
		_ = c.Close()
		return
	}
	_ = c.(channel.CloseWithErrorer).CloseWithError(err)
}

// TestHTTP checks the answers to requests that do not become channels.
func TestHTTP(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{})
	ctx := testContext(t)
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
		want   int
	}{
		{"other path", "/exchange/controllers", http.Header{wschannel.ProtocolHeader: {"v1"}}, http.StatusNotFound},
		{"under the controller path", wschannel.ControllerPath + "/x", http.Header{wschannel.ProtocolHeader: {"v1"}}, http.StatusNotFound},
		{"beside the legacy path", "/ws/controllers", nil, http.StatusNotFound},
		{"not an upgrade", wschannel.ControllerPath, http.Header{wschannel.ProtocolHeader: {"v1"}}, http.StatusUpgradeRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var status int
			if tc.name == "not an upgrade" {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL+tc.path, nil)
				req.Header = tc.header
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				status = resp.StatusCode
			} else {
				_, resp, err := websocket.Dial(ctx, d.URL+tc.path, &websocket.DialOptions{HTTPHeader: tc.header})
				if err == nil || resp == nil {
					t.Fatalf("Dial() = %v, want a refusal", err)
				}
				status = resp.StatusCode
			}
			if status != tc.want {
				t.Errorf("status = %d, want %d", status, tc.want)
			}
		})
	}

	// Once closed: Accept fails, new requests get 410.
	_ = srv.Close()
	if _, err := srv.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Accept() after Close = %v, want an error wrapping ErrClosed", err)
	}
	if _, err := d.Dial(ctx); err == nil || !strings.Contains(err.Error(), "410") {
		t.Errorf("Dial() after the Server closed = %v, want HTTP 410", err)
	}
}

// TestServerCloseDropsUnaccepted: a connection nobody accepted is closed with
// 1001 when the Server closes.
func TestServerCloseDropsUnaccepted(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{})
	a, err := d.Dial(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	_ = srv.Close()
	if f, err := a.Recv(); !errors.Is(err, channel.ErrClosed) || !strings.Contains(err.Error(), "1001") {
		t.Errorf("Recv() on an unaccepted connection after Server.Close = (%+v, %v), want ErrClosed with 1001", f, err)
	}
}

func TestDialerURL(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{})
	for _, u := range []string{d.URL, d.URL + "/", strings.Replace(d.URL, "http://", "ws://", 1) + wschannel.ControllerPath} {
		dd := &wschannel.Dialer{URL: u}
		a, err := dd.Dial(testContext(t))
		if err != nil {
			t.Fatalf("Dial(%q) = %v", u, err)
		}
		b, err := srv.Accept(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		_ = a.Close()
		_ = b.Close()
	}
	for _, u := range []string{"", "ftp://host", "ws://", "://x"} {
		if c, err := (&wschannel.Dialer{URL: u}).Dial(testContext(t)); err == nil {
			_ = c.Close()
			t.Errorf("Dial(%q) = nil error, want one", u)
		}
	}
}

func TestPeerInfo(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		srv, d := startServer(t, useTLS, wschannel.Config{})
		a, b := connect(t, srv, d)
		for _, c := range []channel.Conn{a, b} {
			p := channel.Peer(c)
			if !strings.HasPrefix(p.Addr, "127.0.0.1:") || (p.TLS != nil) != useTLS {
				t.Errorf("TLS %v: PeerInfo() = %+v, want a loopback address and TLS state %v", useTLS, p, useTLS)
			}
		}
	}
}

// TestHeaders: the Dialer's headers reach the HTTP handlers in front of the
// Server, where authentication belongs for now.
func TestHeaders(t *testing.T) {
	srv := wschannel.NewServer(wschannel.Config{})
	t.Cleanup(func() { _ = srv.Close() })
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	if c, err := (&wschannel.Dialer{URL: ts.URL}).Dial(testContext(t)); err == nil || !strings.Contains(err.Error(), "401") {
		if c != nil {
			_ = c.Close()
		}
		t.Errorf("Dial() without the header = %v, want HTTP 401", err)
	}
	d := &wschannel.Dialer{URL: ts.URL, Header: http.Header{"Authorization": {"Bearer s3cret"}}}
	connect(t, srv, d)
}

// TestReadLimit: a message over the receiver's limit ends the connection
// with 1009; the receiver's Recv reports ErrFrameTooLarge.
func TestReadLimit(t *testing.T) {
	const limit = 1 << 10
	srv, d := startServer(t, false, wschannel.Config{MaxFrameBytes: limit})
	ws := rawDial(t, srv, d, nil)
	b, err := srv.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	big := `t:COMMAND;;et:X;;e:{"id":"i","type":"X","payloadText":"` + string(bytes.Repeat([]byte("x"), limit)) + `"}`
	_ = ws.Write(testContext(t), websocket.MessageBinary, []byte(big))
	if f, err := b.Recv(); !errors.Is(err, channel.ErrFrameTooLarge) {
		t.Errorf("Recv() of a message over the limit = (%+v, %v), want an error wrapping ErrFrameTooLarge", f, err)
	}
	if _, _, err := ws.Read(testContext(t)); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("peer read = %v, want a close with 1009", err)
	}
}

// TestPingTimeout: a peer that answers no ping (it never reads, so its
// library never sends the pong) is dropped after PongTimeout.
func TestPingTimeout(t *testing.T) {
	cfg := wschannel.Config{PingInterval: 5 * time.Millisecond, PongTimeout: 20 * time.Millisecond}
	srv, d := startServer(t, false, cfg)
	_ = rawDial(t, srv, d, nil) // never reads
	b, err := srv.Accept(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if f, err := b.Recv(); !errors.Is(err, channel.ErrClosed) || !strings.Contains(err.Error(), "pong") {
		t.Errorf("Recv() on a connection whose pings go unanswered = (%+v, %v), want ErrClosed naming the missing pong", f, err)
	}
}

// TestPingKeepsAlive: pings between two Conns are answered even when
// nobody calls Recv, so the connection lives on.
func TestPingKeepsAlive(t *testing.T) {
	cfg := wschannel.Config{PingInterval: time.Millisecond, PongTimeout: 2 * time.Second}
	srv, d := startServer(t, false, cfg)
	a, b := connect(t, srv, d)
	// Frames keep flowing while pings go both ways every millisecond.
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		if err := a.Send(&channel.Frame{Command: &command.Command{ID: "p", Type: "PING"}}); err != nil {
			t.Fatalf("Send() = %v", err)
		}
		if f, err := b.Recv(); err != nil || f.Command == nil {
			t.Fatalf("Recv() = (%+v, %v)", f, err)
		}
	}
}

// TestMaxHandshakes: beyond Config.MaxHandshakes connections not yet past
// HELLO (waiting for Accept, or accepted without HandshakeComplete), upgrade
// requests get 503; HandshakeComplete or Close frees the slot.
func TestMaxHandshakes(t *testing.T) {
	srv, d := startServer(t, false, wschannel.Config{MaxHandshakes: 1})
	ctx := testContext(t)
	refused := func(why string) {
		t.Helper()
		c, err := d.Dial(ctx)
		if err == nil {
			_ = c.Close()
			t.Fatalf("%s: Dial() succeeded, want 503", why)
		}
		if !strings.Contains(err.Error(), "503") {
			t.Fatalf("%s: Dial() = %v, want HTTP 503", why, err)
		}
		// Retry-After is carried in the error (decision 0039).
		var le *channel.LimitError
		if !errors.As(err, &le) || le.RetryAfter != time.Second {
			t.Fatalf("%s: Dial() = %v, want a *channel.LimitError with the 503's Retry-After (1 s)", why, err)
		}
	}
	_, b1 := connect(t, srv, d)
	refused("one accepted connection in its handshake")
	b1.(channel.HandshakeCompleter).HandshakeComplete()
	b1.(channel.HandshakeCompleter).HandshakeComplete() // idempotent

	_, b2 := connect(t, srv, d)
	refused("a second connection in its handshake")
	_ = b2.Close()

	a3, err := d.Dial(ctx) // waits for Accept: it holds the slot
	if err != nil {
		t.Fatalf("Dial() after Close freed the slot = %v", err)
	}
	t.Cleanup(func() { _ = a3.Close() })
	refused("a connection waiting for Accept")
}
