package grpcchannel

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/exchangekit/exchange/channel"
)

// Defaults of ServerLimits (docs/operations.md, "Limits before HELLO";
// docs/decisions/0014-pre-hello-limits.md).
//
// A connector needs one connection and, on it, one Connect stream (two for a
// moment while it replaces a broken stream), plus the odd health check; 16
// streams per connection leave room for that and for services sharing the
// port, while keeping what one connection can pin small. The caps on
// connections and handshakes per node bound the memory a flood can take
// (about 8 KiB per pending handshake after this change, see the decision
// record); the caps per source leave headroom for a site of connectors behind
// one NAT address reconnecting at once, which is refused with
// RESOURCE_EXHAUSTED and retried with backoff. Over the node's limit, a
// stream waits in line for a place (HandshakeQueueWait) if the line should
// serve it in time, and is refused the same way otherwise.
//
// DefaultMaxConnections is only the fallback of DefaultServerLimits when the
// process's file-descriptor limit cannot be read (not Unix): the default cap
// on connections is derived from that limit (ConnectionCapForFDLimit).
const (
	DefaultMaxConcurrentStreams    = 16
	DefaultMaxConnections          = 10000
	DefaultMaxConnectionsPerSource = 1000
	DefaultMaxHandshakes           = 4000
	DefaultMaxHandshakesPerSource  = 100
	DefaultHandshakeTimeout        = 5 * time.Second
	DefaultConnectionTimeout       = 5 * time.Second
	DefaultMaxConnectionIdle       = 5 * time.Minute
	// The handshake queue (queue.go; decision 0044): on by default since
	// bench/scale showed it pays (decision 0054). 4 s leaves a connector's
	// 10 s HELLO timeout, which runs from its dial, 6 s for the rest.
	DefaultHandshakeQueueWait  = 4 * time.Second
	DefaultMaxQueuedHandshakes = 16000
)

// ServerLimits bounds what clients can hold on a Server before their channel
// is established, so that streams and connections that never say HELLO cost
// little and go away soon. A zero field keeps its default; a negative one
// turns that limit off.
//
// A source is the client's IP address, or its /64 prefix for IPv6
// (channel.PeerInfo.Source). A handshake is a Connect stream from the moment
// its handler starts until the controller has accepted its HELLO
// (channel.AcceptHello marks it complete) or the stream ends: it includes
// streams waiting for Accept and HELLOs being authenticated.
type ServerLimits struct {
	// MaxConcurrentStreams is the HTTP/2 limit on streams open at once on one
	// connection (gRPC's MaxConcurrentStreams). Default 16.
	MaxConcurrentStreams int
	// MaxConnections bounds the connections open on the Server at once, and
	// MaxConnectionsPerSource those from one source. They apply to
	// connections accepted by Serve (not to a GRPCServer served directly).
	// Defaults: MaxConnections is derived from the process's file-descriptor
	// limit at start (ConnectionCapForFDLimit: 19,000 at 20,000 descriptors,
	// so that the management port, raft, gossip and the data files keep
	// theirs), 10,000 where it cannot be read; MaxConnectionsPerSource 1,000.
	//
	// A TCP connection over either is refused at once with a retry hint: it
	// is served just long enough for its first RPC (TLS and the HTTP/2
	// preface included), which fails with RESOURCE_EXHAUSTED, the message
	// "limit exceeded: … retry after 5s" and a google.rpc.RetryInfo detail
	// (Dial fails with an error wrapping ErrUnavailable and
	// channel.ErrLimitExceeded), and the connection is then closed (within
	// 2 s in any case). At most 64 such refusals are served at once; beyond
	// that, and for connections that are not TCP, the connection is closed
	// as soon as it is accepted and the client sees UNAVAILABLE.
	MaxConnections          int
	MaxConnectionsPerSource int
	// MaxHandshakes bounds the handshakes in flight on the Server, and
	// MaxHandshakesPerSource those from one source. A Connect stream over
	// either is refused at once with RESOURCE_EXHAUSTED (Dial fails with an
	// error wrapping ErrUnavailable and channel.ErrLimitExceeded), unless
	// the handshake queue (HandshakeQueueWait) takes it in line. Defaults
	// 4,000 and 100.
	MaxHandshakes          int
	MaxHandshakesPerSource int
	// HandshakeQueueWait turns on the handshake queue (decision 0044) when
	// positive: a Connect stream over MaxHandshakes (within its source's
	// limit) waits, in arrival order, for a place to free up instead of
	// being refused, as long as it should get one within this budget at the
	// rate places have freed up over the last 2 s (at least MaxHandshakes
	// per budget before any has freed up). Its gRPC handler waits; the
	// client's Dial waits for the server's header. A stream that would wait
	// longer is refused at once, and one still queued when its budget has
	// passed is refused then, with the same RESOURCE_EXHAUSTED as at the
	// limit. A queued stream counts against its source's
	// MaxHandshakesPerSource. Keep it well under the connectors' HELLO
	// timeout (10 s from the dial). Default 4 s (decision 0054); negative
	// turns the queue off (refused at once at the limit); it needs a
	// HandshakeTimeout and a MaxHandshakes.
	HandshakeQueueWait time.Duration
	// MaxQueuedHandshakes bounds the streams queued at once whatever the
	// rate (each holds a gRPC stream and its handler goroutine). Default
	// 16,000; negative: bounded by HandshakeQueueWait only.
	MaxQueuedHandshakes int
	// HandshakeTimeout is how long a Connect stream may stay silent: a
	// stream whose first frame (the HELLO) has not been received this long
	// after it opened is ended with DEADLINE_EXCEEDED. The rest of the
	// handshake (authentication, the reply) is bounded by the controller's
	// HelloTimeout. Default 5 s.
	HandshakeTimeout time.Duration
	// ConnectionTimeout bounds a new connection's TLS handshake and HTTP/2
	// preface (gRPC's ConnectionTimeout, whose own default is 120 s). Default
	// 5 s; negative leaves gRPC's default.
	ConnectionTimeout time.Duration
	// MaxConnectionIdle closes, with GOAWAY, a connection that has had no
	// stream for this long, counted from when it was established or its
	// last stream ended (gRPC keepalive's MaxConnectionIdle). A connector's
	// connection always carries its channel; its client reconnects by itself
	// when it next dials. Default 5 min: gRPC wakes every connection's
	// keepalive goroutine this often even when it carries a stream, so a
	// short value costs idle CPU on every live connection (5 s was a third of
	// the controller's idle CPU without health checks, decision 0028; 30 s
	// was 1.5–2 % of a core at 19,000 connections, decision 0052); the
	// connection caps, not this timer, bound what streamless connections can
	// hold.
	MaxConnectionIdle time.Duration
}

// DefaultServerLimits returns the defaults spelled out.
func DefaultServerLimits() ServerLimits {
	return ServerLimits{
		MaxConcurrentStreams:    DefaultMaxConcurrentStreams,
		MaxConnections:          defaultMaxConnections(),
		MaxConnectionsPerSource: DefaultMaxConnectionsPerSource,
		MaxHandshakes:           DefaultMaxHandshakes,
		MaxHandshakesPerSource:  DefaultMaxHandshakesPerSource,
		HandshakeQueueWait:      DefaultHandshakeQueueWait,
		MaxQueuedHandshakes:     DefaultMaxQueuedHandshakes,
		HandshakeTimeout:        DefaultHandshakeTimeout,
		ConnectionTimeout:       DefaultConnectionTimeout,
		MaxConnectionIdle:       DefaultMaxConnectionIdle,
	}
}

// WithLimits sets the Server's limits before HELLO. Zero fields keep their
// defaults (DefaultServerLimits); negative ones turn the limit off.
func WithLimits(l ServerLimits) ServerOption {
	return option{server: func(o *serverOptions) {
		d := &o.limits
		setInt(&d.MaxConcurrentStreams, l.MaxConcurrentStreams)
		setInt(&d.MaxConnections, l.MaxConnections)
		setInt(&d.MaxConnectionsPerSource, l.MaxConnectionsPerSource)
		setInt(&d.MaxHandshakes, l.MaxHandshakes)
		setInt(&d.MaxHandshakesPerSource, l.MaxHandshakesPerSource)
		setDuration(&d.HandshakeQueueWait, l.HandshakeQueueWait)
		setInt(&d.MaxQueuedHandshakes, l.MaxQueuedHandshakes)
		setDuration(&d.HandshakeTimeout, l.HandshakeTimeout)
		setDuration(&d.ConnectionTimeout, l.ConnectionTimeout)
		setDuration(&d.MaxConnectionIdle, l.MaxConnectionIdle)
	}}
}

func setInt(dst *int, v int) {
	if v != 0 {
		*dst = v
	}
}

func setDuration(dst *time.Duration, v time.Duration) {
	if v != 0 {
		*dst = v
	}
}

// ServerStats are counts of the Server's limits at one moment.
type ServerStats struct {
	// Connections open (accepted by Serve and not yet closed) and
	// handshakes in flight.
	Connections, Handshakes int
	// RefusedConnections and RefusedHandshakes count those refused by a
	// limit; SilentStreams those ended by HandshakeTimeout. All since
	// NewServer. RefusedHandshakes includes the handshake queue's refusals.
	RefusedConnections, RefusedHandshakes, SilentStreams uint64

	// The handshake queue (ServerLimits.HandshakeQueueWait): streams queued
	// now; of RefusedHandshakes, those refused because the queue would not
	// serve them within its budget (QueueFull) and those that waited out
	// their budget in it (QueueTimeouts); the streams it served (given a
	// place) and their total wait. Zero without a queue.
	Queued                   int
	QueueFull, QueueTimeouts uint64
	QueueServed              uint64
	QueueWait                time.Duration
}

// Stats returns the current counts.
func (s *Server) Stats() ServerStats {
	st := ServerStats{
		Connections:        s.connCount.count(),
		Handshakes:         s.handshakes.count(),
		RefusedConnections: s.refusedConns.Load(),
		RefusedHandshakes:  s.refusedHandshakes.Load(),
		SilentStreams:      s.silentStreams.Load(),
	}
	if q := s.handshakes.q; q != nil {
		st.Queued = s.handshakes.queued()
		st.QueueFull = q.full.Load()
		st.QueueTimeouts = q.timeouts.Load()
		st.QueueServed = q.served.Load()
		st.QueueWait = time.Duration(q.waited.Load())
	}
	return st
}

// gauge counts holders in total and per source, under a limit for each (≤ 0:
// none). Its zero value has no limits.
type gauge struct {
	what        string // "connections", "handshakes": for refusals
	max, perMax int
	full        error // the refusal at max

	mu    sync.Mutex
	total int            // places taken (queued streams are not counted)
	per   map[string]int // places taken and streams queued, by source
	q     *waitQueue     // nil: no queue (queue.go)
}

func newGauge(what string, max, perMax int) *gauge {
	return &gauge{what: what, max: max, perMax: perMax, per: map[string]int{},
		// At the node's limit the count is the limit: the refusal is one
		// error value, made once (a storm refuses thousands a second).
		full: fmt.Errorf("grpcchannel: %w: %d %s in flight on this node (limit %d)", channel.ErrLimitExceeded, max, what, max)}
}

// acquire counts one more holder from src, or returns an error wrapping
// channel.ErrLimitExceeded (and counts nothing) when a limit is reached.
func (g *gauge) acquire(src string) error {
	g.mu.Lock()
	if g.max > 0 && g.total >= g.max {
		g.mu.Unlock()
		return g.full
	}
	n := g.per[src]
	if g.perMax > 0 && n >= g.perMax {
		g.mu.Unlock()
		return g.perSourceFull(n, src)
	}
	g.total++
	g.per[src] = n + 1
	g.mu.Unlock()
	return nil
}

// perSourceFull is the refusal at src's limit, with n from src.
func (g *gauge) perSourceFull(n int, src string) error {
	return fmt.Errorf("grpcchannel: %w: %d %s in flight from %s (limit %d)", channel.ErrLimitExceeded, n, g.what, src, g.perMax)
}

// release undoes one acquire from src. With a queue, the place goes to the
// stream at its head, if any, instead (queue.go).
func (g *gauge) release(src string) {
	g.mu.Lock()
	g.unper(src)
	if g.q != nil {
		if w := g.freed(); w != nil {
			g.mu.Unlock()
			w.grant() // the place changes hands: total unchanged
			return
		}
	}
	g.total--
	g.mu.Unlock()
}

// unper takes one off src's count; g.mu held.
func (g *gauge) unper(src string) {
	if n := g.per[src] - 1; n > 0 {
		g.per[src] = n
	} else {
		delete(g.per, src)
	}
}

func (g *gauge) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// limitListener counts accepted connections under the gauge's limits and
// refuses those over them (refusals.refuse).
type limitListener struct {
	net.Listener
	conns    *gauge
	refused  *atomic.Uint64
	refusing *refusals
}

// Accept returns the next connection within the limits, or one over them
// that is served only to refuse its first RPC; other connections over them
// are closed and skipped.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := channel.PeerInfo{Addr: c.RemoteAddr().String()}.Source()
		if err := l.conns.acquire(src); err != nil {
			l.refused.Add(1)
			if rc := l.refusing.refuse(c, err); rc != nil {
				return rc, nil
			}
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.conns.release(src) }}, nil
	}
}

// limitedConn gives its place back when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Refusal of connections over the limits with a retry hint.
//
// Closing a connection at accept tells the client nothing it can act on (it
// sees UNAVAILABLE, as for a server that is down). Instead the connection is
// handed to gRPC like any other, registered as over the limit; the
// interceptors every Server installs (refusals.interceptors) fail every RPC on
// it with RESOURCE_EXHAUSTED and a retry hint, and the connection is closed
// shortly after its first refusal, or after overLimitLifetime whatever
// happens. Decision 0027.
const (
	// OverLimitRetryAfter is the retry hint of a refused connection: the
	// delay in the message ("retry after 5s") and in the RetryInfo detail.
	OverLimitRetryAfter = 5 * time.Second
	// maxRefusing bounds the connections over the limit served at once; they
	// hold a file descriptor each, out of the reserve the cap leaves.
	maxRefusing = 64
	// overLimitLifetime bounds how long a connection over the limit is kept,
	// and refusalLinger how long after its first refusal (time for the
	// status to reach the client before the close).
	overLimitLifetime = 2 * time.Second
	refusalLinger     = 200 * time.Millisecond
)

// refusals holds a Server's connections over the limits being served for
// their refusal, by local and remote address ("local|remote", unique among
// open TCP connections). n is their count: the interceptors look no further
// while it is zero.
type refusals struct {
	n     atomic.Int64
	mu    sync.Mutex
	conns map[string]*refusingConn
}

// refusingConn is a connection over the limits, served only to refuse.
type refusingConn struct {
	net.Conn
	owner  *refusals
	key    string
	reason error // the gauge's refusal
	once   sync.Once
	timer  *time.Timer
}

// refuse registers c, refused by the limits with reason, and returns it to
// be served; nil when c is not TCP or maxRefusing are already served.
func (r *refusals) refuse(c net.Conn, reason error) net.Conn {
	if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
		return nil
	}
	key := c.LocalAddr().String() + "|" + c.RemoteAddr().String()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) >= maxRefusing {
		return nil
	}
	if r.conns == nil {
		r.conns = make(map[string]*refusingConn)
	}
	rc := &refusingConn{Conn: c, owner: r, key: key, reason: reason}
	r.conns[key] = rc
	r.n.Add(1)
	rc.timer = time.AfterFunc(overLimitLifetime, func() { _ = rc.Close() })
	return rc
}

func (c *refusingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.timer.Stop()
		c.owner.mu.Lock()
		delete(c.owner.conns, c.key)
		c.owner.mu.Unlock()
		c.owner.n.Add(-1)
	})
	return err
}

// refusal returns the status for an RPC on a connection over the limits,
// found by the RPC's peer, and schedules that connection's close; nil for
// any other connection.
func (r *refusals) refusal(ctx context.Context) error {
	if r.n.Load() == 0 {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.LocalAddr == nil {
		return nil
	}
	key := p.LocalAddr.String() + "|" + p.Addr.String()
	r.mu.Lock()
	rc := r.conns[key]
	r.mu.Unlock()
	if rc == nil {
		return nil
	}
	rc.timer.Reset(refusalLinger)
	return overLimitStatus(rc.reason)
}

// overLimitStatus is RESOURCE_EXHAUSTED with reason, the retry hint
// (OverLimitRetryAfter) in the message and a RetryInfo detail.
func overLimitStatus(reason error) error { return retryStatus(reason, OverLimitRetryAfter) }

// retryStatus is RESOURCE_EXHAUSTED with reason, "retry after" the hint in
// the message and a RetryInfo detail, which a Dialer turns into a
// *channel.LimitError.
func retryStatus(reason error, after time.Duration) error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("%v; retry after %v", reason, after))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(after)}); err == nil {
		st = d
	}
	return st.Err()
}

// retryHint returns the RetryInfo delay st carries, if any.
func retryHint(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			if after := ri.GetRetryDelay().AsDuration(); after > 0 {
				return after, true
			}
		}
	}
	return 0, false
}

// interceptors fail every RPC on a connection over the limits (refusal).
// They cost one atomic load per RPC otherwise.
func (r *refusals) interceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := r.refusal(ss.Context()); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := r.refusal(ctx); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
	}
}

// The default cap on connections, from the file-descriptor limit.

// FDReserve returns the file descriptors kept out of the connection cap for
// a process allowed nofile of them: 5 % of them, at least 256 (the
// management port and its clients, raft and gossip connections, bbolt and
// raft files, logs, the refusals over the limit, the outgoing links of a
// cluster). A process with at most 512 keeps half.
func FDReserve(nofile uint64) uint64 {
	if nofile <= 512 {
		return nofile - nofile/2
	}
	return max(256, nofile/20)
}

// ConnectionCapForFDLimit returns the default MaxConnections for a process
// allowed nofile file descriptors: nofile minus FDReserve(nofile), at least
// 1. 20,000 descriptors give 19,000; 1,024 give 768; 1,048,576 give 996,148.
func ConnectionCapForFDLimit(nofile uint64) int {
	nofile = min(nofile, math.MaxInt32)
	return int(max(nofile-FDReserve(nofile), 1))
}

// FDLimit returns the process's file-descriptor limit (the soft
// RLIMIT_NOFILE, which the Go runtime raises to the hard limit at start on
// Linux and macOS), or false where there is none to read.
func FDLimit() (uint64, bool) { return fdLimit() }

// defaultMaxConnections is the default cap, derived once per process.
var defaultMaxConnections = sync.OnceValue(func() int {
	if n, ok := fdLimit(); ok {
		return ConnectionCapForFDLimit(n)
	}
	return DefaultMaxConnections
})
