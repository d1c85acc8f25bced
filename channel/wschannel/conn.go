package wschannel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/channel"
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
	ws   *websocket.Conn
	raw  net.Conn // the TCP connection under ws, closed when the close handshake stalls
	side string   // "client" or "server", for error messages
	cfg  Config
	peer channel.PeerInfo

	// ctx is passed to every read and write of ws; cancelling it makes the
	// library drop the connection (kill).
	ctx     context.Context
	killErr context.CancelCauseFunc

	in       chan message  // readLoop → Recv
	readDone chan struct{} // closed when readLoop stops; readErr is then set
	readErr  error

	malformed atomic.Pointer[error] // the first decoding failure of Recv

	release func() // frees the Server's handshake slot; idempotent, nil-safe via handshakeDone

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
func (c *conn) HandshakeComplete() { c.handshakeDone() }

func (c *conn) handshakeDone() {
	if c.release != nil {
		c.release()
	}
}

// newConn starts a conn over ws; release (nil on the client side) frees the
// Server's handshake slot.
func newConn(ws *websocket.Conn, raw net.Conn, side string, cfg Config, peer channel.PeerInfo, release func()) *conn {
	ctx, kill := context.WithCancelCause(context.Background())
	c := &conn{
		ws:       ws,
		raw:      raw,
		side:     side,
		cfg:      cfg,
		peer:     peer,
		release:  release,
		ctx:      ctx,
		killErr:  kill,
		in:       make(chan message),
		readDone: make(chan struct{}),
		done:     make(chan struct{}),
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

// Send writes f as one binary message holding its V1 text (binary, as the
// reference requires: it closes on text messages). A frame whose encoding
// exceeds the maximum frame size fails with an error wrapping
// channel.ErrFrameTooLarge before anything is written; the conn stays usable.
func (c *conn) Send(f *channel.Frame) error {
	if c.closed() {
		return fmt.Errorf("wschannel: %s send: %w", c.side, channel.ErrClosed)
	}
	b, err := AppendFrame(c.buf[:0], f)
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
	return nil
}

// Recv returns the next frame. Text and binary messages are both accepted;
// empty messages are skipped (as the reference does).
func (c *conn) Recv() (*channel.Frame, error) {
	for {
		if c.closed() {
			return nil, fmt.Errorf("wschannel: %s recv: %w", c.side, channel.ErrClosed)
		}
		select {
		case m := <-c.in:
			if len(m.data) == 0 {
				continue
			}
			f, err := DecodeFrame(m.data)
			if err != nil {
				err = fmt.Errorf("wschannel: %s recv: %w", c.side, err)
				c.malformed.CompareAndSwap(nil, &err)
				return nil, err
			}
			return f, nil
		case <-c.readDone:
			if cause := context.Cause(c.ctx); errors.Is(cause, errNoPong) && !c.closed() {
				return nil, fmt.Errorf("wschannel: %s recv: %w: %w", c.side, channel.ErrClosed, cause)
			}
			return nil, c.translate("recv", c.readErr)
		case <-c.done:
			return nil, fmt.Errorf("wschannel: %s recv: %w", c.side, channel.ErrClosed)
		}
	}
}

// errNoPong is why a connection whose pong came too late was dropped.
var errNoPong = errors.New("no pong within the pong timeout")

// kill drops the connection at once (the library closes it when the context
// of a read or write in progress ends).
func (c *conn) kill() { c.killErr(nil) }

// Close closes the connection with 1000 (normal closure), or with 1002
// (protocol error) if Recv failed on a frame it could not decode: the peer
// learns why, as the reference's peers do.
func (c *conn) Close() error {
	if p := c.malformed.Load(); p != nil {
		return c.CloseWithError(*p)
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
		close(c.done)
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
	switch {
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
