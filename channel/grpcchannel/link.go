package grpcchannel

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/exchangekit/exchange/channel"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// LinkServiceName is the full name of the node-to-node link service
// (exchange.v1.Cluster, method Link), served on the same port as ServiceName.
const LinkServiceName = "exchange.v1.Cluster"

// Links returns the listener for node-to-node links: it yields every
// exchange.v1.Cluster/Link stream as a channel.Conn, of the same kind and with
// the same behaviour (frame limits, batches, close statuses) as the Conns of
// Connect streams, which only Accept yields. The first call enables the
// Cluster service; until then every Link stream is refused with
// UNIMPLEMENTED, so a node that is not clustered accepts no node links. Later
// calls return the same listener.
//
// The listener's Close refuses Link streams not yet accepted and later ones
// with UNAVAILABLE and makes its Accept fail with channel.ErrClosed; links
// already accepted stay open. The two listeners are independent: Close on the
// Server does not close the links listener, nor the other way round. Stop and
// GracefulStop close both.
func (s *Server) Links() channel.Listener {
	s.links.enable()
	return s.links
}

// links is the Server's listener for Link streams and the implementation of
// the Cluster service.
type links struct {
	pb.UnimplementedClusterServer

	maxFrameBytes int

	enableOnce sync.Once
	enabled    chan struct{} // closed by enable
	conns      chan *conn    // Link handlers → Accept
	done       chan struct{} // closed by Close
	closeOnce  sync.Once
}

var (
	_ channel.Listener = (*links)(nil)
	_ pb.ClusterServer = (*links)(nil)
)

func newLinks(maxFrameBytes int) *links {
	return &links{
		maxFrameBytes: maxFrameBytes,
		enabled:       make(chan struct{}),
		conns:         make(chan *conn),
		done:          make(chan struct{}),
	}
}

func (l *links) enable() { l.enableOnce.Do(func() { close(l.enabled) }) }

// Accept waits for the next Link stream and returns it as a Conn. It fails
// with an error wrapping channel.ErrClosed once the listener is closed, or
// with ctx's error.
func (l *links) Accept(ctx context.Context) (channel.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("grpcchannel: accept link: %w", ctx.Err())
	case <-l.done:
		return nil, fmt.Errorf("grpcchannel: accept link: %w", channel.ErrClosed)
	}
}

// Close stops accepting links (see Server.Links). It is idempotent.
func (l *links) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

// Link implements the Cluster service like Server.Connect implements the
// Exchange service, for the links listener; it refuses the stream with
// UNIMPLEMENTED while links are not enabled.
func (l *links) Link(st pb.Cluster_LinkServer) error {
	select {
	case <-l.enabled:
	default:
		return status.Error(codes.Unimplemented, "grpcchannel: this node does not accept node links (not clustered)")
	}
	return serveStream(st, l.maxFrameBytes, l.conns, l.done, "grpcchannel: node is not accepting links")
}

// serveStream runs the handler of one server stream: it sends the accepted
// header, hands the stream as a Conn to whoever receives from conns, and then
// blocks until the Conn is closed, because returning from the handler ends
// the stream. It ends with the status given to CloseWithError, or with
// UNAVAILABLE and refusal as message when done is closed before the stream
// was taken.
func serveStream(st grpc.BidiStreamingServer[pb.Frame, pb.Frame], maxFrameBytes int, conns chan<- *conn, done <-chan struct{}, refusal string) error {
	ctx := st.Context()
	select {
	case <-done:
		return status.Error(codes.Unavailable, refusal)
	default:
	}
	if err := st.SendHeader(acceptedHeader); err != nil {
		return err
	}
	c := newConn(st, false, maxFrameBytes, nil)
	select {
	case conns <- c:
	case <-done:
		return status.Error(codes.Unavailable, refusal)
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	select {
	case <-c.doneChan():
		return c.status.Err()
	case <-ctx.Done():
		// The client went away, keepalive failed, or the server stopped: the
		// stream is over. The owner learns it from Recv or Send.
		return status.FromContextError(ctx.Err()).Err()
	}
}

// WithLinkService makes a Dialer open node-to-node links
// (exchange.v1.Cluster/Link streams, accepted by Server.Links) instead of
// Connect streams. Everything else is unchanged: TLS, keepalive, frame
// limits and Dial's fail-fast connectivity handling. A Dial to a node that
// does not accept links (not clustered, or an older version) fails with an
// error wrapping channel.ErrClosed that says Unimplemented; to a node that
// has closed its links listener, with an error wrapping ErrUnavailable.
func WithLinkService() DialOption {
	return option{dial: func(o *dialOptions) { o.link = true }}
}

// openFunc opens one stream of the service a Dialer dials.
type openFunc func(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[pb.Frame, pb.Frame], error)

// streamOpener returns the function that opens a Link stream on cc when link
// is set, a Connect stream otherwise.
func streamOpener(cc grpc.ClientConnInterface, link bool) openFunc {
	if link {
		return pb.NewClusterClient(cc).Link
	}
	return pb.NewExchangeClient(cc).Connect
}

// LinkTransport carries node-to-node links over gRPC: the Link streams of a
// Server, and dialers of other nodes' Link service with the given options
// (TLS, keepalive; WithLinkService is added). It has the method set of
// cluster.LinkTransport.
type LinkTransport struct {
	srv  *Server
	opts []DialOption
}

// NewLinkTransport returns the link transport of srv, dialing with opts.
func NewLinkTransport(srv *Server, opts ...DialOption) *LinkTransport {
	return &LinkTransport{srv: srv, opts: append(slices.Clone(opts), WithLinkService())}
}

// Listener returns the Server's link listener (Server.Links).
func (t *LinkTransport) Listener() channel.Listener { return t.srv.Links() }

// Dialer returns a dialer of Link streams to the node at addr.
func (t *LinkTransport) Dialer(addr string) (channel.Dialer, error) {
	return NewDialer(addr, t.opts...)
}
