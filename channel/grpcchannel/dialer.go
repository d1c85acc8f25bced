package grpcchannel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/exchangekit/exchange/channel"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// ErrUnavailable is wrapped by the error of a Dial that could not reach the
// server (connection refused, TLS handshake failed, no route, …). Retrying
// later, or another endpoint, may help.
var ErrUnavailable = errors.New("grpcchannel: server unavailable")

// Dialer is the connector side of the gRPC twin: a channel.Dialer that opens
// one Connect stream per Dial over a single gRPC ClientConn, which it keeps
// (and reconnects) across Dial calls. It is safe for concurrent use.
type Dialer struct {
	target        string
	cc            *grpc.ClientConn
	open          openFunc // opens a Connect or, with WithLinkService, a Link stream
	maxFrameBytes int
	attempts      *attempts
	throttle      *throttle // nil: WithoutThrottle
	// throttled is the error of a stream the Dialer refuses itself (made
	// once: a refusal allocates nothing).
	throttled error
}

var _ channel.Dialer = (*Dialer)(nil)

// String returns the target the Dialer connects to, as given to NewDialer; a
// connector names the endpoint by it in its logs.
func (d *Dialer) String() string { return d.target }

// NewDialer returns a Dialer for target, a gRPC target such as
// "controller.example:7400" or "dns:///controller.example:7400". It does not
// connect: the first Dial does. It fails only on invalid options: one of
// WithTLS or WithInsecure is required.
//
// Defaults: keepalive pings after 15 s of silence with a 5 s timeout (allowed
// without streams), frames up to 4 MiB each way.
func NewDialer(target string, opts ...DialOption) (*Dialer, error) {
	o := defaultDialOptions()
	for _, opt := range opts {
		opt.applyDial(&o)
	}
	if o.maxFrameBytes <= 0 {
		o.maxFrameBytes = channel.DefaultMaxFrameBytes
	}
	var creds credentials.TransportCredentials
	switch {
	case o.tls != nil:
		creds = credentials.NewTLS(o.tls)
	case o.insecure:
		creds = insecure.NewCredentials()
	default:
		return nil, errors.New("grpcchannel: NewDialer needs WithTLS or WithInsecure")
	}
	base := o.dialer
	if base == nil {
		base = dialNetwork
	}
	a := newAttempts()
	gopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(a.wrap(base)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                o.keepalive.Time,
			Timeout:             o.keepalive.Timeout,
			PermitWithoutStream: true,
		}),
		grpc.WithStaticStreamWindowSize(FlowWindow),
		grpc.WithStaticConnWindowSize(FlowWindow),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(o.maxFrameBytes),
			grpc.MaxCallSendMsgSize(o.maxFrameBytes),
			callCodec(), // Frames without reflection, protobuf for the rest (codec.go)
		),
	}
	gopts = append(gopts, o.grpcOpts...)
	cc, err := grpc.NewClient(target, gopts...)
	if err != nil {
		return nil, fmt.Errorf("grpcchannel: new client for %q: %w", target, err)
	}
	d := &Dialer{
		target:        target,
		cc:            cc,
		open:          streamOpener(cc, o.link),
		maxFrameBytes: o.maxFrameBytes,
		attempts:      a,
		throttled: fmt.Errorf("grpcchannel: dial %s: %w: %w: throttled by the client: the server refused most of this Dialer's recent streams",
			target, ErrUnavailable, channel.ErrLimitExceeded),
	}
	if !o.noThrottle {
		d.throttle = newThrottle()
	}
	return d, nil
}

// Dial opens a channel: a new Connect stream (a Link stream with
// WithLinkService). It returns once the server has
// taken the stream, and fails promptly, without waiting for ctx to end, when
// the server cannot be reached: a connection attempt made for this Dial
// failed. (Unlike a plain fail-fast gRPC call, it never fails on the memory
// of an earlier failure: when the connection is in TRANSIENT_FAILURE it skips
// gRPC's reconnect backoff and waits for one fresh attempt, so a caller that
// does its own backoff, like a connector, connects as soon as the server is
// back.) Errors wrap ErrUnavailable when the server is unreachable or not
// accepting channels (closing), and also channel.ErrLimitExceeded when it
// refused the stream because too many handshakes are in flight (a
// *channel.LimitError when the refusal carried a retry hint), channel.ErrClosed when the Dialer is closed
// or the server does not serve the Exchange service, or ctx's error.
//
// While the server refuses most of a Dialer's streams at its limits, Dial
// refuses a share of new ones itself, at once, without opening them
// (adaptive throttling, decision 0049; see WithoutThrottle), with an error
// that wraps ErrUnavailable and channel.ErrLimitExceeded, as the server's
// refusal does.
func (d *Dialer) Dial(ctx context.Context) (channel.Conn, error) {
	if err := d.awaitConnectivity(ctx); err != nil {
		return nil, err
	}
	if !d.throttle.admit() {
		return nil, d.throttled
	}
	// The stream lives until Conn.Close, not until ctx ends; ctx bounds only
	// its opening.
	sctx, abort := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, abort)
	st, err := d.open(sctx) // fail-fast: no WaitForReady
	if err == nil {
		err = awaitAccepted(st)
	}
	if !stop() {
		abort()
		return nil, fmt.Errorf("grpcchannel: dial %s: %w", d.target, ctx.Err())
	}
	if err != nil {
		abort()
		if status.Code(err) == codes.ResourceExhausted {
			d.throttle.answered(false)
		}
		return nil, d.dialError(err)
	}
	d.throttle.answered(true)
	return newConn(st, true, d.maxFrameBytes, clientCancel(abort)), nil
}

// awaitAccepted waits for the header the server sends when its Connect
// handler starts, or for the status that ended the stream instead.
func awaitAccepted(st pb.Exchange_ConnectClient) error {
	md, err := st.Header()
	if err != nil {
		return err
	}
	if md != nil {
		return nil
	}
	// The stream ended without headers: Recv returns its status.
	if _, err := st.Recv(); err != nil {
		return err
	}
	return status.Error(codes.Internal, "server sent a frame without headers")
}

func (d *Dialer) dialError(err error) error {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return fmt.Errorf("grpcchannel: dial %s: %w: %s", d.target, ErrUnavailable, st.Message())
		case codes.ResourceExhausted:
			// Refused by a limit before the stream was taken: the server is
			// busy, not broken; try later.
			if detail, ok := limitDetail(st.Message()); ok {
				if after, ok := retryHint(st); ok {
					detail = strings.TrimSuffix(detail, fmt.Sprintf("; retry after %v", after))
					return fmt.Errorf("grpcchannel: dial %s: %w: %w", d.target, ErrUnavailable,
						&channel.LimitError{Detail: detail, RetryAfter: after})
				}
				return fmt.Errorf("grpcchannel: dial %s: %w: %w: %s", d.target, ErrUnavailable, channel.ErrLimitExceeded, detail)
			}
		case codes.Canceled:
			if d.cc.GetState() == connectivity.Shutdown {
				return fmt.Errorf("grpcchannel: dial %s: dialer %w", d.target, channel.ErrClosed)
			}
		}
	}
	return translate("dial "+d.target, err)
}

// awaitConnectivity returns when opening a fail-fast stream is meaningful:
// the connection is READY, or a connection attempt made during this call has
// just failed (the stream then fails at once with that attempt's error). The
// ClientConn reports TRANSIENT_FAILURE "stickily" (gRPC A62: it stays there
// while it retries in the background with backoff of up to 2 minutes), so a
// TRANSIENT_FAILURE found on entry is stale: the backoff is skipped and the
// next attempt awaited.
func (d *Dialer) awaitConnectivity(ctx context.Context) error {
	fresh := false // an attempt has completed during this call
	for {
		s := d.cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Shutdown:
			return fmt.Errorf("grpcchannel: dial %s: dialer %w", d.target, channel.ErrClosed)
		case connectivity.Idle:
			d.cc.Connect()
		case connectivity.TransientFailure:
			if fresh {
				return nil
			}
			fresh = true
			attemptFailed, unwatch := d.attempts.watch()
			d.cc.ResetConnectBackoff()
			wctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(attemptFailed, cancel)
			d.cc.WaitForStateChange(wctx, s)
			stop()
			cancel()
			unwatch()
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("grpcchannel: dial %s: %w", d.target, err)
			}
			continue
		}
		if !d.cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("grpcchannel: dial %s: %w", d.target, ctx.Err())
		}
		fresh = fresh || s == connectivity.Connecting
	}
}

// Close releases the ClientConn: Conns still open fail with
// channel.ErrClosed, and later Dial calls fail too. It is idempotent.
func (d *Dialer) Close() error {
	if err := d.cc.Close(); err != nil && status.Code(err) != codes.Canceled {
		return fmt.Errorf("grpcchannel: close dialer: %w", err)
	}
	return nil
}

// dialNetwork is the default context dialer: TCP, or a Unix socket for
// "unix:" addresses (gRPC passes those through unresolved when a dialer is
// set).
func dialNetwork(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return nd.DialContext(ctx, "unix", strings.TrimPrefix(path, "//"))
	}
	return nd.DialContext(ctx, "tcp", addr)
}

// attempts tells Dial when a connection attempt that started after it began
// waiting has failed: the dial itself failed, or gRPC closed the connection
// it had opened (a failed handshake, a lost connection). Attempts that
// started earlier do not count, so a stale failure is never taken for a fresh
// one.
type attempts struct {
	mu      sync.Mutex
	waiting map[*waiter]struct{} // registered by watch, until their stop
}

type waiter struct {
	ctx    context.Context // cancelled when an attempt started after watch fails
	cancel context.CancelFunc
}

func newAttempts() *attempts { return &attempts{waiting: make(map[*waiter]struct{})} }

// watch returns a context cancelled when a connection attempt that starts
// from now on fails, and a function to call when no longer interested.
func (a *attempts) watch() (context.Context, func()) {
	w := &waiter{}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	a.mu.Lock()
	a.waiting[w] = struct{}{}
	a.mu.Unlock()
	return w.ctx, func() {
		a.mu.Lock()
		delete(a.waiting, w)
		a.mu.Unlock()
		w.cancel()
	}
}

// started returns the waiters to tell if the attempt starting now fails.
func (a *attempts) started() []*waiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	ws := make([]*waiter, 0, len(a.waiting))
	for w := range a.waiting {
		ws = append(ws, w)
	}
	return ws
}

func failed(ws []*waiter) {
	for _, w := range ws {
		w.cancel()
	}
}

// wrap returns dial instrumented to report failures.
func (a *attempts) wrap(dial func(context.Context, string) (net.Conn, error)) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		ws := a.started()
		c, err := dial(ctx, addr)
		if err != nil {
			failed(ws)
			return nil, err
		}
		return &trackedConn{Conn: c, waiters: ws}, nil
	}
}

// trackedConn reports its Close as the end of an attempt.
type trackedConn struct {
	net.Conn
	waiters []*waiter
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	failed(c.waiters)
	return err
}
