package grpcchannel

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/exchangekit/exchange/channel"
)

// Keepalive defaults (docs/protocol.md, "Keepalive"; decision 0028). Only the
// client pings a quiet connection: it pings after 15 s without reading anything and gives up 5 s
// after an unanswered ping, so it notices a half-open connection within 20 s.
// The server's own ping comes only after 20 s without reading anything,
// longer than the client's interval: a live client on the defaults has always
// pinged (or the controller's health check has passed) before, so the server
// never pings it, yet it still notices a half-open connection within 25 s.
// Every ping, and every health check, resets both sides' timers. The server
// accepts client pings as often as every 5 s, with or without open streams,
// so a client on the defaults is never sent GOAWAY "too_many_pings".
const (
	DefaultClientKeepaliveTime    = 15 * time.Second
	DefaultClientKeepaliveTimeout = 5 * time.Second
	DefaultServerKeepaliveTime    = 20 * time.Second
	DefaultServerKeepaliveTimeout = 5 * time.Second
	DefaultServerKeepaliveMinTime = 5 * time.Second
)

// FlowWindow is the HTTP/2 flow-control window of every stream and of every
// connection, both sides (decision 0033). A window of fixed size turns off
// gRPC's BDP estimation, which answered every DATA frame arriving on a quiet
// connection with a WINDOW_UPDATE and a PING, and the peer with a PING ACK:
// on an idle fleet, where a health check is the only traffic, that doubled
// the frames, syscalls and wake-ups of each check on both sides. 1 MiB is
// grpc-java's default window (the reference's peers); windows allocate
// nothing up front. WithServerOptions and WithDialOptions can set others.
const FlowWindow = 1 << 20

// ServerOption configures a Server (see NewServer).
type ServerOption interface{ applyServer(*serverOptions) }

// DialOption configures a Dialer (see NewDialer).
type DialOption interface{ applyDial(*dialOptions) }

// Option configures either side: it is both a ServerOption and a DialOption.
type Option interface {
	ServerOption
	DialOption
}

type serverOptions struct {
	tls           *tls.Config
	keepalive     ServerKeepalive
	maxFrameBytes int
	limits        ServerLimits
	grpcOpts      []grpc.ServerOption
}

type dialOptions struct {
	tls           *tls.Config
	insecure      bool
	keepalive     ClientKeepalive
	maxFrameBytes int
	dialer        func(ctx context.Context, addr string) (net.Conn, error)
	grpcOpts      []grpc.DialOption
	link          bool // open Link streams (WithLinkService)
	noThrottle    bool // WithoutThrottle
}

func defaultServerOptions() serverOptions {
	return serverOptions{
		keepalive: ServerKeepalive{
			Time:    DefaultServerKeepaliveTime,
			Timeout: DefaultServerKeepaliveTimeout,
			MinTime: DefaultServerKeepaliveMinTime,
		},
		maxFrameBytes: channel.DefaultMaxFrameBytes,
		limits:        DefaultServerLimits(),
	}
}

func defaultDialOptions() dialOptions {
	return dialOptions{
		keepalive: ClientKeepalive{
			Time:    DefaultClientKeepaliveTime,
			Timeout: DefaultClientKeepaliveTimeout,
		},
		maxFrameBytes: channel.DefaultMaxFrameBytes,
	}
}

// option implements Option with one function per side; a nil function leaves
// that side alone.
type option struct {
	server func(*serverOptions)
	dial   func(*dialOptions)
}

func (o option) applyServer(s *serverOptions) {
	if o.server != nil {
		o.server(s)
	}
}

func (o option) applyDial(d *dialOptions) {
	if o.dial != nil {
		o.dial(d)
	}
}

// WithTLS secures the connection with TLS.
//
// On a Server, cfg must hold the server's certificate; when cfg also sets
// ClientCAs and ClientAuth: tls.RequireAndVerifyClientCert, the server
// requires mutual TLS and refuses clients without a certificate signed by one
// of those CAs, and the verified client certificate is available through
// channel.Peer(conn).TLS.PeerCertificates[0] on every accepted Conn.
//
// On a Dialer, cfg holds the CAs that verify the server (RootCAs; nil means
// the system pool) and, for mutual TLS, the client's Certificates. gRPC
// requires and sets the "h2" ALPN protocol itself.
func WithTLS(cfg *tls.Config) Option {
	return option{
		server: func(o *serverOptions) { o.tls = cfg },
		dial:   func(o *dialOptions) { o.tls = cfg; o.insecure = false },
	}
}

// WithInsecure makes a Dialer connect without transport security (plain
// HTTP/2). For tests and trusted networks only. A Dialer needs either WithTLS
// or WithInsecure.
func WithInsecure() DialOption {
	return option{dial: func(o *dialOptions) { o.insecure = true; o.tls = nil }}
}

// WithMaxFrameBytes sets the largest frame, as encoded on the wire (the
// protobuf size of one exchange.v1.Frame), that this side sends and accepts.
// Default channel.DefaultMaxFrameBytes (4 MiB). Send fails with an error
// wrapping channel.ErrFrameTooLarge, before anything is written, for a larger
// frame; a peer sending a larger frame has its stream ended with status
// RESOURCE_EXHAUSTED. A value ≤ 0 means the default.
func WithMaxFrameBytes(n int) Option {
	return option{
		server: func(o *serverOptions) { o.maxFrameBytes = n },
		dial:   func(o *dialOptions) { o.maxFrameBytes = n },
	}
}

// ServerKeepalive tunes the server's side of gRPC keepalive. Zero fields keep
// their defaults.
type ServerKeepalive struct {
	// Time is how long a connection may be idle before the server pings the
	// client. Default 20 s, longer than the client's default interval so that
	// only the client pings; gRPC raises values under 1 s to 1 s.
	Time time.Duration
	// Timeout is how long the server waits for the ping's ack before closing
	// the connection. Default 5 s.
	Timeout time.Duration
	// MinTime is the shortest interval between client pings the server
	// tolerates; a client pinging more often gets GOAWAY "too_many_pings".
	// Default 5 s, half the shortest interval a grpc-go client pings at (10 s).
	MinTime time.Duration
}

// ClientKeepalive tunes the client's side of gRPC keepalive. Zero fields keep
// their defaults.
type ClientKeepalive struct {
	// Time is how long a connection may be idle before the client pings the
	// server. Default 15 s; gRPC raises values under 10 s to 10 s. It must not
	// be shorter than the server's MinTime (5 s by default).
	Time time.Duration
	// Timeout is how long the client waits for the ping's ack before closing
	// the connection. Default 5 s.
	Timeout time.Duration
}

// Keepalive is the constraint of WithKeepalive: ServerKeepalive or
// ClientKeepalive.
type Keepalive interface {
	ServerKeepalive | ClientKeepalive
}

// WithKeepalive sets gRPC keepalive parameters: pass a ServerKeepalive to
// NewServer and a ClientKeepalive to NewDialer. Time and Timeout apply to
// whichever side the option is given to (a ClientKeepalive given to a server
// sets the server's Time and Timeout); MinTime exists only on a server.
func WithKeepalive[K Keepalive](k K) Option {
	var interval, timeout, minTime time.Duration
	switch k := any(k).(type) {
	case ServerKeepalive:
		interval, timeout, minTime = k.Time, k.Timeout, k.MinTime
	case ClientKeepalive:
		interval, timeout = k.Time, k.Timeout
	}
	return option{
		server: func(o *serverOptions) {
			if interval > 0 {
				o.keepalive.Time = interval
			}
			if timeout > 0 {
				o.keepalive.Timeout = timeout
			}
			if minTime > 0 {
				o.keepalive.MinTime = minTime
			}
		},
		dial: func(o *dialOptions) {
			if interval > 0 {
				o.keepalive.Time = interval
			}
			if timeout > 0 {
				o.keepalive.Timeout = timeout
			}
		},
	}
}

// WithServerOptions appends raw gRPC server options, applied after the ones
// this package derives from the other options (so they win). Use it for
// interceptors, stats handlers, connection limits, …; not for a codec
// (grpc.ForceServerCodecV2): the Server forces its own, which Connect and
// Link streams need (see the package doc, "Codec"). Interceptors see that
// codec's message types on those streams, not *exchangepb.Frame.
func WithServerOptions(opts ...grpc.ServerOption) ServerOption {
	return option{server: func(o *serverOptions) { o.grpcOpts = append(o.grpcOpts, opts...) }}
}

// WithDialOptions appends raw gRPC dial options, applied after the ones this
// package derives from the other options (so they win). Do not pass transport
// credentials or a context dialer here: use WithTLS, WithInsecure and
// WithContextDialer, which Dial's fail-fast connectivity check relies on;
// nor a codec (grpc.ForceCodecV2 in default call options), which would
// replace the one the Dialer's streams need.
func WithDialOptions(opts ...grpc.DialOption) DialOption {
	return option{dial: func(o *dialOptions) { o.grpcOpts = append(o.grpcOpts, opts...) }}
}

// WithoutThrottle turns off the Dialer's adaptive throttling (decision
// 0049): by default, once the server has answered at least 64 of a Dialer's
// streams in the last 2 s, mostly by refusing them at its handshake limit
// (RESOURCE_EXHAUSTED), Dial refuses a new stream itself with probability
// (requests − 2·accepts) / (requests + 1), at once and without opening it,
// with an error that wraps ErrUnavailable and channel.ErrLimitExceeded, as
// the server's refusal does. It matters only for a Dialer shared by many
// connectors; one connector on a Dialer of its own never reaches 64.
func WithoutThrottle() DialOption {
	return option{dial: func(o *dialOptions) { o.noThrottle = true }}
}

// WithContextDialer replaces the function that opens the network connection
// to the address the target resolves to (default: TCP, or a Unix socket for
// "unix:" targets). Tests use it with bufconn; deployments behind an HTTP
// CONNECT proxy use it to dial through the proxy, since a Dialer does not
// read the proxy environment variables.
func WithContextDialer(f func(ctx context.Context, addr string) (net.Conn, error)) DialOption {
	return option{dial: func(o *dialOptions) { o.dialer = f }}
}
