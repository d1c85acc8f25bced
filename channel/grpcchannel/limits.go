package grpcchannel

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
// RESOURCE_EXHAUSTED and retried with backoff rather than queued.
const (
	DefaultMaxConcurrentStreams    = 16
	DefaultMaxConnections          = 10000
	DefaultMaxConnectionsPerSource = 1000
	DefaultMaxHandshakes           = 1000
	DefaultMaxHandshakesPerSource  = 100
	DefaultHandshakeTimeout        = 5 * time.Second
	DefaultConnectionTimeout       = 5 * time.Second
	DefaultMaxConnectionIdle       = 5 * time.Second
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
	// MaxConnectionsPerSource those from one source. A connection over
	// either is closed as soon as it is accepted, before TLS; the client sees
	// UNAVAILABLE. They apply to connections accepted by Serve (not to a
	// GRPCServer served directly). Defaults 10,000 and 1,000.
	MaxConnections          int
	MaxConnectionsPerSource int
	// MaxHandshakes bounds the handshakes in flight on the Server, and
	// MaxHandshakesPerSource those from one source. A Connect stream over
	// either is refused at once with RESOURCE_EXHAUSTED (Dial fails with an
	// error wrapping ErrUnavailable and channel.ErrLimitExceeded). Defaults
	// 1,000 and 100.
	MaxHandshakes          int
	MaxHandshakesPerSource int
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
	// when it next dials. Default 5 s.
	MaxConnectionIdle time.Duration
}

// DefaultServerLimits returns the defaults spelled out.
func DefaultServerLimits() ServerLimits {
	return ServerLimits{
		MaxConcurrentStreams:    DefaultMaxConcurrentStreams,
		MaxConnections:          DefaultMaxConnections,
		MaxConnectionsPerSource: DefaultMaxConnectionsPerSource,
		MaxHandshakes:           DefaultMaxHandshakes,
		MaxHandshakesPerSource:  DefaultMaxHandshakesPerSource,
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
	// NewServer.
	RefusedConnections, RefusedHandshakes, SilentStreams uint64
}

// Stats returns the current counts.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Connections:        s.connCount.count(),
		Handshakes:         s.handshakes.count(),
		RefusedConnections: s.refusedConns.Load(),
		RefusedHandshakes:  s.refusedHandshakes.Load(),
		SilentStreams:      s.silentStreams.Load(),
	}
}

// gauge counts holders in total and per source, under a limit for each (≤ 0:
// none). Its zero value has no limits.
type gauge struct {
	what        string // "connections", "handshakes": for refusals
	max, perMax int

	mu    sync.Mutex
	total int
	per   map[string]int
}

func newGauge(what string, max, perMax int) *gauge {
	return &gauge{what: what, max: max, perMax: perMax, per: map[string]int{}}
}

// acquire counts one more holder from src, or returns an error wrapping
// channel.ErrLimitExceeded (and counts nothing) when a limit is reached.
func (g *gauge) acquire(src string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.max > 0 && g.total >= g.max {
		return fmt.Errorf("grpcchannel: %w: %d %s in flight on this node (limit %d)", channel.ErrLimitExceeded, g.total, g.what, g.max)
	}
	n := g.per[src]
	if g.perMax > 0 && n >= g.perMax {
		return fmt.Errorf("grpcchannel: %w: %d %s in flight from %s (limit %d)", channel.ErrLimitExceeded, n, g.what, src, g.perMax)
	}
	g.total++
	g.per[src] = n + 1
	return nil
}

// release undoes one acquire from src.
func (g *gauge) release(src string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
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

// limitListener closes accepted connections over the gauge's limits at once.
type limitListener struct {
	net.Listener
	conns   *gauge
	refused *atomic.Uint64
}

// Accept returns the next connection within the limits; connections over
// them are closed and skipped.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := channel.PeerInfo{Addr: c.RemoteAddr().String()}.Source()
		if l.conns.acquire(src) != nil {
			l.refused.Add(1)
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
