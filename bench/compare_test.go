package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/exchangepb"
)

// payload is the ~100-byte body every contender echoes.
var payload = []byte(`{"op":"set","key":"device/42/config","value":"brightness=80;mode=auto;interval=30s;x=1"}`)

// inFlight is the number of concurrent requests in the pipelined variant.
const inFlight = 64

// roundTrip sends one request and waits for its reply.
type roundTrip func(ctx context.Context) error

// runContender runs the sequential and the 64-in-flight benchmarks of one
// contender.
func runContender(b *testing.B, rt roundTrip) {
	b.Run("Sequential", func(b *testing.B) {
		ctx := b.Context()
		b.ReportAllocs()
		for b.Loop() {
			if err := rt(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("InFlight%d", inFlight), func(b *testing.B) {
		ctx := b.Context()
		b.ReportAllocs()
		var next atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, inFlight)
		n := int64(b.N)
		b.ResetTimer()
		for range inFlight {
			wg.Go(func() {
				for next.Add(1) <= n {
					if err := rt(ctx); err != nil {
						errc <- err
						return
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		select {
		case err := <-errc:
			b.Fatal(err)
		default:
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
}

// exchangeSetup starts a controller on lis and one connector through dialer,
// answering ECHO, and returns the controller.
func exchangeSetup(b testing.TB, lis channel.Listener, dialer channel.Dialer) *controller.Controller {
	b.Helper()
	cfg := controller.DefaultConfig()
	cfg.NodeID = "bench"
	cfg.Logger = slog.New(slog.DiscardHandler)
	registered := make(chan struct{}, 1024) // one signal per channel registered
	cfg.OnEvent = func(ev controller.Event) {
		if ev.Kind == controller.EventChannelRegistered {
			select { // never block the controller's event dispatcher
			case registered <- struct{}{}:
			default:
			}
		}
	}
	ctrl, err := controller.New(cfg, lis, standalone.New(cfg.NodeID))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ctrl.Run(ctx) }()

	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
	ccfg := connector.DefaultConfig()
	ccfg.TargetID = "t"
	ccfg.Logger = slog.New(slog.DiscardHandler)
	conn, err := connector.New(ccfg, mux, dialer)
	if err != nil {
		b.Fatal(err)
	}
	cdone := make(chan struct{})
	go func() { defer close(cdone); _ = conn.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := conn.WaitConnected(wctx); err != nil {
		b.Fatal(err)
	}
	for range 1 { // registration follows HELLO; wait for the controller's event
		select {
		case <-registered:
		case <-wctx.Done():
			b.Fatal("channels never registered")
		}
	}
	b.Cleanup(func() {
		_ = conn.Close()
		<-cdone
		_ = ctrl.Close()
		cancel()
		<-done
	})
	return ctrl
}

func exchangeRoundTrip(ctrl *controller.Controller) roundTrip {
	return func(ctx context.Context) error {
		r, err := ctrl.Send(ctx, "t", &command.Command{Type: "ECHO", Payload: payload})
		if err != nil {
			return err
		}
		if len(r.Payload) != len(payload) {
			return fmt.Errorf("echo: got %d bytes", len(r.Payload))
		}
		return nil
	}
}

// BenchmarkExchangeEmbedded: controller.Send through the in-process twin.
func BenchmarkExchangeEmbedded(b *testing.B) {
	runContender(b, exchangeEmbedded(b))
}

// exchangeEmbedded is controller.Send to a connector over the in-process twin.
func exchangeEmbedded(b testing.TB) roundTrip {
	lis := embedded.Listen()
	return exchangeRoundTrip(exchangeSetup(b, lis, lis))
}

// BenchmarkExchangeGRPC: controller.Send to a connector over gRPC on loopback.
func BenchmarkExchangeGRPC(b *testing.B) {
	runContender(b, exchangeGRPC(b))
}

// exchangeGRPC is controller.Send to a connector over gRPC on loopback.
func exchangeGRPC(b testing.TB) roundTrip {
	srv := grpcchannel.NewServer()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(nl) }()
	d, err := grpcchannel.NewDialer(nl.Addr().String(), grpcchannel.WithInsecure())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close(); srv.Stop(); <-served })
	return exchangeRoundTrip(exchangeSetup(b, srv, d))
}

// echoServer is the raw-gRPC baseline's server: it answers every command
// frame on the stream with a reply frame carrying the same payload.
type echoServer struct {
	exchangepb.UnimplementedExchangeServer
}

func (echoServer) Connect(stream exchangepb.Exchange_ConnectServer) error {
	out := make(chan *exchangepb.Frame, 1024)
	errc := make(chan error, 1)
	go func() {
		for f := range out {
			if err := stream.Send(f); err != nil {
				errc <- err
				for range out {
				}
				return
			}
		}
		errc <- nil
	}()
	for {
		f, err := stream.Recv()
		if err != nil {
			close(out)
			<-errc
			return nil
		}
		c := f.GetCommand()
		out <- &exchangepb.Frame{Kind: &exchangepb.Frame_Reply{Reply: &exchangepb.Reply{
			CommandId: c.GetId(), Type: c.GetType(), Status: exchangepb.Status_STATUS_SUCCEEDED, Payload: c.GetPayload()}}}
	}
}

// rawClient is the smallest correct client a user would write: one stream, a
// mutex around Send, a pending map, a reader goroutine.
type rawClient struct {
	stream exchangepb.Exchange_ConnectClient
	sendMu sync.Mutex
	mu     sync.Mutex
	seq    int64
	wait   map[string]chan *exchangepb.Reply
}

func (c *rawClient) readLoop() {
	for {
		f, err := c.stream.Recv()
		if err != nil {
			return
		}
		r := f.GetReply()
		c.mu.Lock()
		ch := c.wait[r.GetCommandId()]
		delete(c.wait, r.GetCommandId())
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (c *rawClient) roundTrip(ctx context.Context) error {
	ch := make(chan *exchangepb.Reply, 1)
	c.mu.Lock()
	c.seq++
	id := strconv.FormatInt(c.seq, 10)
	c.wait[id] = ch
	c.mu.Unlock()
	c.sendMu.Lock()
	err := c.stream.Send(&exchangepb.Frame{Kind: &exchangepb.Frame_Command{Command: &exchangepb.Command{
		Id: id, Type: "ECHO", Payload: payload}}})
	c.sendMu.Unlock()
	if err != nil {
		return err
	}
	select {
	case r := <-ch:
		if len(r.GetPayload()) != len(payload) {
			return fmt.Errorf("echo: got %d bytes", len(r.GetPayload()))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// BenchmarkRawGRPC: a hand-rolled request/reply over one gRPC bidi stream,
// the same .proto, no exchange semantics (no deadlines carried, no bounds, no
// health, no registry).
func BenchmarkRawGRPC(b *testing.B) {
	runContender(b, rawGRPC(b))
}

// rawGRPC is the raw-gRPC baseline: a rawClient over one stream to an
// echoServer on loopback.
func rawGRPC(b testing.TB) roundTrip {
	gs := grpc.NewServer()
	exchangepb.RegisterExchangeServer(gs, echoServer{})
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(nl) }()
	cc, err := grpc.NewClient(nl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := exchangepb.NewExchangeClient(cc).Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c := &rawClient{stream: stream, wait: map[string]chan *exchangepb.Reply{}}
	read := make(chan struct{})
	go func() { defer close(read); c.readLoop() }()
	b.Cleanup(func() {
		cancel()
		<-read
		_ = cc.Close()
		gs.Stop()
		<-served
	})
	return c.roundTrip
}

// BenchmarkNATS: request-reply through an in-process nats-server on loopback.
func BenchmarkNATS(b *testing.B) {
	runContender(b, natsRequest(b))
}

// natsRequest is NATS request-reply through an in-process nats-server on
// loopback: one requester connection, one responder connection.
func natsRequest(b testing.TB) roundTrip {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	responder, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := responder.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		b.Fatal(err)
	}
	requester, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		requester.Close()
		responder.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return func(ctx context.Context) error {
		m, err := requester.RequestWithContext(ctx, "echo", payload)
		if err != nil {
			return err
		}
		if len(m.Data) != len(payload) {
			return fmt.Errorf("echo: got %d bytes", len(m.Data))
		}
		return nil
	}
}
