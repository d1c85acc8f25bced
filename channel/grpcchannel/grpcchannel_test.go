package grpcchannel_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// recvResult is the outcome of one Conn.Recv.
type recvResult struct {
	f   *channel.Frame
	err error
}

// goRecv calls c.Recv on a goroutine the test waits for at cleanup.
func goRecv(t testing.TB, c channel.Conn) <-chan recvResult {
	ch := make(chan recvResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := c.Recv()
		ch <- recvResult{f, err}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return ch
}

// recvWithin waits for c.Recv's result until ctx ends.
func recvWithin(t testing.TB, ctx context.Context, c channel.Conn) (*channel.Frame, error) {
	t.Helper()
	select {
	case r := <-goRecv(t, c):
		return r.f, r.err
	case <-ctx.Done():
		t.Fatalf("Recv(): nothing before %v", context.Cause(ctx))
		return nil, nil
	}
}

func mustRecv(t testing.TB, ctx context.Context, c channel.Conn) *channel.Frame {
	t.Helper()
	f, err := recvWithin(t, ctx, c)
	if err != nil {
		t.Fatalf("Recv() = %v, want a frame", err)
	}
	return f
}

func cmdFrame(id string, payload []byte) *channel.Frame {
	return &channel.Frame{Command: &command.Command{ID: id, Type: "ECHO", Payload: payload}}
}

// roundTrip checks that frames flow both ways between a and b.
func roundTrip(t testing.TB, ctx context.Context, a, b channel.Conn) {
	t.Helper()
	for _, p := range [][2]channel.Conn{{a, b}, {b, a}} {
		id := command.NewID()
		if err := p[0].Send(cmdFrame(id, []byte(`{}`))); err != nil {
			t.Fatalf("Send() = %v", err)
		}
		if f := mustRecv(t, ctx, p[1]); f.Command == nil || f.Command.ID != id {
			t.Fatalf("Recv() = %+v, want command %s", f, id)
		}
	}
}

func TestTLS(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithTLS(&tls.Config{Certificates: []tls.Certificate{p.server}}))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithTLS(&tls.Config{RootCAs: p.pool}))
	a, b := connect(t, srv, d)
	roundTrip(t, ctx, a, b)

	client := channel.Peer(a)
	if client.TLS == nil || len(client.TLS.PeerCertificates) == 0 ||
		client.TLS.PeerCertificates[0].Subject.CommonName != "controller" {
		t.Errorf("client PeerInfo().TLS = %+v, want the server certificate", client.TLS)
	}
	if client.Addr != lis.Addr().String() {
		t.Errorf("client PeerInfo().Addr = %q, want %q", client.Addr, lis.Addr())
	}
	server := channel.Peer(b)
	if server.TLS == nil {
		t.Fatal("server PeerInfo().TLS = nil, want the TLS state")
	}
	if n := len(server.TLS.PeerCertificates); n != 0 {
		t.Errorf("server sees %d client certificates, want 0 without mTLS", n)
	}
	if !strings.HasPrefix(server.Addr, "127.0.0.1:") {
		t.Errorf("server PeerInfo().Addr = %q, want 127.0.0.1:port", server.Addr)
	}
}

func TestTLSUntrustedServerRefused(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	lis := listenTCP(t)
	startServer(t, lis, grpcchannel.WithTLS(&tls.Config{Certificates: []tls.Certificate{p.server}}))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithTLS(&tls.Config{})) // system roots only
	if c, err := d.Dial(ctx); !errors.Is(err, grpcchannel.ErrUnavailable) {
		if c != nil {
			_ = c.Close()
		}
		t.Fatalf("Dial() = %v, want an error wrapping ErrUnavailable", err)
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithTLS(&tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}))
	addr := lis.Addr().String()

	t.Run("ClientCertificate", func(t *testing.T) {
		ctx := testContext(t)
		d := newDialer(t, addr, grpcchannel.WithTLS(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}))
		a, b := connect(t, srv, d)
		roundTrip(t, ctx, a, b)
		st := channel.Peer(b).TLS
		if st == nil || len(st.PeerCertificates) == 0 {
			t.Fatalf("server PeerInfo().TLS = %+v, want the client certificate", st)
		}
		if got := st.PeerCertificates[0].Subject.CommonName; got != "connector-1" {
			t.Errorf("client certificate CN = %q, want connector-1", got)
		}
		if len(st.VerifiedChains) == 0 {
			t.Error("client certificate has no verified chain")
		}
	})

	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"NoClientCertificate", nil},
		{"UntrustedClientCertificate", []tls.Certificate{p.rogue}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			d := newDialer(t, addr, grpcchannel.WithTLS(&tls.Config{RootCAs: p.pool, Certificates: tc.certs}))
			// Twice: the second Dial starts from TRANSIENT_FAILURE and must
			// wait for a fresh attempt, which fails after the TLS handshake.
			for i := range 2 {
				c, err := d.Dial(ctx)
				if err == nil {
					_ = c.Close()
					t.Fatalf("Dial() #%d succeeded, want a refusal", i+1)
				}
				if ctx.Err() != nil || !errors.Is(err, grpcchannel.ErrUnavailable) {
					t.Fatalf("Dial() #%d = %v, want an error wrapping ErrUnavailable before the deadline", i+1, err)
				}
				t.Logf("Dial() #%d = %v", i+1, err)
			}
		})
	}
}

func TestSendTooLargeKeepsConnUsable(t *testing.T) {
	ctx := testContext(t)
	const limit = 64 << 10
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis, grpcchannel.WithMaxFrameBytes(limit))
	d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis), grpcchannel.WithMaxFrameBytes(limit))
	a, b := connect(t, srv, d)

	for _, p := range []struct {
		name     string
		from, to channel.Conn
	}{{"client", a, b}, {"server", b, a}} {
		big := cmdFrame("big", bytes.Repeat([]byte("x"), limit))
		if err := p.from.Send(big); !errors.Is(err, channel.ErrFrameTooLarge) {
			t.Fatalf("%s Send(%d-byte payload) = %v, want ErrFrameTooLarge", p.name, limit, err)
		}
		fits := cmdFrame("fits", bytes.Repeat([]byte("x"), limit-100))
		if err := p.from.Send(fits); err != nil {
			t.Fatalf("%s Send(frame just under the limit) = %v, want nil", p.name, err)
		}
		if f := mustRecv(t, ctx, p.to); f.Command == nil || f.Command.ID != "fits" {
			t.Fatalf("%s: Recv() = %+v, want the frame that fits, not the large one", p.name, f)
		}
	}
}

// A peer that ignores our limit gets its stream ended with a clear error, and
// so do we.
func TestPeerAboveReceiveLimit(t *testing.T) {
	const small = 16 << 10
	payload := bytes.Repeat([]byte("y"), 2*small)

	t.Run("ClientSendsTooMuch", func(t *testing.T) {
		ctx := testContext(t)
		lis := bufconn.Listen(1 << 20)
		srv := startServer(t, lis, grpcchannel.WithMaxFrameBytes(small))
		d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
		a, b := connect(t, srv, d)
		if err := a.Send(cmdFrame("big", payload)); err != nil {
			t.Fatalf("Send() = %v, want nil (under the client's own limit)", err)
		}
		_, err := recvWithin(t, ctx, b)
		if !errors.Is(err, channel.ErrFrameTooLarge) {
			t.Errorf("server Recv() = %v, want ErrFrameTooLarge", err)
		}
		_, err = recvWithin(t, ctx, a)
		if !errors.Is(err, channel.ErrFrameTooLarge) || !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("client Recv() = %v, want ErrFrameTooLarge saying the message was larger than max", err)
		}
	})

	t.Run("ServerSendsTooMuch", func(t *testing.T) {
		ctx := testContext(t)
		lis := bufconn.Listen(1 << 20)
		srv := startServer(t, lis)
		d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis), grpcchannel.WithMaxFrameBytes(small))
		a, b := connect(t, srv, d)
		if err := b.Send(cmdFrame("big", payload)); err != nil {
			t.Fatalf("Send() = %v, want nil (under the server's own limit)", err)
		}
		_, err := recvWithin(t, ctx, a)
		if !errors.Is(err, channel.ErrFrameTooLarge) {
			t.Errorf("client Recv() = %v, want ErrFrameTooLarge", err)
		}
		if _, err := recvWithin(t, ctx, b); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("server Recv() = %v, want ErrClosed", err)
		}
	})
}

func TestHealth(t *testing.T) {
	ctx := testContext(t)
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	check := func(service string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q) = %v", service, err)
		}
		if resp.GetStatus() != want {
			t.Errorf("Check(%q) = %v, want %v", service, resp.GetStatus(), want)
		}
	}
	check("", healthpb.HealthCheckResponse_SERVING)
	check(grpcchannel.ServiceName, healthpb.HealthCheckResponse_SERVING)

	if err := srv.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	check("", healthpb.HealthCheckResponse_NOT_SERVING)
	check(grpcchannel.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

func TestServerClose(t *testing.T) {
	ctx := testContext(t)
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
	a, b := connect(t, srv, d)

	if err := srv.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	if _, err := srv.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Accept() after Close = %v, want ErrClosed", err)
	}
	if c, err := d.Dial(ctx); err == nil {
		_ = c.Close()
		t.Error("Dial() after server Close succeeded, want a refusal")
	} else if !errors.Is(err, grpcchannel.ErrUnavailable) {
		t.Errorf("Dial() after server Close = %v, want ErrUnavailable", err)
	}
	// The channel accepted before Close lives on.
	roundTrip(t, ctx, a, b)

	// Stop cuts it.
	srv.Stop()
	if _, err := recvWithin(t, ctx, a); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("client Recv() after Stop = %v, want ErrClosed", err)
	}
	if _, err := recvWithin(t, ctx, b); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("server Recv() after Stop = %v, want ErrClosed", err)
	}
}

func TestAcceptContext(t *testing.T) {
	srv := grpcchannel.NewServer()
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestShortTimeout)
	defer cancel()
	if _, err := srv.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Accept() = %v, want DeadlineExceeded", err)
	}
}

func TestDialerClose(t *testing.T) {
	ctx := testContext(t)
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	d, err := grpcchannel.NewDialer("passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
	if err != nil {
		t.Fatal(err)
	}
	a, b := connect(t, srv, d)
	if err := d.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	if _, err := recvWithin(t, ctx, a); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("client Recv() after Dialer.Close = %v, want ErrClosed", err)
	}
	if _, err := recvWithin(t, ctx, b); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("server Recv() after Dialer.Close = %v, want ErrClosed", err)
	}
	if c, err := d.Dial(ctx); !errors.Is(err, channel.ErrClosed) {
		if c != nil {
			_ = c.Close()
		}
		t.Errorf("Dial() after Close = %v, want ErrClosed", err)
	}
}

func TestNewDialerNeedsSecurityChoice(t *testing.T) {
	if d, err := grpcchannel.NewDialer("localhost:7400"); err == nil {
		_ = d.Close()
		t.Fatal("NewDialer() without WithTLS or WithInsecure succeeded, want an error")
	}
}

// Dial to a port nobody listens on fails at once (no hang until the
// deadline), again from TRANSIENT_FAILURE, and succeeds on the first try once
// a server listens there.
func TestDialUnreachable(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	d := newDialer(t, addr, grpcchannel.WithInsecure())
	for i := range 2 {
		start := time.Now()
		c, err := d.Dial(ctx)
		if err == nil {
			_ = c.Close()
			t.Fatalf("Dial() #%d to a closed port succeeded", i+1)
		}
		if ctx.Err() != nil || !errors.Is(err, grpcchannel.ErrUnavailable) {
			t.Fatalf("Dial() #%d = %v, want an error wrapping ErrUnavailable before the deadline", i+1, err)
		}
		t.Logf("Dial() #%d failed after %v: %v", i+1, time.Since(start), err)
	}

	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("Listen(%s) again = %v", addr, err)
	}
	srv := startServer(t, lis2)
	a, b := connect(t, srv, d)
	roundTrip(t, ctx, a, b)
}

// The server ends the stream with INVALID_ARGUMENT when its Conn is closed
// because of a malformed frame; the client sees ErrMalformedFrame with the
// reason.
func TestCloseWithErrorMalformed(t *testing.T) {
	ctx := testContext(t)
	a, b := bufconnPipe(t)
	cw, ok := b.(channel.CloseWithErrorer)
	if !ok {
		t.Fatal("server Conn is not a channel.CloseWithErrorer")
	}
	if err := cw.CloseWithError(fmt.Errorf("%w: frame carries neither a command nor a reply", channel.ErrMalformedFrame)); err != nil {
		t.Fatalf("CloseWithError() = %v", err)
	}
	_, err := recvWithin(t, ctx, a)
	if !errors.Is(err, channel.ErrMalformedFrame) || !strings.Contains(err.Error(), "neither a command nor a reply") {
		t.Errorf("client Recv() = %v, want ErrMalformedFrame with the server's reason", err)
	}
}

// A Close of a server Conn whose Connect handler hosts a read loop, blocked
// in Recv, ends the stream with the status it gives (through gRPC's
// transport stream), as the handler's return does when it hosts none: the
// client sees INVALID_ARGUMENT for a malformed frame, and the plain end of
// the stream (OK) after a Close, not CANCELLED; the hosted Recv returns.
func TestHostedCloseEndsWithItsStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(channel.Conn)
		check func(error) bool
	}{
		{"CloseWithError", func(c channel.Conn) {
			_ = c.(channel.CloseWithErrorer).CloseWithError(fmt.Errorf("%w: hosted", channel.ErrMalformedFrame))
		}, func(err error) bool {
			return errors.Is(err, channel.ErrMalformedFrame) && strings.Contains(err.Error(), "hosted")
		}},
		{"Close", func(c channel.Conn) { _ = c.Close() }, func(err error) bool {
			return errors.Is(err, channel.ErrClosed) && strings.Contains(err.Error(), "stream ended by peer")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			a, b := bufconnPipe(t)
			reading, ended := make(chan struct{}), make(chan error, 1)
			if !b.(channel.ReaderHost).HostReader(func() {
				close(reading)
				_, err := b.Recv()
				ended <- err
			}) {
				t.Fatal("HostReader() = false on a live server Conn")
			}
			select {
			case <-reading:
			case <-ctx.Done():
				t.Fatal("the hosted loop never ran")
			}
			tc.close(b)
			if _, err := recvWithin(t, ctx, a); !tc.check(err) {
				t.Errorf("client Recv() = %v", err)
			}
			select {
			case err := <-ended:
				if !errors.Is(err, channel.ErrClosed) {
					t.Errorf("hosted Recv() = %v, want ErrClosed", err)
				}
			case <-ctx.Done():
				t.Fatal("the hosted Recv did not return after Close")
			}
		})
	}
}

// rawClient opens a Connect stream with the generated client, to send what
// our Conn never would.
func rawClient(t *testing.T, ctx context.Context) (pb.Exchange_ConnectClient, *grpcchannel.Server) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	st, err := pb.NewExchangeClient(cc).Connect(sctx)
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	return st, srv
}

// An empty frame from a peer makes the Channel close the conn with the
// reason, which reaches the client as INVALID_ARGUMENT.
func TestEmptyFrameFromPeer(t *testing.T) {
	ctx := testContext(t)
	st, srv := rawClient(t, ctx)
	if err := st.Send(&pb.Frame{}); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	conn, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	ch := channel.New(conn, nil, channel.Config{})
	defer ch.Close()
	_, err = st.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "neither a command nor a reply") {
		t.Errorf("client Recv() = %v, want INVALID_ARGUMENT saying the frame is empty", err)
	}
	<-ch.Done()
	if err := ch.Err(); !errors.Is(err, channel.ErrMalformedFrame) {
		t.Errorf("server Channel.Err() = %v, want ErrMalformedFrame", err)
	}
}

// Frames coalesced in a batch are received one at a time, in order; an empty
// batch delivers nothing and a nested batch is malformed.
func TestRecvBatch(t *testing.T) {
	ctx := testContext(t)
	st, srv := rawClient(t, ctx)
	cmd := func(id string) *pb.Frame {
		return &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{Id: id, Type: "ECHO"}}}
	}
	batch := func(fs ...*pb.Frame) *pb.Frame {
		return &pb.Frame{Kind: &pb.Frame_Batch{Batch: &pb.Frames{Frames: fs}}}
	}
	for _, m := range []*pb.Frame{
		batch(cmd("1"), cmd("2"), cmd("3")),
		batch(),
		cmd("4"),
		batch(batch(cmd("5"))),
	} {
		if err := st.Send(m); err != nil {
			t.Fatalf("Send() = %v", err)
		}
	}
	conn, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	for _, want := range []string{"1", "2", "3", "4"} {
		if f := mustRecv(t, ctx, conn); f.Command == nil || f.Command.ID != want {
			t.Fatalf("Recv() = %+v, want command %s", f, want)
		}
	}
	f := mustRecv(t, ctx, conn)
	if err := f.Validate(); !errors.Is(err, channel.ErrMalformedFrame) {
		t.Errorf("nested batch: Recv() = %+v, whose Validate() = %v, want ErrMalformedFrame", f, err)
	}
}

// The sender's deadline travels as timeout_ms and bounds the peer's handler.
func TestChannelOverGRPC(t *testing.T) {
	ctx := testContext(t)
	a, b := tcpPipe(t)

	mux := command.NewMux()
	handlerDeadline := make(chan time.Duration, 1)
	mux.RegisterFunc("ECHO", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		if dl, ok := ctx.Deadline(); ok {
			handlerDeadline <- time.Until(dl)
		}
		return &command.Reply{Payload: c.Payload}, nil
	})
	helloDone := make(chan error, 1)
	go func() {
		_, _, err := channel.AcceptHello(ctx, b, func(context.Context, *command.Command, command.HelloPayload) (*command.Reply, error) {
			return command.Succeeded(&command.Command{}, command.HelloReplyPayload{TargetID: "t"})
		})
		helloDone <- err
	}()
	if _, err := channel.Hello(ctx, a, command.HelloPayload{TargetID: "t", ConnectorID: "c"}); err != nil {
		t.Fatalf("Hello() = %v", err)
	}
	if err := <-helloDone; err != nil {
		t.Fatalf("AcceptHello() = %v", err)
	}
	server := channel.New(b, mux, channel.Config{})
	defer server.Close()
	client := channel.New(a, nil, channel.Config{})
	defer client.Close()

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := client.Send(sctx, command.MustCommand("ECHO", map[string]string{"hello": "world"}))
	if err != nil {
		t.Fatalf("Send() = %v", err)
	}
	if string(r.Payload) != `{"hello":"world"}` || r.Status != command.StatusSucceeded {
		t.Errorf("reply = %+v, want the payload echoed with SUCCEEDED", r)
	}
	if d := <-handlerDeadline; d <= 0 || d > 5*time.Second {
		t.Errorf("handler deadline in %v, want within the sender's 5 s", d)
	}
}

// Protobuf strings must be valid UTF-8. A frame whose ids, type or metadata
// are not is refused by Send alone (gRPC would fail the whole stream); a
// reply's human-readable error text is repaired instead.
func TestInvalidUTF8(t *testing.T) {
	ctx := testContext(t)
	a, b := bufconnPipe(t)
	for _, f := range []*channel.Frame{
		{Command: &command.Command{ID: "x\xff", Type: "T"}},
		{Command: &command.Command{ID: "x", Type: "T\xff"}},
		{Command: &command.Command{ID: "x", Type: "T", Metadata: map[string]string{"k": "\xff"}}},
		{Reply: &command.Reply{CommandID: "\xff", Type: "T"}},
	} {
		if err := a.Send(f); !errors.Is(err, channel.ErrMalformedFrame) {
			t.Errorf("Send(%+v) = %v, want ErrMalformedFrame", f, err)
		}
	}
	if err := a.Send(&channel.Frame{Reply: &command.Reply{CommandID: "c", Type: "T", Status: command.StatusError, Error: "bad \xff byte"}}); err != nil {
		t.Fatalf("Send(reply with invalid UTF-8 in Error) = %v, want nil", err)
	}
	if f := mustRecv(t, ctx, b); f.Reply == nil || f.Reply.Error != "bad \uFFFD byte" {
		t.Errorf("Recv() = %+v, want the reply with its error text repaired", f)
	}
	roundTrip(t, ctx, a, b)
}

// GracefulStop waits for the accepted channels to be closed by their owner.
func TestGracefulStop(t *testing.T) {
	ctx := testContext(t)
	lis := bufconn.Listen(1 << 20)
	srv := startServer(t, lis)
	d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
	a, b := connect(t, srv, d)

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		srv.GracefulStop()
	}()
	t.Cleanup(func() { <-stopped })
	short := time.NewTimer(defaultTestShortTimeout)
	defer short.Stop()
	select {
	case <-stopped:
		t.Fatal("GracefulStop() returned while a channel was open")
	case <-short.C:
	}
	roundTrip(t, ctx, a, b) // the open channel still works

	if err := b.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("GracefulStop() did not return after the last channel closed")
	}
	if _, err := recvWithin(t, ctx, a); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("client Recv() = %v, want ErrClosed", err)
	}
}

// A gRPC server that does not serve the Exchange service is refused at Dial.
func TestDialNotAnExchangeServer(t *testing.T) {
	ctx := testContext(t)
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	defer func() {
		gs.Stop()
		<-served
	}()
	d := newDialer(t, "passthrough:///bufnet", grpcchannel.WithInsecure(), bufconnDialer(lis))
	c, err := d.Dial(ctx)
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial() to a server without the Exchange service succeeded")
	}
	if !errors.Is(err, channel.ErrClosed) || !strings.Contains(err.Error(), "Unimplemented") {
		t.Errorf("Dial() = %v, want ErrClosed saying Unimplemented", err)
	}
}
