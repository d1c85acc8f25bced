package grpcchannel_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// The same command and reply, as a channel.Frame and as the generated
// messages a peer built from exchange.proto sends and receives.
var (
	interopCmd = &channel.Frame{Command: &command.Command{ID: "c1", Type: "SET", Payload: []byte(`{"k":"v"}`),
		Metadata: map[string]string{"trace": "t-1", "tenant": "ü"}, Timeout: 1500 * time.Millisecond, FreshID: true}}
	interopCmdPB = &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{Id: "c1", Type: "SET", Payload: []byte(`{"k":"v"}`),
		Metadata: map[string]string{"trace": "t-1", "tenant": "ü"}, TimeoutMs: 1500, FreshId: true}}}
	interopReply = &channel.Frame{Reply: &command.Reply{CommandID: "c1", Type: "SET", Status: command.StatusError,
		Payload: []byte(`{}`), Error: "busy", RetryAfter: 2 * time.Second, Code: 429}}
	interopReplyPB = &pb.Frame{Kind: &pb.Frame_Reply{Reply: &pb.Reply{CommandId: "c1", Type: "SET", Status: pb.Status_STATUS_ERROR,
		Payload: []byte(`{}`), Error: "busy", RetryAfterMs: 2000, Code: 429}}}
	interopBatchPB = &pb.Frame{Kind: &pb.Frame_Batch{Batch: &pb.Frames{Frames: []*pb.Frame{interopCmdPB, interopReplyPB}}}}
)

func wantFrame(t *testing.T, ctx context.Context, c channel.Conn, want *channel.Frame) {
	t.Helper()
	if d := cmp.Diff(want, mustRecv(t, ctx, c)); d != "" {
		t.Fatalf("Recv() differs (-want +got):\n%s", d)
	}
}

func wantPB(t *testing.T, got *pb.Frame, err error, want *pb.Frame) {
	t.Helper()
	if err != nil {
		t.Fatalf("Recv() = %v", err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("Recv() = %v, want %v", got, want)
	}
}

// A client with a generated stub and gRPC's standard codec talks to our
// Server, over Connect and over Link: each side reads what the other wrote,
// single frames and batches.
func TestInteropStandardClient(t *testing.T) {
	for _, service := range []string{"Connect", "Link"} {
		t.Run(service, func(t *testing.T) {
			ctx := testContext(t)
			lis := listenTCP(t)
			srv := startServer(t, lis)
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cc.Close() })
			sctx, cancel := context.WithCancel(ctx)
			t.Cleanup(cancel)
			var st grpc.BidiStreamingClient[pb.Frame, pb.Frame]
			listener := channel.Listener(srv)
			if service == "Connect" {
				st, err = pb.NewExchangeClient(cc).Connect(sctx)
			} else {
				listener = srv.Links()
				st, err = pb.NewClusterClient(cc).Link(sctx)
			}
			if err != nil {
				t.Fatalf("%s() = %v", service, err)
			}
			if err := st.Send(interopCmdPB); err != nil {
				t.Fatalf("client Send() = %v", err)
			}
			conn, err := listener.Accept(ctx)
			if err != nil {
				t.Fatalf("Accept() = %v", err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			wantFrame(t, ctx, conn, interopCmd)

			if err := conn.Send(interopReply); err != nil {
				t.Fatalf("server Send() = %v", err)
			}
			m, err := st.Recv()
			wantPB(t, m, err, interopReplyPB)

			if err := conn.(channel.BatchSender).SendBatch([]*channel.Frame{interopCmd, interopReply}); err != nil {
				t.Fatalf("server SendBatch() = %v", err)
			}
			m, err = st.Recv()
			wantPB(t, m, err, interopBatchPB)

			if err := st.Send(interopBatchPB); err != nil {
				t.Fatalf("client Send(batch) = %v", err)
			}
			wantFrame(t, ctx, conn, interopCmd)
			wantFrame(t, ctx, conn, interopReply)
		})
	}
}

// echoServer is a plain Exchange service built from the generated code,
// served with gRPC's standard codec: it hands every frame it receives to
// got, and answers each with the reply, then the batch of both.
type echoServer struct {
	pb.UnimplementedExchangeServer
	got         chan *pb.Frame
	contentType chan []string
}

func (s *echoServer) Connect(st pb.Exchange_ConnectServer) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	s.contentType <- md.Get("content-type")
	if err := st.SendHeader(metadata.Pairs("plain", "yes")); err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return nil
		}
		select {
		case s.got <- m:
		case <-st.Context().Done():
			return nil
		}
		if err := st.Send(interopReplyPB); err != nil {
			return nil
		}
		if err := st.Send(interopBatchPB); err != nil {
			return nil
		}
	}
}

// Our Dialer talks to a server with a generated stub and gRPC's standard
// codec.
func TestInteropStandardServer(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	gs := grpc.NewServer()
	echo := &echoServer{got: make(chan *pb.Frame, 4), contentType: make(chan []string, 1)}
	pb.RegisterExchangeServer(gs, echo)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	conn, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if ct := <-echo.contentType; len(ct) != 1 || ct[0] != "application/grpc+proto" {
		t.Errorf("content-type = %q, want the standard application/grpc+proto", ct)
	}

	if err := conn.Send(interopCmd); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	select {
	case m := <-echo.got:
		wantPB(t, m, nil, interopCmdPB)
	case <-ctx.Done():
		t.Fatal("the plain server received nothing")
	}
	wantFrame(t, ctx, conn, interopReply)
	wantFrame(t, ctx, conn, interopCmd)
	wantFrame(t, ctx, conn, interopReply)

	if err := conn.(channel.BatchSender).SendBatch([]*channel.Frame{interopCmd, interopReply}); err != nil {
		t.Fatalf("SendBatch() = %v", err)
	}
	select {
	case m := <-echo.got:
		wantPB(t, m, nil, interopBatchPB)
	case <-ctx.Done():
		t.Fatal("the plain server received no batch")
	}
}

// The frame limit counts the exact encoded size (the protobuf size of the
// exchange.v1.Frame, which gRPC's MaxRecvMsgSize counts too): a frame or a
// batch of exactly the limit is sent and received, one byte more is refused
// by Send with the size in the error, and the conn stays usable.
func TestFrameLimitExact(t *testing.T) {
	ctx := testContext(t)
	const limit = 8 << 10
	lis := listenTCP(t)
	srv := startServer(t, lis, grpcchannel.WithMaxFrameBytes(limit))
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure(), grpcchannel.WithMaxFrameBytes(limit))
	a, b := connect(t, srv, d)

	// sized returns a command whose frame (alone, or as the only frame of a
	// batch) encodes to exactly n bytes, measured with the generated code.
	sized := func(n int, batch bool) *channel.Frame {
		for p := n; p > 0; p-- {
			m := &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{Id: "x", Type: "ECHO", Payload: make([]byte, p)}}}
			if batch {
				m = &pb.Frame{Kind: &pb.Frame_Batch{Batch: &pb.Frames{Frames: []*pb.Frame{m}}}}
			}
			if proto.Size(m) == n {
				return cmdFrame("x", make([]byte, p))
			}
		}
		t.Fatalf("no payload size gives a %d-byte frame", n)
		return nil
	}
	for _, p := range []struct {
		name     string
		from, to channel.Conn
	}{{"client", a, b}, {"server", b, a}} {
		if err := p.from.Send(sized(limit+1, false)); !errors.Is(err, channel.ErrFrameTooLarge) ||
			!strings.Contains(err.Error(), fmt.Sprintf("%d bytes encoded, limit %d", limit+1, limit)) {
			t.Fatalf("%s Send(limit+1 bytes) = %v, want ErrFrameTooLarge with the size", p.name, err)
		}
		bs := p.from.(channel.BatchSender)
		if err := bs.SendBatch([]*channel.Frame{sized(limit+1, true)}); !errors.Is(err, channel.ErrFrameTooLarge) ||
			!strings.Contains(err.Error(), fmt.Sprintf("batch of 1 frames is %d bytes encoded, limit %d", limit+1, limit)) {
			t.Fatalf("%s SendBatch(limit+1 bytes) = %v, want ErrFrameTooLarge with the size", p.name, err)
		}
		exact := sized(limit, false)
		if err := p.from.Send(exact); err != nil {
			t.Fatalf("%s Send(exactly the limit) = %v", p.name, err)
		}
		wantFrame(t, ctx, p.to, exact)
		exact = sized(limit, true)
		if err := bs.SendBatch([]*channel.Frame{exact}); err != nil {
			t.Fatalf("%s SendBatch(exactly the limit) = %v", p.name, err)
		}
		wantFrame(t, ctx, p.to, exact)
	}
}
