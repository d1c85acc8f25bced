package grpcchannel_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
)

// fromSource makes a Dialer connect from the loopback address local
// (127.0.0.2, …: all of 127/8 is the loopback interface on Linux), so that a
// test has several sources.
func fromSource(local string) grpcchannel.DialOption {
	return grpcchannel.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		return d.DialContext(ctx, "tcp", addr)
	})
}

// waitUntil polls cond every few milliseconds until it holds, failing the
// test when ctx ends first.
func waitUntil(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// dialPending opens a Connect stream that says nothing and accepts it: a
// handshake in flight until it is closed at the end of the test. It returns
// the client end.
func dialPending(t testing.TB, ctx context.Context, srv *grpcchannel.Server, d *grpcchannel.Dialer) channel.Conn {
	t.Helper()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v, want a pending handshake", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	b, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return c
}

// handshake runs both sides of a successful HELLO on a new stream from d and
// checks that frames flow on the established channel.
func handshake(t testing.TB, ctx context.Context, srv *grpcchannel.Server, d *grpcchannel.Dialer) {
	t.Helper()
	a, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() of a well-behaved client = %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	helloDone := make(chan error, 1)
	go func() {
		_, err := channel.Hello(ctx, a, command.HelloPayload{TargetID: "t1"})
		helloDone <- err
	}()
	b, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	accept := func(_ context.Context, cmd *command.Command, _ command.HelloPayload) (*command.Reply, error) {
		return command.Succeeded(cmd, command.HelloReplyPayload{TargetID: "t1"})
	}
	if _, _, err := channel.AcceptHello(ctx, b, accept); err != nil {
		t.Fatalf("AcceptHello() = %v", err)
	}
	if err := <-helloDone; err != nil {
		t.Fatalf("Hello() = %v", err)
	}
	roundTrip(t, ctx, a, b)
}

// The N+1th handshake is refused at once with RESOURCE_EXHAUSTED while N are
// pending, on the node as a whole and per source; a handshake that completes
// or ends gives its place back, and a well-behaved client then gets through.
func TestHandshakeLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits grpcchannel.ServerLimits
		// other: whether a second source still gets through while the
		// first is at its limit.
		other bool
	}{
		{"PerNode", grpcchannel.ServerLimits{MaxHandshakes: 3, MaxHandshakesPerSource: -1, HandshakeQueueWait: -1}, false},
		{"PerSource", grpcchannel.ServerLimits{MaxHandshakes: -1, MaxHandshakesPerSource: 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			lis := listenTCP(t)
			srv := startServer(t, lis, grpcchannel.WithLimits(tc.limits))
			d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure(), fromSource("127.0.0.1"))
			pending := make([]channel.Conn, 3)
			for i := range pending {
				pending[i] = dialPending(t, ctx, srv, d)
			}
			if got := srv.Stats().Handshakes; got != 3 {
				t.Fatalf("Stats().Handshakes = %d, want 3", got)
			}
			start := time.Now()
			err := refusedDial(t, ctx, d, "4th Dial()")
			t.Logf("4th Dial() = %v after %v", err, time.Since(start))
			if got := srv.Stats().RefusedHandshakes; got != 1 {
				t.Errorf("Stats().RefusedHandshakes = %d, want 1", got)
			}

			other := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure(), fromSource("127.0.0.2"))
			c, err := other.Dial(ctx)
			switch {
			case tc.other && err != nil:
				t.Fatalf("Dial() from another source = %v, want it through", err)
			case !tc.other && !errors.Is(err, channel.ErrLimitExceeded):
				t.Fatalf("Dial() from another source = %v, want ErrLimitExceeded", err)
			case err == nil:
				_ = c.Close()
			}

			// One pending stream goes away: its place is free again.
			_ = pending[0].Close()
			waitUntil(t, ctx, "the closed stream's place freed", func() bool { return srv.Stats().Handshakes == 2 })
			handshake(t, ctx, srv, d)
			if got := srv.Stats().Handshakes; got != 2 {
				t.Errorf("Stats().Handshakes after a completed HELLO = %d, want 2 (it no longer counts)", got)
			}
			// The established channel does not count: another handshake fits.
			dialPending(t, ctx, srv, d)
		})
	}
}

// A Connect stream takes its place among the handshakes before its handler
// runs (in the server's tap handle). When the handler never runs, here
// because an interceptor of the caller's refuses the stream, the place is
// given back at the HandshakeTimeout, and the next client gets through: no
// place leaks.
func TestHandshakePlaceOfAStreamNeverHandled(t *testing.T) {
	// With a HandshakeTimeout the tap takes the place and its timer gives it
	// back; without one (negative: no limit) the handler takes it, so there
	// is nothing to give back.
	for name, timeout := range map[string]time.Duration{"Timeout": 200 * time.Millisecond, "NoTimeout": -1} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			lis := listenTCP(t)
			refuse, deny := refusingInterceptor()
			srv := startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{
				MaxHandshakes: 1, MaxHandshakesPerSource: -1, HandshakeQueueWait: -1, HandshakeTimeout: timeout}),
				grpcchannel.WithServerOptions(deny))
			d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
			if c, err := d.Dial(ctx); err == nil {
				_ = c.Close()
				t.Fatal("Dial() through the refusing interceptor succeeded")
			} else if !strings.Contains(err.Error(), "refused by the caller's interceptor") {
				t.Fatalf("Dial() = %v, want the interceptor's refusal", err)
			}
			refuse.Store(false)
			waitUntil(t, ctx, "the unhandled stream's place given back", func() bool { return srv.Stats().Handshakes == 0 })
			if got := srv.Stats().SilentStreams; got != 0 {
				t.Errorf("Stats().SilentStreams = %d, want 0 (the stream was never handled, not silent)", got)
			}
			handshake(t, ctx, srv, d)
		})
	}
}

// A stream that sends nothing is ended after HandshakeTimeout, whether or not
// Accept took it, and its place is freed.
func TestSilentStreamClosed(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{HandshakeTimeout: 100 * time.Millisecond}))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())

	accepted, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = accepted.Close() })
	b, err := srv.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	notAccepted, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = notAccepted.Close() })
	for name, c := range map[string]channel.Conn{"not accepted": notAccepted, "accepted": accepted} {
		if _, err := recvWithin(t, ctx, c); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("Recv() on a silent stream (%s) = %v, want ErrClosed", name, err)
		} else {
			t.Logf("silent stream (%s): %v", name, err)
		}
	}
	if _, err := recvWithin(t, ctx, b); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("server-side Recv() on the silent stream = %v, want ErrClosed", err)
	}
	waitUntil(t, ctx, "both silent streams counted and freed", func() bool {
		s := srv.Stats()
		return s.SilentStreams == 2 && s.Handshakes == 0
	})
	handshake(t, ctx, srv, d)
}

// A connection that never completes its preface is closed after
// ConnectionTimeout; one that completes it but opens no stream is closed
// after MaxConnectionIdle. Both free their place.
func TestSilentConnectionClosed(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{
		ConnectionTimeout: 100 * time.Millisecond,
		MaxConnectionIdle: 100 * time.Millisecond,
	}))
	addr := lis.Addr().String()

	t.Run("NoPreface", func(t *testing.T) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if err := raw.SetReadDeadline(time.Now().Add(defaultTestTimeout)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, raw); err != nil {
			t.Fatalf("read from a silent connection = %v, want EOF (closed by the server)", err)
		}
	})
	t.Run("NoStream", func(t *testing.T) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cc.Connect()
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				t.Fatalf("connection not ready: %v", s)
			}
		}
		// The server's GOAWAY sends the client back to IDLE.
		if !cc.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatal("idle connection still open")
		}
		t.Logf("idle connection: %v", cc.GetState())
	})
	waitUntil(t, ctx, "connections freed", func() bool { return srv.Stats().Connections == 0 })
	handshake(t, ctx, srv, newDialer(t, addr, grpcchannel.WithInsecure()))
}

// Connections over MaxConnections or MaxConnectionsPerSource are refused at
// once with a retry hint: a gRPC client's first RPC fails with
// RESOURCE_EXHAUSTED, "retry after 5s" and a RetryInfo detail (a Dialer's
// Dial with ErrLimitExceeded), and the connection is closed; a client that
// never speaks is closed within 2 s. Real gRPC on loopback, at the bound.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits grpcchannel.ServerLimits
	}{
		{"PerNode", grpcchannel.ServerLimits{MaxConnections: 2, MaxConnectionsPerSource: -1}},
		{"PerSource", grpcchannel.ServerLimits{MaxConnections: -1, MaxConnectionsPerSource: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			lis := listenTCP(t)
			srv := startServer(t, lis, grpcchannel.WithLimits(tc.limits))
			addr := lis.Addr().String()
			var held []net.Conn
			for range 2 {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				held = append(held, raw)
			}
			waitUntil(t, ctx, "2 connections counted", func() bool { return srv.Stats().Connections == 2 })
			extra, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer extra.Close()
			if err := extra.SetReadDeadline(time.Now().Add(defaultTestTimeout)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := io.Copy(io.Discard, extra); err != nil {
				t.Fatalf("read from the 3rd connection = %v, want EOF (refused)", err)
			}
			t.Logf("a silent connection over the limit closed after %v", time.Since(start))

			// A connector's Dial over the limit fails at once, retryable.
			start = time.Now()
			c, err := newDialer(t, addr, grpcchannel.WithInsecure()).Dial(ctx)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial() over the connection limit succeeded")
			}
			if !errors.Is(err, channel.ErrLimitExceeded) || !errors.Is(err, grpcchannel.ErrUnavailable) ||
				!strings.Contains(err.Error(), "retry after 5s") {
				t.Fatalf("Dial() over the limit = %v, want ErrLimitExceeded, ErrUnavailable and \"retry after 5s\"", err)
			}
			t.Logf("Dial() over the limit = %v after %v", err, time.Since(start))

			// Any gRPC client gets the standard RetryInfo detail.
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			st := status.Convert(err)
			var hint time.Duration
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					hint = ri.GetRetryDelay().AsDuration()
				}
			}
			if st.Code() != codes.ResourceExhausted || hint != grpcchannel.OverLimitRetryAfter {
				t.Fatalf("health Check over the limit = %v (RetryInfo %v), want RESOURCE_EXHAUSTED with RetryInfo %v",
					err, hint, grpcchannel.OverLimitRetryAfter)
			}
			if s := srv.Stats(); s.RefusedConnections != 3 || s.Connections != 2 {
				t.Errorf("Stats() = %+v, want 3 refused and 2 open", s)
			}
			_ = held[0].Close()
			waitUntil(t, ctx, "a connection's place freed", func() bool { return srv.Stats().Connections == 1 })
			handshake(t, ctx, srv, newDialer(t, addr, grpcchannel.WithInsecure()))
		})
	}
}

// A client opening more streams on one connection than MaxConcurrentStreams
// waits for one to end (gRPC's flow control; a raw HTTP/2 client would be
// refused with REFUSED_STREAM).
func TestMaxConcurrentStreams(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{MaxConcurrentStreams: 2}))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	first := dialPending(t, ctx, srv, d)
	dialPending(t, ctx, srv, d)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if c, err := d.Dial(short); err == nil {
		_ = c.Close()
		t.Fatal("3rd stream on a connection limited to 2 opened")
	}
	_ = first.Close()
	waitUntil(t, ctx, "the first stream's end", func() bool { return srv.Stats().Handshakes == 1 })
	dialPending(t, ctx, srv, d)
}

func TestPeerInfoSource(t *testing.T) {
	for addr, want := range map[string]string{
		"10.1.2.3:7400":                 "10.1.2.3",
		"[::ffff:10.1.2.3]:7400":        "10.1.2.3",
		"[2001:db8:1:2:3:4:5:6]:7400":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1":      "2001:db8:1:2::/64",
		"embedded:a":                    "embedded:a",
		"[fe80::1%eth0]:7400":           "fe80::/64",
		"2001:db8:1:2:3:4:5:6":          "2001:db8:1:2::/64",
		"127.0.0.1":                     "127.0.0.1",
		"not an address at all, really": "not an address at all, really",
	} {
		if got := (channel.PeerInfo{Addr: addr}).Source(); got != want {
			t.Errorf("PeerInfo{Addr: %q}.Source() = %q, want %q", addr, got, want)
		}
	}
}

// Over TLS too, a connection over the cap gets its refusal with the retry
// hint: the refusal comes after the TLS handshake, from gRPC itself.
func TestConnectionLimitOverTLS(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithTLS(&tls.Config{Certificates: []tls.Certificate{p.server}}),
		grpcchannel.WithLimits(grpcchannel.ServerLimits{MaxConnections: 1}))
	addr := lis.Addr().String()
	dialPending(t, ctx, srv, newDialer(t, addr, grpcchannel.WithTLS(&tls.Config{RootCAs: p.pool})))
	c, err := newDialer(t, addr, grpcchannel.WithTLS(&tls.Config{RootCAs: p.pool})).Dial(ctx)
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial() over the connection limit succeeded")
	}
	if !errors.Is(err, channel.ErrLimitExceeded) || !strings.Contains(err.Error(), "retry after 5s") {
		t.Fatalf("Dial() over the limit over TLS = %v, want ErrLimitExceeded and \"retry after 5s\"", err)
	}
	if s := srv.Stats(); s.RefusedConnections != 1 || s.Connections != 1 {
		t.Errorf("Stats() = %+v, want 1 refused and 1 open", s)
	}
}

// BenchmarkRefusedHandshake: the cost, on both sides, of a Connect stream
// refused because the node's handshakes are all in flight, the commonest
// event of a fleet's simultaneous start (docs/benchmarks.md, "Scale").
func BenchmarkRefusedHandshake(b *testing.B) {
	// Without the Dialer's throttle, which would soon refuse most of these
	// itself (decision 0049): this measures the server's refusal.
	benchRefusedDials(b, grpcchannel.WithoutThrottle())
}

// BenchmarkThrottledHandshake: the same refused stream once the Dialer's
// throttle has learnt that the server refuses nearly everything (decision
// 0049): most Dials are refused by the Dialer itself, with no stream.
func BenchmarkThrottledHandshake(b *testing.B) {
	srv := benchRefusedDials(b)
	b.ReportMetric(float64(srv.Stats().RefusedHandshakes)/float64(b.N), "server-refusals/op")
}

// benchRefusedDials dials, b.N times, a server whose one handshake place is
// held for the whole benchmark, with a Dialer of opts, and returns the
// server.
func benchRefusedDials(b *testing.B, opts ...grpcchannel.DialOption) *grpcchannel.Server {
	ctx := testContext(b)
	lis := listenTCP(b)
	srv := startServer(b, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{
		MaxHandshakes: 1, MaxHandshakesPerSource: -1, HandshakeQueueWait: -1, HandshakeTimeout: time.Hour}))
	d := newDialer(b, lis.Addr().String(), append([]grpcchannel.DialOption{grpcchannel.WithInsecure()}, opts...)...)
	dialPending(b, ctx, srv, d) // the one handshake in flight, for the whole benchmark
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.Dial(ctx)
		if err == nil {
			_ = c.Close()
			b.Fatal("Dial() over the handshake limit succeeded")
		}
	}
	return srv
}

// A Dialer whose streams the server keeps refusing at its handshake limit
// refuses most of the next ones itself, with the same kind of error and
// without opening a stream; with WithoutThrottle every one reaches the
// server; and once the server takes streams again, so does the Dialer
// (decision 0049).
func TestDialerThrottlesRefusedStreams(t *testing.T) {
	ctx := testContext(t)
	const dials = 400
	run := func(t *testing.T, opts ...grpcchannel.DialOption) (local int, server uint64, d *grpcchannel.Dialer, srv *grpcchannel.Server, pending channel.Conn) {
		lis := listenTCP(t)
		srv = startServer(t, lis, grpcchannel.WithLimits(grpcchannel.ServerLimits{
			MaxHandshakes: 1, MaxHandshakesPerSource: -1, HandshakeQueueWait: -1, HandshakeTimeout: time.Hour}))
		d = newDialer(t, lis.Addr().String(), append([]grpcchannel.DialOption{grpcchannel.WithInsecure()}, opts...)...)
		pending = dialPending(t, ctx, srv, d)
		for range dials {
			err := refusedDial(t, ctx, d, "Dial() over the handshake limit")
			if strings.Contains(err.Error(), "throttled by the client") {
				local++
			}
		}
		return local, srv.Stats().RefusedHandshakes, d, srv, pending
	}
	t.Run("on by default", func(t *testing.T) {
		local, server, d, srv, pending := run(t)
		if local+int(server) != dials {
			t.Errorf("%d refused by the Dialer + %d by the server, want %d in all", local, server, dials)
		}
		// The first 64 answers reach the server, and one of them is the
		// pending stream's accept: at least 63 refusals by the server
		// (each later Dial reaches it with probability 3/(requests+1), so
		// none more is possible). After that p ≥ 62/65 and grows: expected
		// well over 300 local refusals.
		if local < dials/2 || server < 63 {
			t.Errorf("%d of %d refused by the Dialer, %d by the server; want most by the Dialer, at least 63 by the server", local, dials, server)
		}
		// The server takes streams again: the pending handshake ends, and
		// the Dialer gets a stream within a bounded number of tries (each
		// local refusal lowers nothing, but every stream that goes through
		// is accepted and counted).
		_ = pending.Close()
		waitUntil(t, ctx, "the handshake place given back", func() bool { return srv.Stats().Handshakes == 0 })
		for i := 0; ; i++ {
			c, err := d.Dial(ctx)
			if err == nil {
				_ = c.Close()
				break
			}
			if !strings.Contains(err.Error(), "throttled by the client") {
				t.Fatalf("Dial() with a free place = %v", err)
			}
			if i > 100_000 {
				t.Fatal("the Dialer still refuses everything after 100,000 tries")
			}
		}
	})
	t.Run("WithoutThrottle", func(t *testing.T) {
		local, server, _, _, _ := run(t, grpcchannel.WithoutThrottle())
		if local != 0 || server != dials {
			t.Errorf("%d refused by the Dialer, %d by the server; want 0 and %d", local, server, dials)
		}
	})
}

// refusedDial dials d, which must be refused at a limit (by the server or by
// the Dialer's own throttle), and returns the refusal.
func refusedDial(t *testing.T, ctx context.Context, d *grpcchannel.Dialer, what string) error {
	t.Helper()
	c, err := d.Dial(ctx)
	if err == nil {
		_ = c.Close()
		t.Fatalf("%s succeeded, want a refusal", what)
	}
	if !errors.Is(err, channel.ErrLimitExceeded) || !errors.Is(err, grpcchannel.ErrUnavailable) {
		t.Fatalf("%s = %v, want ErrLimitExceeded and ErrUnavailable", what, err)
	}
	return err
}
