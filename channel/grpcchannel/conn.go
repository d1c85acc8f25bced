package grpcchannel

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/exchangekit/exchange/channel"
)

// stream is what a conn needs of either end of the Connect stream
// (grpc.BidiStreamingServer and grpc.BidiStreamingClient both fit). The conn
// sends *outbound and receives *inbound messages, which only the codec of
// the Server and the Dialer (codec.go) encodes and decodes.
type stream interface {
	SendMsg(any) error
	RecvMsg(any) error
	Context() context.Context
}

// conn is a channel.Conn over one Connect stream, on either side.
//
// Concurrency follows the channel.Conn contract, which is gRPC's stream rule:
// at most one goroutine in Send and one in Recv at a time (channel.Channel
// lets one goroutine write at a time and owns one reader per Conn). conn therefore
// takes no lock around stream.Send or stream.Recv, and must not: concurrent
// SendMsg calls on one gRPC stream are illegal, and a lock would only hide a
// broken caller. Close and CloseWithError may be called from any goroutine at
// any time, more than once.
type conn struct {
	st     stream
	max    int32 // largest frame sent, in encoded bytes
	client bool  // the client's end of the stream (else the server's), for Close and error messages
	// batched says whether the frame Recv returned last came in a batch;
	// used only by the reader (see RecvBatched).
	batched bool
	peer    channel.PeerInfo
	end     streamEnder // ends the stream under a blocked Recv (see cancelStream); nil on a link's server side

	// out is the message Send and SendBatch hand to gRPC, which encodes it
	// before SendMsg returns; used only by the single writer.
	out outbound
	// in is the message Recv decodes into; queue holds the rest of a
	// received batch. Both are used only by Recv (the single reader), so
	// they need no lock.
	in    inbound
	queue []*channel.Frame

	// The first Close sets status and isClosed under mu, and closes done if
	// a waiter made it (doneChan): an idle conn whose Connect handler hosts
	// the read loop never waits on one, and so has none.
	mu       sync.Mutex
	isClosed atomic.Bool
	// Server side only: heard is set once a frame has been received (the
	// stream is no longer silent).
	heard  atomic.Bool
	done   chan struct{}  // made by doneChan, closed by Close
	status *status.Status // server side: how the stream ends (nil: OK); written before isClosed

	// Server side only: handshakeDone gives back the stream's place among
	// the handshakes in flight, once (HandshakeComplete, which then drops
	// it; it is read and written only under handshakeOnce).
	handshakeOnce sync.Once
	// hosting is set (to hostReader) once HostReader hands the read loop
	// over, and (to hostServe) while the Connect handler runs the Server's
	// HandleConns function: from then on a Close must end the stream
	// itself (end), because the handler goroutine that would end it by
	// returning may be blocked in Recv. Before that, Close only closes
	// done, and the handler returns.
	hosting       atomic.Int32
	handshakeDone func()
	// host, on the server side, is where the Connect handler takes the
	// read loop it runs (HostReader); nil on the client side, on a
	// server whose streams cannot be aborted while the handler runs, and
	// once the handler has taken the loop.
	host chan func()
	// loop is the read loop HostReader was given while the handler ran the
	// Server's HandleConns function, for the handler to run next.
	loop func()
}

// What the Connect handler's goroutine does for the conn (hosting).
const (
	hostNone   int32 = iota
	hostServe        // runs the Server's HandleConns function on it
	hostReader       // runs the Channel's read loop
)

// streamEnder ends a stream with a status, from any goroutine, making a Recv
// blocked on it return. On the server side it is gRPC's transport stream,
// which sends the status (trailers) and cancels the stream's context, as it
// does when a handler returns; on the client side, clientCancel.
type streamEnder interface {
	WriteStatus(*status.Status) error
}

// clientCancel ends a client stream by cancelling its context (the server
// sees CANCELLED); a client has no status to send.
type clientCancel context.CancelFunc

func (f clientCancel) WriteStatus(*status.Status) error {
	f()
	return nil
}

// side names the conn's end of the stream in error messages.
func (c *conn) side() string {
	if c.client {
		return "client"
	}
	return "server"
}

var (
	_ channel.Conn             = (*conn)(nil)
	_ channel.BatchSender      = (*conn)(nil)
	_ channel.PeerInfoer       = (*conn)(nil)
	_ channel.CloseWithErrorer = (*conn)(nil)

	_ channel.HandshakeCompleter = (*conn)(nil)
	_ channel.BatchReporter      = (*conn)(nil)
	_ channel.ReaderHost         = (*conn)(nil)
)

func newConn(st stream, client bool, maxFrameBytes int, end streamEnder) *conn {
	return &conn{
		st:     st,
		client: client,
		max:    int32(min(maxFrameBytes, math.MaxInt32)),
		peer:   peerInfo(st.Context()),
		end:    end,
	}
}

// Send writes f as one gRPC message. A frame whose encoding exceeds the
// maximum frame size fails with an error wrapping channel.ErrFrameTooLarge
// before anything is written; the conn stays usable.
func (c *conn) Send(f *channel.Frame) error {
	if c.closed() {
		return fmt.Errorf("grpcchannel: %s send: %w", c.side(), channel.ErrClosed)
	}
	if err := checkFrame(f); err != nil {
		return err
	}
	n := frameSize(f)
	if n > int(c.max) {
		return fmt.Errorf("grpcchannel: %s send: %w: %d bytes encoded, limit %d", c.side(), channel.ErrFrameTooLarge, n, c.max)
	}
	c.out = outbound{frame: f, size: n}
	err := c.st.SendMsg(&c.out)
	c.out = outbound{}
	if err != nil {
		return c.translate("send", err)
	}
	return nil
}

// SendBatch writes fs as one gRPC message: a Frame of the batch kind, which
// the peer's Recv unpacks in order. If the encoded batch exceeds the maximum
// frame size (an error wrapping channel.ErrFrameTooLarge) or a frame cannot
// be encoded (channel.ErrMalformedFrame), nothing is written and the conn
// stays usable. Send batches only to a peer that announced the "batch"
// capability.
func (c *conn) SendBatch(fs []*channel.Frame) error {
	if c.closed() {
		return fmt.Errorf("grpcchannel: %s send: %w", c.side(), channel.ErrClosed)
	}
	for _, f := range fs {
		if err := checkFrame(f); err != nil {
			return err
		}
	}
	framesLen := framesSize(fs)
	n := 1 + protowire.SizeBytes(framesLen)
	if n > int(c.max) {
		return fmt.Errorf("grpcchannel: %s send: %w: batch of %d frames is %d bytes encoded, limit %d",
			c.side(), channel.ErrFrameTooLarge, len(fs), n, c.max)
	}
	c.out = outbound{batch: fs, isBatch: true, size: n, framesLen: framesLen}
	err := c.st.SendMsg(&c.out)
	c.out = outbound{}
	if err != nil {
		return c.translate("send", err)
	}
	return nil
}

// Recv returns the next frame. Frames that arrived coalesced in a batch are
// returned one at a time, in order.
func (c *conn) Recv() (*channel.Frame, error) {
	for {
		if c.closed() {
			return nil, fmt.Errorf("grpcchannel: %s recv: %w", c.side(), channel.ErrClosed)
		}
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.batched = true
			return f, nil
		}
		err := c.st.RecvMsg(&c.in)
		in := c.in
		c.in = inbound{}
		if err != nil {
			return nil, c.translate("recv", err)
		}
		if !c.heard.Load() {
			c.heard.Store(true)
		}
		if in.isBatch {
			c.queue = in.batch // an empty batch is nothing to deliver
			continue
		}
		c.batched = false
		return in.frame, nil
	}
}

// RecvBatched reports whether the frame Recv returned last arrived in a
// batch message; it may be called only by the goroutine that calls Recv.
func (c *conn) RecvBatched() bool { return c.batched }

// Close ends the stream: on the client side by cancelling it (the server
// sees CANCELLED), on the server side with status OK (the client sees the
// end of the stream): by returning from the Connect handler, or, while that
// handler runs the Channel's read loop (HostReader), through gRPC's
// transport stream (streamEnder). Pending and later Send and Recv calls
// fail with an error wrapping channel.ErrClosed.
func (c *conn) Close() error {
	c.closeWith(nil)
	return nil
}

// closeWith closes the conn, the first time, with st as its status (nil:
// OK).
func (c *conn) closeWith(st *status.Status) {
	c.mu.Lock()
	if c.isClosed.Load() {
		c.mu.Unlock()
		return
	}
	c.status = st
	c.isClosed.Store(true)
	if c.done != nil {
		close(c.done)
	}
	c.mu.Unlock()
	c.cancelStream()
}

// doneChan returns a channel closed once the conn is closed, made at the
// first call.
func (c *conn) doneChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.isClosed.Load() {
			close(c.done)
		}
	}
	return c.done
}

// cancelStream ends the stream under a blocked Recv: always on the client
// side, on the server side only while the Connect handler hosts the read
// loop (see hosting), with the status the handler would have returned.
func (c *conn) cancelStream() {
	if c.end != nil && (c.client || c.hosting.Load() != hostNone) {
		st := c.status
		if st == nil {
			st = status.New(codes.OK, "")
		}
		_ = c.end.WriteStatus(st)
	}
}

// CloseWithError closes the conn and, on the server side, ends the stream
// with a status telling the client why: INVALID_ARGUMENT with err's text when
// err wraps channel.ErrMalformedFrame, RESOURCE_EXHAUSTED when it wraps
// channel.ErrFrameTooLarge, OK when it wraps channel.ErrClosed, ABORTED
// otherwise. A client cannot send a status, so on the client side it is Close.
// Only the first Close or CloseWithError counts.
func (c *conn) CloseWithError(err error) error {
	if !c.closed() {
		c.closeWith(status.Convert(closeStatus(err)))
	}
	return nil
}

// HandshakeComplete marks the stream as past HELLO: it no longer counts
// against the Server's limits on handshakes. A no-op on the client side and
// after the first call.
func (c *conn) HandshakeComplete() {
	c.handshakeOnce.Do(func() {
		if f := c.handshakeDone; f != nil {
			c.handshakeDone = nil // its closure (and the timer) goes now, not with the conn
			f()
		}
	})
}

// HostReader runs loop, the read loop of the Channel over this conn, on the
// goroutine of the Connect handler, which otherwise would only wait for the
// conn to close (channel.ReaderHost). It reports false on the client side,
// and when the stream has ended already.
func (c *conn) HostReader(loop func()) bool {
	if c.hosting.Load() == hostServe {
		// Called by the Server's HandleConns function, which runs on the
		// handler's goroutine: the handler runs loop once it returns.
		if c.closed() || c.st.Context().Err() != nil {
			return false
		}
		c.hosting.Store(hostReader)
		c.loop = loop
		return true
	}
	if c.host == nil || c.end == nil {
		return false
	}
	c.hosting.Store(hostReader) // before Recv can start: a Close from now on ends the stream
	select {
	case c.host <- loop:
		return true
	case <-c.doneChan():
		return false
	case <-c.st.Context().Done():
		return false
	}
}

// endStatus is the status a Connect handler ends its stream with once the
// conn is closed.
func (c *conn) endStatus() error {
	if !c.closed() {
		<-c.doneChan()
	}
	return c.status.Err()
}

// PeerInfo returns the remote address and, over TLS, the connection state; on
// the server side with mTLS, PeerCertificates[0] is the client's verified
// certificate.
func (c *conn) PeerInfo() channel.PeerInfo { return c.peer }

func (c *conn) closed() bool {
	return c.isClosed.Load()
}

// translate maps a stream error; once the conn is closed locally every error
// is ErrClosed, whatever gRPC made of the cancellation.
func (c *conn) translate(op string, err error) error {
	if c.closed() {
		return fmt.Errorf("grpcchannel: %s %s: %w", c.side(), op, channel.ErrClosed)
	}
	return translate(c.side()+" "+op, err)
}

// peerInfo extracts the peer's address and TLS state from a stream context.
func peerInfo(ctx context.Context) channel.PeerInfo {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return channel.PeerInfo{}
	}
	var info channel.PeerInfo
	if p.Addr != nil {
		info.Addr = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		state := ti.State
		info.TLS = &state
	}
	return info
}
