package grpcchannel

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/exchangekit/exchange/channel"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// ServiceName is the full name of the Exchange gRPC service, as registered
// with the health service.
const ServiceName = "exchange.v1.Exchange"

// Server is the controller side of the gRPC twin: a gRPC server that serves
// the Exchange service and hands each Connect stream to Accept as a
// channel.Conn. It is a channel.Listener.
//
// The standard health service (grpc.health.v1.Health) is registered too: it
// reports SERVING for "" and for ServiceName from NewServer until Close.
// The Cluster service (node-to-node links) is registered too, and refuses
// every stream until Links is called. Other services may share the port
// through GRPCServer.
type Server struct {
	pb.UnimplementedExchangeServer

	gs            *grpc.Server
	health        *health.Server
	maxFrameBytes int
	limits        ServerLimits
	refusing      *refusals // connections over the limits, served only to refuse

	connCount         *gauge // connections accepted by Serve
	handshakes        *gauge // Connect streams not yet past HELLO
	refusedConns      atomic.Uint64
	refusedHandshakes atomic.Uint64
	silentStreams     atomic.Uint64

	conns     chan *conn                         // Connect handlers → Accept
	serve     atomic.Pointer[func(channel.Conn)] // HandleConns's function, run by the Connect handlers
	done      chan struct{}                      // closed by Close
	closeOnce sync.Once

	links *links // the Cluster service and its listener (link.go)
}

var (
	_ channel.Listener  = (*Server)(nil)
	_ pb.ExchangeServer = (*Server)(nil)
)

// NewServer returns a Server configured by opts. It does not listen: call
// Serve with a net.Listener (or serve GRPCServer yourself).
//
// Defaults: no TLS (use WithTLS), keepalive pings after 20 s of silence with a
// 5 s timeout, client pings tolerated every 5 s even without streams, frames up to
// 4 MiB each way, flow-control windows of FlowWindow, no HPACK dynamic table
// for the headers clients send (decision 0053), and the limits before HELLO
// of DefaultServerLimits (see WithLimits).
func NewServer(opts ...ServerOption) *Server {
	o := defaultServerOptions()
	for _, opt := range opts {
		opt.applyServer(&o)
	}
	if o.maxFrameBytes <= 0 {
		o.maxFrameBytes = channel.DefaultMaxFrameBytes
	}
	l := o.limits
	kp := keepalive.ServerParameters{
		Time:    o.keepalive.Time,
		Timeout: o.keepalive.Timeout,
	}
	if l.MaxConnectionIdle > 0 {
		kp.MaxConnectionIdle = l.MaxConnectionIdle
	}
	s := &Server{
		maxFrameBytes: o.maxFrameBytes,
		limits:        l,
		connCount:     newGauge("connections", l.MaxConnections, l.MaxConnectionsPerSource),
		handshakes:    newGauge("handshakes", l.MaxHandshakes, l.MaxHandshakesPerSource),
		conns:         make(chan *conn),
		done:          make(chan struct{}),
		links:         newLinks(o.maxFrameBytes),
	}
	if l.HandshakeQueueWait > 0 && l.MaxHandshakes > 0 && l.HandshakeTimeout > 0 {
		// The queue is served by the tap's places (queue.go), which need
		// the HandshakeTimeout's timer.
		s.handshakes.q = newWaitQueue(l.HandshakeQueueWait, l.MaxQueuedHandshakes, l.MaxHandshakes)
	}
	gopts := []grpc.ServerOption{
		grpc.InTapHandle(s.tap),
		grpc.KeepaliveParams(kp),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             o.keepalive.MinTime,
			PermitWithoutStream: true,
		}),
		grpc.MaxRecvMsgSize(o.maxFrameBytes),
		grpc.MaxSendMsgSize(o.maxFrameBytes),
		grpc.StaticStreamWindowSize(FlowWindow),
		grpc.StaticConnWindowSize(FlowWindow),
		// No HPACK dynamic table for what clients send (decision 0053): a
		// connection carries one long-lived stream, or a few, so the table
		// compresses almost nothing, while its entries (about 1 KiB) stay
		// for the connection's life.
		grpc.HeaderTableSize(0),
		serverCodec(), // Frames without reflection, protobuf for the rest (codec.go)
	}
	if l.MaxConcurrentStreams > 0 {
		gopts = append(gopts, grpc.MaxConcurrentStreams(uint32(min(l.MaxConcurrentStreams, math.MaxUint32))))
	}
	if l.ConnectionTimeout > 0 {
		gopts = append(gopts, grpc.ConnectionTimeout(l.ConnectionTimeout))
	}
	if o.tls != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	refusing := &refusals{}
	gopts = append(gopts, refusing.interceptors()...) // connections over the limits (limits.go)
	gopts = append(gopts, o.grpcOpts...)

	s.refusing = refusing
	s.gs = grpc.NewServer(gopts...)
	s.health = health.NewServer()
	pb.RegisterExchangeServer(s.gs, s)
	pb.RegisterClusterServer(s.gs, s.links)
	healthpb.RegisterHealthServer(s.gs, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// GRPCServer returns the underlying gRPC server, to register other services
// on the same port before Serve.
func (s *Server) GRPCServer() *grpc.Server { return s.gs }

// Serve accepts connections on lis until Stop or GracefulStop; it returns nil
// after them, or the error that made it stop (see grpc.Server.Serve).
// Connections over the limits on connections (ServerLimits) are closed as
// soon as they are accepted.
//
// To count connections Serve wraps each one; the wrapper implements gRPC's
// optional read interface (readyConn), so that an idle plaintext connection
// still holds no read buffer, as a bare *net.TCPConn does (gRPC's framer
// read-buffer pooling; 32 KiB per idle connection otherwise). TLS
// connections are not affected (gRPC cannot pool through TLS anyway). With
// both connection limits off (negative) connections are not wrapped.
func (s *Server) Serve(lis net.Listener) error {
	if s.limits.MaxConnections <= 0 && s.limits.MaxConnectionsPerSource <= 0 {
		return s.gs.Serve(lis)
	}
	return s.gs.Serve(readyListener{&limitListener{Listener: lis, conns: s.connCount, refused: &s.refusedConns, refusing: s.refusing}})
}

// readyListener gives the connections of the listener it wraps, which wraps
// its own, gRPC's read-buffer pooling back (see readyConn).
type readyListener struct{ *limitListener }

func (l readyListener) Accept() (net.Conn, error) {
	c, err := l.limitListener.Accept()
	if err != nil {
		return nil, err
	}
	if lc, ok := c.(*limitedConn); ok {
		return withReadOnReady(c, lc.Conn), nil
	}
	return c, nil
}

// Accept waits for the next Connect stream and returns it as a Conn. It fails
// with an error wrapping channel.ErrClosed once the Server is closed, or with
// ctx's error.
func (s *Server) Accept(ctx context.Context) (channel.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("grpcchannel: accept: %w", ctx.Err())
	case <-s.done:
		return nil, fmt.Errorf("grpcchannel: accept: %w", channel.ErrClosed)
	}
}

// HandleConns makes the Connect handler of every later stream hand its Conn
// to serve, on the handler's own goroutine, instead of to Accept: serve runs
// the handshake (HELLO) and makes the Conn's Channel, and returns; the
// handler goroutine, which would otherwise only wait for the Conn to close,
// then runs the Channel's read loop (channel.ReaderHost). A connection then
// costs its owner no goroutine even during its handshake (decision 0048).
//
// serve must make the Conn's Channel, if any, before it returns (a
// HostReader call after that reports false: the Channel runs a reader of
// its own), and must not close that Channel and wait for it (Channel.Close
// waits for the read loop, which runs once serve has returned); it may
// close the Conn, with a status (CloseWithError), also while it is blocked
// in the Conn's Recv on the same goroutine. A serve that returns without
// hosting a read loop leaves the handler waiting until the Conn is closed,
// as Accept's caller would. Streams taken by Accept before stay there, and
// so does every stream of a gRPC transport that cannot end a stream from
// another goroutine (never the case with grpc.Server).
func (s *Server) HandleConns(serve func(channel.Conn)) {
	s.serve.Store(&serve)
}

// Close stops accepting channels: pending and later Accept calls fail with
// channel.ErrClosed, Connect streams not yet accepted and new ones are refused
// with UNAVAILABLE, and the health service turns NOT_SERVING. Conns already
// accepted stay open, and the gRPC server keeps serving (other services, and
// the health status); Stop or GracefulStop shut it down. Close is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.health.Shutdown()
	})
	return nil
}

// GracefulStop closes the Server and its links listener, stops listening, and waits until every
// accepted Conn has been closed by its owner (for example after GOOD_BYE) and
// every other RPC has finished.
func (s *Server) GracefulStop() {
	_ = s.Close()
	_ = s.links.Close()
	s.gs.GracefulStop()
}

// Stop closes the Server, its links listener and the gRPC server at once: every connection is
// closed and the Recv and Send of every accepted Conn fail with
// channel.ErrClosed.
func (s *Server) Stop() {
	_ = s.Close()
	_ = s.links.Close()
	s.gs.Stop()
}

// acceptedHeader is sent at the start of every Connect stream so that the
// client's Dial knows the server took the stream (and learns its peer).
var acceptedHeader = metadata.Pairs("exchange-stream", "v1")

// Connect implements the Exchange service: it wraps the stream in a Conn,
// hands it to Accept, and then blocks until the Conn is closed, because
// returning from the handler ends the stream. It ends with the status given
// to CloseWithError, UNAVAILABLE when the Server is closed before Accept took
// the stream, RESOURCE_EXHAUSTED at once when the limits on handshakes are
// reached, or DEADLINE_EXCEEDED when the stream sends nothing within the
// HandshakeTimeout.
func (s *Server) Connect(st pb.Exchange_ConnectServer) error {
	c, loop, err := s.connect(st)
	if loop == nil {
		return err
	}
	// The Channel's read loop (channel.ReaderHost), run from this small
	// frame rather than connect's large one, so that the goroutine's stack
	// stays as small as a raw handler's: loop returns once Recv failed, and
	// the conn is closed by then.
	loop()
	return c.endStatus()
}

// growStackBytes is the frame growStack asks for: with the few frames of
// gRPC's below connect (about 1.5 KiB), it takes a handler's stack, which
// gRPC starts at the runtime's adaptive size (2 or 4 KiB), to 8 KiB in one
// step, and never past it.
const growStackBytes = 3 << 10

// growStack grows the handler's stack to the 8 KiB a handshake needs (and a
// hosted read loop keeps, as a raw gRPC handler parked in Recv does) while
// the goroutine is shallow. The runtime copies a stack frame by frame when
// it grows, and the handshake's deepest point (gRPC's SendHeader, 15 frames
// down) is where the copy would otherwise happen: in a registration storm
// that copy was 8 % of the controller's CPU (docs/benchmarks.md, "Eighth
// pass"). connect calls it once the stream has its handshake place.
//
//go:noinline
func growStack() {
	var frame [growStackBytes]byte
	growStackSink(&frame)
}

//go:noinline
func growStackSink(*[growStackBytes]byte) {}

// connect is Connect until the stream ends or the Channel over it hands
// this goroutine its read loop: then it returns the loop to run.
func (s *Server) connect(st pb.Exchange_ConnectServer) (*conn, func(), error) {
	ctx := st.Context()
	a, _ := ctx.Value(admissionKey{}).(*admission) // its stream's context (tap), not the handler's
	if a != nil && a.w != nil {
		// Queued by the tap: wait for a place (queue.go).
		if err := s.awaitPlace(ctx, a); err != nil {
			return nil, nil, err
		}
	}
	if s.isClosed() {
		return nil, nil, status.Error(codes.Unavailable, "grpcchannel: server is not accepting channels")
	}
	growStack() // after the line: a queued stream's handler waits on a small stack
	// gRPC's transport stream ends the stream with a status from any
	// goroutine (it cancels the stream's context too), which a Close needs
	// while this goroutine hosts the read loop, blocked in Recv.
	end, _ := grpc.ServerTransportStreamFromContext(ctx).(streamEnder)
	c := newConn(st, false, s.maxFrameBytes, end)
	if a == nil || a.unplaced {
		// A server whose tap handle is not ours (a gRPC option of the
		// caller's), or without a HandshakeTimeout: the stream takes its
		// place among the handshakes here.
		src := c.peer.Source()
		if err := s.acquireHandshake(src); err != nil {
			return nil, nil, err
		}
		a = s.newAdmission(src)
	}
	if !a.claim(c) {
		// Its HandshakeTimeout passed before this handler ran: the place is
		// given back already.
		return nil, nil, status.Error(codes.DeadlineExceeded, fmt.Sprintf("grpcchannel: %v: no HELLO within %v", errSilent, s.limits.HandshakeTimeout))
	}
	c.handshakeDone = a.release
	defer c.HandshakeComplete() // a stream that ends before HELLO no longer counts either, and its timer stops
	if err := st.SendHeader(acceptedHeader); err != nil {
		return nil, nil, err
	}
	if serve := s.serve.Load(); serve != nil && c.end != nil {
		return s.serveHere(ctx, c, *serve)
	}
	c.host = make(chan func())
	done := c.doneChan()
	closing := s.done
	for accepted := false; ; {
		var handoff chan<- *conn
		if !accepted {
			handoff = s.conns
		}
		select {
		case handoff <- c:
			accepted = true
		case loop := <-c.host:
			c.host = nil // used once; HostReader is done with it
			return c, loop, nil
		case <-done:
			return nil, nil, c.status.Err()
		case <-closing:
			if !accepted {
				return nil, nil, status.Error(codes.Unavailable, "grpcchannel: server is not accepting channels")
			}
			closing = nil // Close does not end accepted streams
		case <-ctx.Done():
			if c.closed() { // Close cancels the stream's context too
				return nil, nil, c.status.Err()
			}
			// The client went away, keepalive failed, or the server stopped: the
			// stream is over. The owner learns it from Recv or Send.
			return nil, nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// serveHere is connect for a Server with HandleConns: serve runs on this
// goroutine, and the read loop of the Channel it made (HostReader) is
// returned, to run next.
func (s *Server) serveHere(ctx context.Context, c *conn, serve func(channel.Conn)) (*conn, func(), error) {
	c.hosting.Store(hostServe)
	serve(c)
	c.hosting.CompareAndSwap(hostServe, hostNone)
	if loop := c.loop; loop != nil {
		c.loop = nil
		return c, loop, nil
	}
	select {
	case <-c.doneChan():
		return nil, nil, c.status.Err()
	case <-ctx.Done():
		if c.closed() {
			return nil, nil, c.status.Err()
		}
		return nil, nil, status.FromContextError(ctx.Err()).Err()
	}
}

// admissionKey is the context key of a Connect stream's admission.
type admissionKey struct{}

// tap is the server's tap handle, which gRPC runs for every new stream before
// it starts the stream's handler. A Connect stream takes its place among the
// handshakes in flight here (acquireHandshake), or is refused here: a refusal, the
// commonest event of a fleet's simultaneous start, then costs gRPC no handler
// goroutine, no stream set-up and no status written through the handler
// (BenchmarkRefusedHandshake). An admitted stream's context carries its
// admission, and nothing more: no cancellable context of ours (a Close ends
// a stream whose handler hosts the read loop through gRPC's transport
// stream, see connect), which saved a child context, the map of children it
// adds to gRPC's stream context, and two done channels, about 0.5 KiB per
// idle stream.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != pb.Exchange_Connect_FullMethodName {
		return ctx, nil
	}
	if s.isClosed() {
		return nil, status.Error(codes.Unavailable, "grpcchannel: server is not accepting channels")
	}
	if err := s.refusing.refusal(ctx); err != nil {
		return nil, err // a connection over the limits (the interceptors refuse its other RPCs)
	}
	if s.limits.HandshakeTimeout <= 0 {
		// No timer to give back the place of a stream whose handler never
		// runs: the handler takes it (connect), as with a tap of the caller's.
		return (&admission{s: s, unplaced: true}).stream(ctx), nil
	}
	// The place first: a refused stream costs no context.
	src := peerSource(ctx)
	var queued context.Context
	w, err := s.handshakes.enter(src, func() *inLine {
		// Over the node's limit, in line for a place (queue.go): called
		// with the gauge locked, before the waiter can be given one.
		a := &admission{s: s, src: src}
		a.w = &inLine{a: a, gone: ctx.Done(), ready: make(chan struct{})}
		a.w.timer = time.AfterFunc(s.limits.HandshakeQueueWait, a.w.expire)
		queued = a.stream(ctx)
		return a.w
	})
	if err != nil {
		s.refusedHandshakes.Add(1)
		return nil, errHandshakesFull(err)
	}
	if w != nil {
		return queued, nil
	}
	return s.newAdmission(src).stream(ctx), nil
}

// awaitPlace waits until the queued stream of a is given a place, and
// returns nil then; or it takes the stream out of the line and returns its
// status: RESOURCE_EXHAUSTED when its budget ran out (as at the limit),
// UNAVAILABLE when the server closed, or the end of the stream's context.
func (s *Server) awaitPlace(ctx context.Context, a *admission) error {
	w := a.w
	select {
	case <-w.ready:
	case <-ctx.Done():
	case <-s.done:
	}
	g := s.handshakes
	g.mu.Lock()
	granted, expired := w.granted, w.expired
	g.leave(w)
	g.mu.Unlock()
	a.w = nil // the waiter is done with; the admission lives as long as the stream
	if granted {
		return nil
	}
	w.timer.Stop() // out of the line (left here, expired, or passed over once its context ended)
	switch {
	case expired:
		return errHandshakesFull(g.full)
	case s.isClosed():
		return status.Error(codes.Unavailable, "grpcchannel: server is not accepting channels")
	default:
		return status.FromContextError(ctx.Err()).Err()
	}
}

// peerSource is the source (channel.PeerInfo.Source) of the peer of a
// stream's context: its address only, not the TLS state peerInfo copies.
func peerSource(ctx context.Context) string {
	var info channel.PeerInfo
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		info.Addr = p.Addr.String()
	}
	return info.Source()
}

// admission is a Connect stream's place among the handshakes in flight, from
// the tap handle (or its handler) until HELLO is done or the stream ends. Its
// timer bounds how long the stream may stay silent: it closes a silent stream
// whose handler has claimed it, and gives back the place of one whose handler
// never ran (gRPC may end a stream between its tap handle and its handler, or
// an interceptor of the caller's refuse it there), so that no place leaks.
//
// The admission is the stream's context too (stream): the context the tap
// handle gives gRPC, carrying itself as the value of admissionKey, which
// saves a context.WithValue per stream.
type admission struct {
	context.Context // the stream's, made by the tap: see stream

	s        *Server
	src      string
	w        *inLine                    // in the handshake queue, until its handler has waited for a place (queue.go)
	conn     *conn                      // set by claim before state becomes admClaimed
	timer    atomic.Pointer[time.Timer] // nil without a HandshakeTimeout, and once released
	state    atomic.Int32               // admPending, then admClaimed (by the handler) or admExpired (by the timer)
	released atomic.Bool                // release ran (80 bytes in all, kept for the stream's life: no sync.Once)
	unplaced bool                       // made by the tap without a place (no HandshakeTimeout to bound it): the handler takes one
}

// stream makes a the stream's context: ctx, carrying a as the value of
// admissionKey.
func (a *admission) stream(ctx context.Context) context.Context {
	a.Context = ctx
	return a
}

// Value returns a for admissionKey, else ctx's value.
func (a *admission) Value(key any) any {
	if _, ok := key.(admissionKey); ok {
		return a
	}
	return a.Context.Value(key)
}

const (
	admPending int32 = iota
	admClaimed
	admExpired
)

// acquireHandshake takes a place among the handshakes in flight for a
// stream from src, or refuses it with RESOURCE_EXHAUSTED.
func (s *Server) acquireHandshake(src string) error {
	if err := s.handshakes.acquire(src); err != nil {
		s.refusedHandshakes.Add(1)
		return errHandshakesFull(err)
	}
	return nil
}

// newAdmission records the place a stream from src took (acquireHandshake),
// with its HandshakeTimeout's timer running.
func (s *Server) newAdmission(src string) *admission {
	a := &admission{s: s, src: src}
	if d := s.limits.HandshakeTimeout; d > 0 {
		// A timer, not a goroutine.
		a.timer.Store(time.AfterFunc(d, a.expire))
	}
	return a
}

// errHandshakesFull is the status of a stream refused because the
// handshakes in flight are at their limit (err: the gauge's refusal, one
// value made once).
func errHandshakesFull(err error) error { return status.Error(codes.ResourceExhausted, err.Error()) }

// claim hands the admission to the handler's conn c; false if the timer
// expired it first.
func (a *admission) claim(c *conn) bool {
	a.conn = c
	return a.state.CompareAndSwap(admPending, admClaimed)
}

// expire is the admission's timer: a stream still silent at its
// HandshakeTimeout is closed (which ends its handler, or the read loop the
// handler hosts), or, when no handler claimed it, given up.
func (a *admission) expire() {
	if a.state.CompareAndSwap(admPending, admExpired) {
		a.release() // the handler, if it ever runs, ends the stream (claim fails)
		return
	}
	c := a.conn
	if !c.heard.Load() && !c.closed() {
		a.s.silentStreams.Add(1)
		_ = c.CloseWithError(fmt.Errorf("grpcchannel: %w: no HELLO within %v", errSilent, a.s.limits.HandshakeTimeout))
	}
}

// release gives the place back, once: past HELLO, or the stream is over.
func (a *admission) release() {
	if !a.released.CompareAndSwap(false, true) {
		return
	}
	a.s.handshakes.release(a.src)
	if t := a.timer.Swap(nil); t != nil {
		// Past HELLO: the timer's memory goes now, not at its expiry
		// (the stream's context keeps the admission for its life).
		t.Stop()
	}
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
