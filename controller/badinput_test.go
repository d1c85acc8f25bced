package controller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
	"github.com/exchangekit/exchange/state"
)

// rawStream is a Connect stream driven frame by frame, as a hostile or
// broken connector would: no channel.Channel, no handshake helper.
type rawStream struct {
	t      *testing.T
	st     grpc.BidiStreamingClient[pb.Frame, pb.Frame]
	cancel context.CancelFunc
}

// openRaw opens a Connect stream to addr from the loopback address local
// (each case has a source of its own, so the per-source limits of one case
// never decide another).
func openRaw(ctx context.Context, t *testing.T, addr, local string) *rawStream {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			return nd.DialContext(ctx, "tcp", a)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	sctx, cancel := context.WithCancel(ctx)
	st, err := pb.NewExchangeClient(cc).Connect(sctx)
	if err != nil {
		cancel()
		t.Fatalf("Connect() = %v", err)
	}
	r := &rawStream{t: t, st: st, cancel: cancel}
	t.Cleanup(cancel)
	return r
}

func (r *rawStream) send(f *pb.Frame) {
	r.t.Helper()
	if err := r.st.Send(f); err != nil && !errors.Is(err, io.EOF) {
		r.t.Fatalf("Send() = %v", err)
	}
}

// next reads the next reply, answering the controller's commands on the way
// (PRIMARY, HEALTH_CHECK) as a connector would.
func (r *rawStream) next() (*pb.Reply, error) {
	for {
		f, err := r.st.Recv()
		if err != nil {
			return nil, err
		}
		if c := f.GetCommand(); c != nil {
			if !c.GetOneWay() {
				r.send(&pb.Frame{Kind: &pb.Frame_Reply{Reply: &pb.Reply{
					CommandId: c.GetId(), Type: c.GetType(), Status: pb.Status_STATUS_SUCCEEDED, Payload: []byte(`{"healthy":true}`),
				}}})
			}
			continue
		}
		return f.GetReply(), nil
	}
}

// reply reads the next reply and requires it to answer id.
func (r *rawStream) reply(id string) *pb.Reply {
	r.t.Helper()
	rep, err := r.next()
	if err != nil {
		r.t.Fatalf("Recv() = %v, want a reply to %q", err, id)
	}
	if rep.GetCommandId() != id {
		r.t.Fatalf("got %v, want a reply to %q", rep, id)
	}
	return rep
}

// end reads until the stream ends, requires that no frame came before the
// end when noFrames is set, and returns the status code it ended with.
func (r *rawStream) end(noFrames bool) (codes.Code, string) {
	r.t.Helper()
	for {
		f, err := r.st.Recv()
		if err == nil {
			if noFrames {
				r.t.Fatalf("got %v, want the stream to end without a frame", f)
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			return codes.OK, ""
		}
		st := status.Convert(err)
		return st.Code(), st.Message()
	}
}

func helloFrame(id string, payload string, oneWay bool) *pb.Frame {
	return &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{
		Id: id, Type: string(command.TypeHello), Payload: []byte(payload), OneWay: oneWay, TimeoutMs: 10000,
	}}}
}

func commandFrame(id, typ, payload string) *pb.Frame {
	return &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{Id: id, Type: typ, Payload: []byte(payload), TimeoutMs: 60000}}}
}

// accepted says HELLO on r for target and requires it accepted.
func (r *rawStream) accepted(target string) {
	r.t.Helper()
	r.send(helloFrame("h", `{"targetId":"`+target+`"}`, false))
	if rep := r.reply("h"); rep.GetStatus() != pb.Status_STATUS_SUCCEEDED {
		r.t.Fatalf("HELLO refused: %v", rep)
	}
}

// TestBadInputAtTheGRPCEdge throws hostile and broken input at a controller
// over real gRPC on loopback. After each case the controller is still
// running, and a well-behaved channel registered before the case still
// answers a command. The cases also pin what the peer sees (docs/protocol.md
// §2, §3.3, §4, §5.5, §8), where the outcome does not depend on work done
// elsewhere (HELLO metadata bounds, for one).
func TestBadInputAtTheGRPCEdge(t *testing.T) {
	srv, addr := grpcLoopback(t, grpcchannel.ServerLimits{
		HandshakeTimeout:  time.Second,
		ConnectionTimeout: 2 * time.Second,
	})
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	deep20k := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	mux := command.NewMux()
	mux.RegisterFunc("SLOW", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return command.Succeeded(c, nil)
	})
	cfg := fastConfig()
	cfg.Handler = mux
	cfg.Channel.MaxHandlers = 8
	h := newHarness(t, cfg, harnessOpts{lis: srv, dial: grpcDialer(t, addr, "127.0.0.2")})

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	// The bystander: registered before every case, asked after each.
	good := h.connect(connOpts{target: "good", token: "good", handlers: map[command.Type]command.Handler{"ECHO": echo}})
	h.waitRegistered(good.id(), true)

	// A batch runner over the controller, for the hostile batch reply.
	runner, err := batch.NewRunner(batch.DefaultConfig(), h.ctrl, state.NewBatchStore(h.store.(state.Store)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRunner := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- runner.Run(rctx) }()
	defer func() {
		stopRunner()
		<-runDone
		_ = runner.Close()
	}()

	for i, tc := range []struct {
		name string
		run  func(t *testing.T, local string)
	}{
		{"garbage bytes on the port", func(t *testing.T, local string) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			c, err := nd.DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			junk := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe" + strings.Repeat("\x00\x01garbage", 1000))
			_, _ = c.Write(junk)
			// The server must drop the connection (HTTP/2 preface error),
			// not hold it: reading ends well before this bound.
			_ = c.SetReadDeadline(time.Now().Add(testTimeout))
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("server kept a garbage connection open: %v", err)
			}
		}},
		{"frame over the size limit", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.send(helloFrame("h", `{"targetId":"big","metadata":{"k":"`+strings.Repeat("x", channel.DefaultMaxFrameBytes+1)+`"}}`, false))
			if code, msg := r.end(true); code != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v %q, want RESOURCE_EXHAUSTED", code, msg)
			}
		}},
		{"first frame is not a HELLO", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.send(commandFrame("p", "PING", `{}`))
			if rep := r.reply("p"); rep.GetStatus() != pb.Status_STATUS_ERROR || rep.GetCode() != 400 {
				t.Fatalf("reply %v, want ERROR 400", rep)
			}
			if code, msg := r.end(true); code != codes.OK {
				t.Fatalf("stream ended with %v %q, want OK after the refusal", code, msg)
			}
		}},
		{"first frame is a reply", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.send(&pb.Frame{Kind: &pb.Frame_Reply{Reply: &pb.Reply{CommandId: "x", Status: pb.Status_STATUS_SUCCEEDED}}})
			if code, msg := r.end(true); code != codes.InvalidArgument {
				t.Fatalf("stream ended with %v %q, want INVALID_ARGUMENT (§3.3: cannot be answered)", code, msg)
			}
		}},
		{"HELLO nested 10,000 deep", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
			r.send(helloFrame("h", `{"targetId":"deep","metadata":{"k":`+deep+`}}`, false))
			if rep := r.reply("h"); rep.GetStatus() != pb.Status_STATUS_ERROR || rep.GetCode() != 400 {
				t.Fatalf("reply %v, want ERROR 400 (metadata values are strings)", rep)
			}
			r.end(true)
		}},
		{"HELLO with 4 MB of metadata", func(t *testing.T, local string) {
			// Under the frame limit. Refused or accepted (bounds on HELLO
			// metadata are decided in controller/accept.go): either way
			// the controller answers, and stays up.
			// A HELLO this large may also take longer to arrive than the
			// pre-HELLO limit on a slow (race-enabled) run: the stream then
			// ends DEADLINE_EXCEEDED, which is a survivable outcome too.
			r := openRaw(ctx, t, addr, local)
			r.send(helloFrame("h", `{"targetId":"fat","metadata":{"k":"`+strings.Repeat("m", 4_000_000)+`"}}`, false))
			rep, err := r.next()
			switch {
			case err == nil && rep.GetCommandId() == "h":
				t.Logf("4 MB of metadata: HELLO %v %q", rep.GetStatus(), rep.GetError())
			case status.Code(err) == codes.DeadlineExceeded:
				t.Logf("4 MB of metadata: HELLO arrived after the pre-HELLO limit: %v", err)
			default:
				t.Fatalf("4 MB of metadata: got %v, %v; want the HELLO reply", rep, err)
			}
			r.cancel()
		}},
		{"HELLO inside a batch frame", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.send(&pb.Frame{Kind: &pb.Frame_Batch{Batch: &pb.Frames{Frames: []*pb.Frame{helloFrame("h", `{"targetId":"batched"}`, false)}}}})
			rep := r.reply("h")
			if rep.GetStatus() != pb.Status_STATUS_ERROR || rep.GetCode() != 400 || !strings.Contains(rep.GetError(), "batch") {
				t.Fatalf("reply %v, want ERROR 400 saying HELLO must not come in a batch", rep)
			}
			if code, msg := r.end(true); code != codes.OK {
				t.Fatalf("stream ended with %v %q, want OK after the refusal", code, msg)
			}
		}},
		{"one-way HELLO", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.send(helloFrame("h", `{"targetId":"oneway"}`, true))
			if code, msg := r.end(true); code != codes.InvalidArgument {
				t.Fatalf("stream ended with %v %q, want INVALID_ARGUMENT and no reply", code, msg)
			}
			if _, ok := h.ctrl.Target("oneway"); ok {
				t.Fatal("a one-way HELLO registered a channel")
			}
		}},
		{"reply to a command never sent", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.accepted("liar")
			r.send(&pb.Frame{Kind: &pb.Frame_Reply{Reply: &pb.Reply{CommandId: "never-sent", Status: pb.Status_STATUS_SUCCEEDED, Payload: []byte(`{}`)}}})
			// Ignored (§3.3): the channel still answers.
			r.send(commandFrame("p", "PING", `{}`))
			if rep := r.reply("p"); rep.GetType() != string(command.TypeUnknown) {
				t.Fatalf("reply %v, want UNKNOWN", rep)
			}
			r.cancel()
		}},
		{"flood beyond the in-flight bound", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			r.accepted("flood")
			defer unblock()
			const n = 200
			for i := range n {
				r.send(commandFrame(fmt.Sprint("s", i), "SLOW", `{}`))
			}
			// The handlers are blocked: the first n-MaxHandlers replies are
			// all busy answers, with a retry hint.
			for range n - cfg.Channel.MaxHandlers {
				rep, err := r.next()
				if err != nil {
					t.Fatalf("Recv() = %v", err)
				}
				if rep.GetCode() != 429 || rep.GetRetryAfterMs() <= 0 {
					t.Fatalf("reply %v while the handlers are blocked, want busy (429 with retry_after_ms)", rep)
				}
			}
			unblock()
			for range cfg.Channel.MaxHandlers {
				if rep, err := r.next(); err != nil || rep.GetStatus() != pb.Status_STATUS_SUCCEEDED {
					t.Fatalf("after the flood: %v, %v; want the blocked commands answered", rep, err)
				}
			}
			r.cancel()
		}},
		{"stream that sends nothing", func(t *testing.T, local string) {
			r := openRaw(ctx, t, addr, local)
			if code, msg := r.end(true); code != codes.DeadlineExceeded {
				t.Fatalf("stream ended with %v %q, want DEADLINE_EXCEEDED", code, msg)
			}
		}},
		{"reply nested 20,000 deep to a batch command", func(t *testing.T, local string) {
			hostile, err := h.dial(ctx, connOpts{target: "hostile", handlers: map[command.Type]command.Handler{
				"DEEP": command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
					return &command.Reply{Status: command.StatusSucceeded, Payload: []byte(deep20k)}, nil
				}),
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer hostile.close()
			h.waitRegistered(hostile.id(), true)
			b, err := runner.ExecuteBatch(ctx, batch.Batch{TargetID: "hostile", Commands: []batch.Command{{Command: &command.Command{Type: "DEEP"}}}})
			if err != nil {
				t.Fatal(err)
			}
			done, err := runner.AwaitBatch(ctx, b.ID)
			if err != nil {
				t.Fatalf("AwaitBatch() = %v", err)
			}
			t.Logf("batch with a 20,000-deep reply ended %s", done.Status)
			// The state still snapshots and restores (a restart would read it).
			var snap []byte
			h.store.(state.Store).View(func(s *state.State) { snap, err = s.Marshal() })
			if err != nil {
				t.Fatalf("Marshal() = %v", err)
			}
			if _, err := state.Unmarshal(snap); err != nil {
				t.Fatalf("the state no longer restores after a 20,000-deep reply: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, fmt.Sprintf("127.0.0.%d", 10+i))
			select {
			case <-h.runDone:
				t.Fatalf("controller stopped: Run() = %v", h.runResult)
			default:
			}
			if _, ok := h.ctrl.Channel(good.id()); !ok {
				t.Fatal("the well-behaved channel is no longer registered")
			}
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			r, err := h.ctrl.Send(sctx, "good", command.MustCommand("ECHO", map[string]string{"after": tc.name}))
			if err != nil || r.Status != command.StatusSucceeded {
				t.Fatalf("the well-behaved channel after %q: Send(ECHO) = %+v, %v", tc.name, r, err)
			}
		})
	}
}
