package wschannel

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// Defaults of Config.
const (
	// DefaultPingInterval is how often each end pings the other (the
	// reference pings every 5 s).
	DefaultPingInterval = 5 * time.Second
	// DefaultPongTimeout is how long a ping may go unanswered before the
	// connection is deemed dead and closed.
	DefaultPongTimeout = 15 * time.Second
	// DefaultCloseTimeout bounds the close handshake: after it, Close drops
	// the TCP connection.
	DefaultCloseTimeout = time.Second
)

// Config tunes the Conns of a Server or a Dialer. The zero Config is the
// defaults.
type Config struct {
	// MaxFrameBytes is the largest encoded frame sent or received (the
	// WebSocket read limit); 0 means channel.DefaultMaxFrameBytes.
	MaxFrameBytes int
	// PingInterval is how often a ping is sent; 0 means DefaultPingInterval,
	// a negative value disables pings.
	PingInterval time.Duration
	// PongTimeout is how long a ping may wait for its pong before the
	// connection is closed (1011); 0 means DefaultPongTimeout.
	PongTimeout time.Duration
	// CloseTimeout bounds the close handshake; 0 means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// MaxHandshakes (Server only) bounds the connections upgraded and not
	// yet past HELLO at once: waiting for Accept, or accepted and in the
	// HELLO exchange until channel.AcceptHello calls HandshakeComplete or
	// the Conn closes. Beyond it, an upgrade request is refused with 503
	// Service Unavailable and Retry-After before it is upgraded. 0 or
	// negative means no limit.
	MaxHandshakes int
	// MaxHandshakesPerSource (Server only) bounds MaxHandshakes' count for
	// one source (channel.PeerInfo.Source: the client's IP address, or its
	// /64 for IPv6); beyond it, 503 with Retry-After. 0 or negative means no
	// limit.
	MaxHandshakesPerSource int
	// MaxConnections (Server only) bounds the WebSocket connections open at
	// once, and MaxConnectionsPerSource those from one source, from the
	// upgrade until the Conn closes; beyond either, an upgrade request is
	// refused with 503 and Retry-After. 0 or negative means no limit.
	MaxConnections          int
	MaxConnectionsPerSource int
	// HandshakeTimeout (Server only) closes (1002) a connection that has
	// sent no message (no HELLO) this long after its upgrade. 0 or negative
	// means never.
	HandshakeTimeout time.Duration
	// Authenticate (Server only), if set, runs on every upgrade request
	// before it is upgraded, as the reference's
	// WebSocketControllerAuthentication does (§3.8): an error refuses it
	// with 401 Unauthorized and an empty body. It must be safe for
	// concurrent use.
	Authenticate func(r *http.Request) error
}

func (c Config) withDefaults() Config {
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = channel.DefaultMaxFrameBytes
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	return c
}

// message is one data message as read off the socket.
type message struct {
	typ  websocket.MessageType
	data []byte
}

// conn is a channel.Conn over one WebSocket connection, on either side.
//
// One goroutine (readLoop) reads the socket all the time, so that pings,
// pongs and the peer's close are answered even while nobody calls Recv; it
// hands each data message to Recv through an unbuffered channel, so a peer
// that is not read from is pushed back (TCP flow control) one message later.
// A second goroutine (pingLoop) keeps the connection alive. Close waits for
// both.
type conn struct {
	proto protocol // the frames spoken: V1, or LEGACY (server side only)
	token string   // server side: the bearer token of the upgrade request, given to a HELLO without one
	ws    *websocket.Conn
	raw   net.Conn // the TCP connection under ws, closed when the close handshake stalls
	side  string   // "client" or "server", for error messages
	cfg   Config
	peer  channel.PeerInfo

	// ctx is passed to every read and write of ws; cancelling it makes the
	// library drop the connection (kill).
	ctx     context.Context
	killErr context.CancelCauseFunc

	in       chan message  // readLoop → Recv
	readDone chan struct{} // closed when readLoop stops; readErr is then set
	readErr  error

	malformed atomic.Pointer[error] // the first decoding failure of Recv

	release   func() // frees the Server's handshake slot; idempotent, nil-safe via handshakeDone
	onClose   func() // frees the Server's connection slot, once closed; nil on the client side
	handshook atomic.Bool
	firstMsg  atomic.Bool                // a data message has arrived (stops the handshake timer)
	timer     atomic.Pointer[time.Timer] // server side: HandshakeTimeout, or nil
	firstSeen bool                       // Recv has returned a frame (Recv's goroutine only)
	notHello  atomic.Bool                // server side: the first frame was not a HELLO command
	closeHint atomic.Value               // client side: *closeError to close with, after a GOOD_BYE

	// Replies made up for a legacy peer, which never answers PRIMARY and
	// HEALTH_CHECK (reference §3.4): Send queues them, Recv returns them.
	smu        sync.Mutex
	synthQ     []*channel.Frame
	synthReady chan struct{} // cap 1: something is in synthQ
	probing    bool          // closing: no more health probes
	probes     sync.WaitGroup

	buf []byte // Send's encoding buffer (Send has a single caller at a time)

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
}

var (
	_ channel.Conn               = (*conn)(nil)
	_ channel.PeerInfoer         = (*conn)(nil)
	_ channel.CloseWithErrorer   = (*conn)(nil)
	_ channel.HandshakeCompleter = (*conn)(nil)
)

// HandshakeComplete frees the connection's slot among the Server's
// handshakes (Config.MaxHandshakes); channel.AcceptHello calls it once HELLO
// succeeded. It is safe to call more than once, and on a client Conn, where
// it does nothing.
func (c *conn) HandshakeComplete() {
	c.handshook.Store(true)
	c.handshakeDone()
}

func (c *conn) handshakeDone() {
	if c.release != nil {
		c.release()
	}
}

// connOptions are what a Server knows of a connection at its upgrade.
type connOptions struct {
	proto   protocol
	token   string
	release func() // frees the Server's handshake slot; nil on the client side
	onClose func() // frees the Server's connection slot; nil on the client side
}

// newConn starts a conn over ws.
func newConn(ws *websocket.Conn, raw net.Conn, side string, cfg Config, peer channel.PeerInfo, o connOptions) *conn {
	ctx, kill := context.WithCancelCause(context.Background())
	c := &conn{
		proto:      o.proto,
		token:      o.token,
		ws:         ws,
		raw:        raw,
		side:       side,
		cfg:        cfg,
		peer:       peer,
		release:    o.release,
		onClose:    o.onClose,
		ctx:        ctx,
		killErr:    kill,
		in:         make(chan message),
		readDone:   make(chan struct{}),
		done:       make(chan struct{}),
		synthReady: make(chan struct{}, 1),
	}
	if d := cfg.HandshakeTimeout; d > 0 && side == "server" {
		c.timer.Store(time.AfterFunc(d, func() {
			if !c.firstMsg.Load() {
				_ = c.CloseWithError(&closeError{code: websocket.StatusProtocolError,
					reason: fmt.Sprintf("no HELLO within the handshake timeout (%s)", d), err: channel.ErrProtocol})
			}
		}))
	}
	// A message over the limit ends the connection with 1009 (Send refuses
	// to write one, so only a peer with a larger limit sends it).
	ws.SetReadLimit(int64(cfg.MaxFrameBytes))
	c.wg.Go(c.readLoop)
	if cfg.PingInterval > 0 {
		c.wg.Go(c.pingLoop)
	}
	return c
}

func (c *conn) readLoop() {
	defer close(c.readDone)
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			c.readErr = err
			return
		}
		if !c.firstMsg.Swap(true) {
			if t := c.timer.Load(); t != nil {
				t.Stop()
			}
		}
		select {
		case c.in <- message{typ, data}:
		case <-c.done: // closed locally: keep reading until the peer's close
		}
	}
}

func (c *conn) pingLoop() {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.readDone:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.PongTimeout)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			// A pong that never came: the peer or the path is dead. Dropping
			// the connection ends readLoop, and Recv reports it.
			c.killErr(fmt.Errorf("%w (%v)", errNoPong, err))
			return
		}
	}
}

// Send writes f as one binary message holding its V1 text, or its LEGACY
// text on a legacy connection (binary, as the reference requires: it closes
// on text messages). A frame whose encoding exceeds the maximum frame size
// fails with an error wrapping channel.ErrFrameTooLarge before anything is
// written; the conn stays usable.
//
// On a legacy connection, the commands a legacy peer never answers are
// answered here (reference §3.4): PRIMARY is written as "primary: true" or
// "replica: true" and answered SUCCEEDED at once; HEALTH_CHECK is not written
// but answered by a WebSocket ping: healthy when the pong comes within the
// command's timeout (at most Config.PongTimeout), unhealthy otherwise; a
// GOOD_BYE asking to reconnect is not written either: the connection is
// closed with 1013 instead, and Send fails with an error wrapping
// channel.ErrClosed.
func (c *conn) Send(f *channel.Frame) error {
	if c.closed() {
		return fmt.Errorf("wschannel: %s send: %w", c.side, channel.ErrClosed)
	}
	if c.proto == protoLegacy && f != nil && f.Command != nil && f.Reply == nil {
		switch cmd := f.Command; cmd.Type {
		case command.TypeHealthCheck:
			return c.probe(cmd)
		case command.TypeGoodBye:
			if p, err := command.Decode[command.GoodByePayload](cmd.Payload); err == nil && p.Reconnect {
				_ = c.closeWith(websocket.StatusTryAgainLater, reasonGoodByeReconnect)
				return fmt.Errorf("wschannel: %s send: %w", c.side, errLegacyReconnect)
			}
		}
	}
	var (
		b   []byte
		err error
	)
	if c.proto == protoLegacy {
		b, err = AppendLegacyFrame(c.buf[:0], f)
	} else {
		b, err = AppendFrame(c.buf[:0], f)
	}
	if err != nil {
		return err
	}
	if cap(b) <= 64<<10 {
		c.buf = b // keep small buffers only
	}
	if len(b) > c.cfg.MaxFrameBytes {
		return fmt.Errorf("wschannel: %s send: %w: %d bytes encoded, limit %d", c.side, channel.ErrFrameTooLarge, len(b), c.cfg.MaxFrameBytes)
	}
	if err := c.ws.Write(c.ctx, websocket.MessageBinary, b); err != nil {
		return c.translate("send", err)
	}
	if c.proto == protoLegacy && f.Command != nil && f.Command.Type == command.TypePrimary && !f.Command.OneWay {
		c.synth(&command.Reply{CommandID: f.Command.ID, Type: command.TypePrimary, Status: command.StatusSucceeded, Payload: []byte("{}")})
	}
	return nil
}

// The close reasons of the reference's connector on GOOD_BYE (§3.6).
const (
	reasonGoodByeReconnect = "GoodBye Command with reconnection requested."
	reasonGoodByeNoReturn  = "GoodBye Command without reconnection."
	reasonHelloFirst       = "Hello Command is first expected to initialize the exchange channel"
	reasonTextFrame        = "Unsupported text frame"
)

// probe answers a HEALTH_CHECK for a legacy peer with a WebSocket ping (see
// Send).
func (c *conn) probe(cmd *command.Command) error {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.probing || c.closed() {
		return fmt.Errorf("wschannel: %s send: %w", c.side, channel.ErrClosed)
	}
	timeout := c.cfg.PongTimeout
	if cmd.Timeout > 0 {
		timeout = min(timeout, cmd.Timeout)
	}
	c.probes.Go(func() {
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		err := c.ws.Ping(ctx)
		cancel()
		if c.closed() || cmd.OneWay {
			return
		}
		p := command.HealthCheckReplyPayload{Healthy: true, Detail: "legacy peer: alive by WebSocket ping (legacy peers do not answer HEALTH_CHECK)"}
		if err != nil {
			p = command.HealthCheckReplyPayload{Detail: fmt.Sprintf("legacy peer: no pong within %s: %v", timeout, err)}
		}
		c.synth(&command.Reply{CommandID: cmd.ID, Type: command.TypeHealthCheck, Status: command.StatusSucceeded, Payload: mustJSON(p)})
	})
	return nil
}

// synth queues a reply for Recv to return.
func (c *conn) synth(r *command.Reply) {
	c.smu.Lock()
	c.synthQ = append(c.synthQ, &channel.Frame{Reply: r})
	c.smu.Unlock()
	select {
	case c.synthReady <- struct{}{}:
	default:
	}
}

// popSynth returns the next made-up reply, or nil.
func (c *conn) popSynth() *channel.Frame {
	c.smu.Lock()
	defer c.smu.Unlock()
	if len(c.synthQ) == 0 {
		return nil
	}
	f := c.synthQ[0]
	c.synthQ[0] = nil
	c.synthQ = c.synthQ[1:]
	return f
}

// Recv returns the next frame. Empty messages are skipped (as the reference
// does); a text message fails with ErrMalformedFrame, and Close then closes
// with 1003 "Unsupported text frame", as the reference does.
func (c *conn) Recv() (*channel.Frame, error) {
	for {
		if c.closed() {
			return nil, fmt.Errorf("wschannel: %s recv: %w", c.side, channel.ErrClosed)
		}
		if f := c.popSynth(); f != nil {
			return f, nil
		}
		select {
		case m := <-c.in:
			if len(m.data) == 0 {
				continue
			}
			var (
				f   *channel.Frame
				err error
			)
			switch {
			case m.typ != websocket.MessageBinary:
				err = &closeError{code: websocket.StatusUnsupportedData, reason: reasonTextFrame, err: channel.ErrMalformedFrame}
			case c.proto == protoLegacy:
				f, err = DecodeLegacyFrame(m.data)
			default:
				f, err = DecodeFrame(m.data)
			}
			if err != nil {
				err = fmt.Errorf("wschannel: %s recv: %w", c.side, err)
				c.malformed.CompareAndSwap(nil, &err)
				return nil, err
			}
			c.observe(f)
			return f, nil
		case <-c.synthReady:
		case <-c.readDone:
			if f := c.popSynth(); f != nil {
				return f, nil
			}
			if cause := context.Cause(c.ctx); errors.Is(cause, errNoPong) && !c.closed() {
				return nil, fmt.Errorf("wschannel: %s recv: %w: %w", c.side, channel.ErrClosed, cause)
			}
			return nil, c.translate("recv", c.readErr)
		case <-c.done:
			return nil, fmt.Errorf("wschannel: %s recv: %w", c.side, channel.ErrClosed)
		}
	}
}

// observe notes what the close code will depend on, and gives the upgrade
// request's bearer token to a HELLO that has none (reference §3.8: the
// reference authenticates the upgrade request; here the controller's
// Authenticator judges the token with the HELLO's identity).
func (c *conn) observe(f *channel.Frame) {
	first := !c.firstSeen
	c.firstSeen = true
	cmd := f.Command
	switch {
	case c.side == "server" && first && (cmd == nil || cmd.Type != command.TypeHello):
		c.notHello.Store(true)
	case c.side == "server" && cmd != nil && cmd.Type == command.TypeHello && c.token != "" && !c.handshook.Load():
		cmd.Payload = withToken(cmd.Payload, c.token)
	case c.side == "client" && cmd != nil && cmd.Type == command.TypeGoodBye:
		ce := &closeError{code: websocket.StatusNormalClosure, reason: reasonGoodByeNoReturn, err: channel.ErrClosed}
		if p, err := command.Decode[command.GoodByePayload](cmd.Payload); err == nil && p.Reconnect {
			ce = &closeError{code: websocket.StatusTryAgainLater, reason: reasonGoodByeReconnect, err: channel.ErrClosed}
		}
		c.closeHint.Store(ce)
	}
}

// withToken returns a HELLO payload holding token, unless it holds one.
func withToken(payload []byte, token string) []byte {
	var m map[string]json.RawMessage
	if len(payload) > 0 {
		if err := json.Unmarshal(payload, &m); err != nil || m == nil {
			return payload // not an object: the handshake refuses it
		}
	}
	if t, ok := m["token"]; ok && string(t) != `""` && string(t) != "null" {
		return payload
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	m["token"] = mustJSON(token)
	return mustJSON(m)
}

// closeError is a close code and reason of the reference's, for errors that
// have one.
type closeError struct {
	code   websocket.StatusCode
	reason string
	err    error // the channel package's error it is
}

func (e *closeError) Error() string { return e.reason }
func (e *closeError) Unwrap() error { return e.err }

// errNoPong is why a connection whose pong came too late was dropped.
var errNoPong = errors.New("no pong within the pong timeout")

// kill drops the connection at once (the library closes it when the context
// of a read or write in progress ends).
func (c *conn) kill() { c.killErr(nil) }

// Close closes the connection with 1000 (normal closure), or with 1002
// (protocol error) if Recv failed on a frame it could not decode: the peer
// learns why, as the reference's peers do.
//
// A server Conn whose first frame was not a HELLO command closes with 1002
// "Hello Command is first expected to initialize the exchange channel"; a
// client Conn that received a GOOD_BYE closes as the reference's connector
// does: 1013 "GoodBye Command with reconnection requested." or 1000
// "GoodBye Command without reconnection." (§3.6).
func (c *conn) Close() error {
	switch {
	case c.malformed.Load() != nil:
		return c.CloseWithError(*c.malformed.Load())
	case c.notHello.Load() && !c.handshook.Load():
		return c.closeWith(websocket.StatusProtocolError, reasonHelloFirst)
	}
	if ce, ok := c.closeHint.Load().(*closeError); ok {
		return c.closeWith(ce.code, ce.reason)
	}
	return c.CloseWithError(nil)
}

// CloseWithError closes the connection with the close code and reason for
// err:
//
//	nil, channel.ErrClosed          1000 normal closure
//	channel.ErrMalformedFrame,
//	channel.ErrProtocol             1002 protocol error
//	channel.ErrFrameTooLarge        1009 message too big
//	channel.ErrLimitExceeded        1013 try again later
//	anything else                   1011 internal error
//
// with err's text as the reason (cut to the 123 bytes a close frame holds).
// It runs the close handshake for at most Config.CloseTimeout, then drops
// the TCP connection, and returns once the conn's goroutines are gone. Only
// the first Close or CloseWithError counts.
func (c *conn) CloseWithError(err error) error {
	code, reason := closeCode(err)
	return c.closeWith(code, reason)
}

func (c *conn) closeWith(code websocket.StatusCode, reason string) error {
	c.closeOnce.Do(func() {
		c.handshakeDone()
		if t := c.timer.Load(); t != nil {
			t.Stop()
		}
		c.smu.Lock()
		c.probing = true // no probe starts after this
		close(c.done)
		c.smu.Unlock()
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_ = c.ws.Close(code, reason)
		}()
		t := time.NewTimer(c.cfg.CloseTimeout)
		select {
		case <-closed:
		case <-t.C:
			c.kill()
			if c.raw != nil {
				_ = c.raw.Close()
			}
			<-closed
		}
		t.Stop()
		c.kill()
		c.wg.Wait()
		c.probes.Wait()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// PeerInfo returns the remote address and, over TLS, the connection state; on
// the server side with mTLS, PeerCertificates[0] is the client's verified
// certificate.
func (c *conn) PeerInfo() channel.PeerInfo { return c.peer }

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// translate maps a WebSocket error; once the conn is closed locally every
// error is ErrClosed.
func (c *conn) translate(op string, err error) error {
	if c.closed() {
		return fmt.Errorf("wschannel: %s %s: %w", c.side, op, channel.ErrClosed)
	}
	return translate(c.side+" "+op, err)
}

// translate maps an error of the WebSocket library to the transport-neutral
// errors of the channel package, by the peer's close code when there is one:
//
//	1002 protocol error, 1003 unsupported data,
//	1007 invalid payload data                      → channel.ErrMalformedFrame
//	1009 message too big (and our own read limit)  → channel.ErrFrameTooLarge
//	1013 with a reason naming ErrLimitExceeded     → channel.ErrLimitExceeded
//	any other close, or a broken connection        → channel.ErrClosed
//
// The close code and reason stay in the text.
func translate(op string, err error) error {
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return fmt.Errorf("wschannel: %s: %w: %v", op, channel.ErrFrameTooLarge, err)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("wschannel: %s: connection ended: %w", op, channel.ErrClosed)
		}
		return fmt.Errorf("wschannel: %s: %w: %v", op, channel.ErrClosed, err)
	}
	switch ce.Code {
	case websocket.StatusProtocolError, websocket.StatusUnsupportedData, websocket.StatusInvalidFramePayloadData:
		return fmt.Errorf("wschannel: %s: %w: peer closed with %d: %s", op, channel.ErrMalformedFrame, int(ce.Code), ce.Reason)
	case websocket.StatusMessageTooBig:
		return fmt.Errorf("wschannel: %s: %w: peer closed with %d: %s", op, channel.ErrFrameTooLarge, int(ce.Code), ce.Reason)
	case websocket.StatusTryAgainLater:
		if strings.Contains(ce.Reason, channel.ErrLimitExceeded.Error()) {
			return fmt.Errorf("wschannel: %s: %w: peer closed with %d: %s", op, channel.ErrLimitExceeded, int(ce.Code), ce.Reason)
		}
	}
	return fmt.Errorf("wschannel: %s: %w: peer closed with %d: %s", op, channel.ErrClosed, int(ce.Code), ce.Reason)
}

// maxReason is the longest reason a close frame holds (125 bytes of control
// payload, less the code).
const maxReason = 123

// closeCode is the close code and reason for closing with err (see
// CloseWithError).
func closeCode(err error) (websocket.StatusCode, string) {
	var code websocket.StatusCode
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		return ce.code, truncate(ce.reason, maxReason)
	case err == nil || errors.Is(err, channel.ErrClosed):
		return websocket.StatusNormalClosure, ""
	case errors.Is(err, channel.ErrLimitExceeded):
		code = websocket.StatusTryAgainLater
	case errors.Is(err, channel.ErrMalformedFrame), errors.Is(err, channel.ErrProtocol):
		code = websocket.StatusProtocolError
	case errors.Is(err, channel.ErrFrameTooLarge):
		code = websocket.StatusMessageTooBig
	default:
		code = websocket.StatusInternalError
	}
	return code, truncate(err.Error(), maxReason)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// tlsState returns a copy of s, or nil.
func tlsState(s *tls.ConnectionState) *tls.ConnectionState {
	if s == nil {
		return nil
	}
	cp := *s
	return &cp
}
