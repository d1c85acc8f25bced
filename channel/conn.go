package channel

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"

	"github.com/exchangekit/exchange/command"
)

// Frame is one message on a Conn. Exactly one of Command and Reply is set.
type Frame struct {
	Command *command.Command
	Reply   *command.Reply
}

// Clone returns a deep copy of f.
func (f *Frame) Clone() *Frame {
	if f == nil {
		return nil
	}
	return &Frame{Command: f.Command.Clone(), Reply: f.Reply.Clone()}
}

// Validate reports a frame that breaks the protocol: neither or both kinds set,
// a command without id or type, a reply without command id. The error wraps
// ErrMalformedFrame.
func (f *Frame) Validate() error {
	switch {
	case f == nil || (f.Command == nil && f.Reply == nil):
		return malformed("frame carries neither a command nor a reply")
	case f.Command != nil && f.Reply != nil:
		return malformed("frame carries both a command and a reply")
	case f.Command != nil && f.Command.ID == "":
		return malformed("command of type %q has no id", f.Command.Type)
	case f.Command != nil && f.Command.Type == "":
		return malformed("command %q has no type", f.Command.ID)
	case f.Reply != nil && f.Reply.CommandID == "":
		return malformed("reply of type %q has no command id", f.Reply.Type)
	}
	return nil
}

// Conn is an ordered, message-oriented, bidirectional pipe of Frames: the seam
// between the one Channel implementation and its transports (the embedded and
// gRPC twins). It is implemented by transports, not by users.
//
// Send and Recv may each be called by one goroutine at a time, concurrently
// with each other (the gRPC stream rule); Channel guarantees that by owning
// exactly one reader and one writer goroutine. Close may be called at any time,
// from any goroutine, more than once; it unblocks Send and Recv, which then
// fail with an error wrapping ErrClosed. When the peer closes, Recv returns the
// frames the peer sent before closing, then fails with an error wrapping
// ErrClosed, and Send fails with an error wrapping ErrClosed too. Send blocks
// while the peer does not read (back-pressure). A frame the transport cannot
// decode makes Recv fail with an error wrapping ErrMalformedFrame, and a frame
// larger than the transport's limit makes Send fail with an error wrapping
// ErrFrameTooLarge, without sending anything and leaving the Conn usable.
// Send does not keep f after it returns; the receiver gets its own copy.
//
// The conformance suite channel/channeltest.TestConn checks all of this.
type Conn interface {
	Send(f *Frame) error
	Recv() (*Frame, error)
	Close() error
}

// BatchSender is implemented by Conns that can carry several frames in one
// transport message (the gRPC twin sends them as one Frame with the batch
// kind). A Channel uses it only when Config.Coalesce is set, which must be
// only when the peer announced the "batch" capability in HELLO
// (docs/protocol.md §3.2).
//
// SendBatch sends fs, in order, so that the peer's Recv returns them one at a
// time exactly as if each had been sent by Send. It follows Send's rules: it
// is called by the single writer, never concurrently with Send; it blocks
// while the peer does not read; it does not keep fs or its frames after it
// returns. It is all or nothing for errors of the frames themselves: when the
// batch is over the transport's frame limit (an error wrapping
// ErrFrameTooLarge) or one of its frames cannot be encoded (ErrMalformedFrame),
// it sends nothing and the Conn stays usable, so that the caller can send the
// frames one at a time and fail only the faulty one. Any other error is a
// transport failure, as for Send.
type BatchSender interface {
	SendBatch(fs []*Frame) error
}

// Listener accepts Conns on the controller side.
type Listener interface {
	// Accept waits for the next Conn. It fails with an error wrapping
	// ErrClosed once the listener is closed, or with ctx's error.
	Accept(ctx context.Context) (Conn, error)
	// Close stops the listener; Conns already accepted stay open.
	Close() error
}

// Dialer opens Conns on the connector side.
type Dialer interface {
	Dial(ctx context.Context) (Conn, error)
}

// DialerFunc adapts a function to Dialer.
type DialerFunc func(ctx context.Context) (Conn, error)

// Dial calls f(ctx).
func (f DialerFunc) Dial(ctx context.Context) (Conn, error) { return f(ctx) }

// PeerInfo describes the remote end of a Conn, for authentication and logs.
type PeerInfo struct {
	// Addr is the peer's network address, or a descriptive name for in-process
	// peers ("embedded").
	Addr string
	// TLS is the TLS connection state when the transport is TLS, else nil. With
	// mTLS, TLS.PeerCertificates[0] is the client's verified certificate.
	TLS *tls.ConnectionState
}

// PeerInfoer is implemented by Conns that know their peer. Controllers use it
// for authentication by certificate.
type PeerInfoer interface {
	PeerInfo() PeerInfo
}

// Source returns the key under which limits per source count this peer: the
// IP address of Addr, reduced to its /64 prefix for IPv6 (one host or one
// site usually holds a whole /64, so counting single IPv6 addresses would let
// one host spread itself over 2⁶⁴ sources). An Addr that is not host:port or
// an IP address (an in-process peer) is returned as it is.
func (p PeerInfo) Source() string {
	host := p.Addr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return p.Addr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}

// HandshakeCompleter is implemented by server-side Conns whose transport
// counts the streams still in their handshake (grpcchannel's Server bounds
// them, and closes streams that stay silent). AcceptHello calls
// HandshakeComplete once it has sent a SUCCEEDED reply: from then on the
// Conn is an established channel and no longer counts against the limits on
// handshakes. It must be safe to call more than once and concurrently with
// Send and Recv.
type HandshakeCompleter interface {
	HandshakeComplete()
}

// Peer returns c's PeerInfo, or the zero PeerInfo if c does not know it.
func Peer(c Conn) PeerInfo {
	if p, ok := c.(PeerInfoer); ok {
		return p.PeerInfo()
	}
	return PeerInfo{}
}

// BatchReporter is implemented by Conns whose transport shows where one
// message carried several frames (the gRPC twin; the embedded one does not
// batch on the wire). AcceptHello uses it to refuse a HELLO that did not come
// alone: the HELLO and its reply are always single frames
// (docs/protocol.md §3.2).
type BatchReporter interface {
	// RecvBatched reports whether the frame Recv returned last arrived in a
	// batch. Only the goroutine that calls Recv may call it.
	RecvBatched() bool
}

// ReaderHost is implemented by Conns whose transport already dedicates a
// goroutine to the stream that would otherwise only wait for the stream to
// end (the gRPC server's Connect handler). New hands such a Conn the
// Channel's read loop, so that an idle Channel costs no goroutine of its
// own (decision 0021).
type ReaderHost interface {
	// HostReader runs loop on the transport's goroutine. It reports true
	// once that goroutine has taken loop (it runs it to the end, and loop
	// then returns only when Recv has failed, which takes a Close or the
	// stream's end), or false when it cannot host it (the stream is over
	// already): the caller then runs loop itself. While loop runs, Close must
	// still unblock Recv. It is called at most once per Conn.
	HostReader(loop func()) bool
}

// InlineReceiver is implemented by Conns that can hand a frame from the peer
// to the receiving Channel on the goroutine that sent it, instead of
// queueing it for Recv: the embedded twin, whose two ends are in one
// process. What the reader does with a frame never blocks when the frame is
// a reply (it completes the call waiting for it) or a command admitted
// within the bounds (it hands it to a handler goroutine), so the sending
// goroutine can do it while the reader sleeps. That saves the reader's
// wake-up: a goroutine switch for each direction of a round trip (decision
// 0043). The handler still never runs on the goroutine that reads, nor on
// the sender's: it runs on a handler goroutine, as always.
//
// New calls ReceiveInline once, before it starts reading, with the
// Channel's frame path. From then on the Conn may, instead of returning a
// frame from Recv, call take with it, on the peer's sending goroutine,
// under three conditions that make the two indistinguishable for the
// Channel:
//   - the frame is the receiver's own copy, as Recv would return it (the two
//     ends share no memory);
//   - the reader waits in Recv and nothing is queued before the frame: what
//     was received before it has been taken by the reader already;
//   - no other frame is received, by Recv or take, before take returns:
//     take runs as one step of the reader, in order.
//
// take does not block. It reports false when it leaves the frame to the
// reader (one that needs an answer from the reader, or a command beyond the
// bounds, whose busy reply may wait for room to write): the Conn then queues
// it for Recv as usual.
type InlineReceiver interface {
	ReceiveInline(take func(*Frame) bool)
}
