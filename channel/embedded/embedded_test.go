package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipe is the MakePipe of the embedded twin.
func pipe(t testing.TB) (channel.Conn, channel.Conn) {
	a, b := embedded.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

func TestConformance(t *testing.T) {
	channeltest.TestConn(t, pipe)
	channeltest.TestChannel(t, pipe)
}

func BenchmarkEmbedded(b *testing.B) { channeltest.RunBenchmarks(b, pipe) }

const (
	defaultTestTimeout      = 10 * time.Second
	defaultTestShortTimeout = 20 * time.Millisecond
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// connResult is the outcome of a Dial or an Accept.
type connResult struct {
	c   channel.Conn
	err error
}

// goConn runs f on a goroutine and returns where its result arrives. At
// cleanup lis is closed (to unblock f if the test failed early), the goroutine
// is waited for and the Conn it got, if any, closed.
func goConn(t *testing.T, lis *embedded.Listener, f func() (channel.Conn, error)) <-chan connResult {
	out := make(chan connResult, 1)
	done := make(chan struct{})
	var c channel.Conn // set before done is closed
	go func() {
		defer close(done)
		var err error
		c, err = f()
		out <- connResult{c, err}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		<-done
		if c != nil {
			_ = c.Close()
		}
	})
	return out
}

func await(ctx context.Context, t *testing.T, ch <-chan connResult, what string) connResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatalf("%s: no result before %v", what, ctx.Err())
		return connResult{}
	}
}

func mustBlock(t *testing.T, ch <-chan connResult, what string) {
	t.Helper()
	timer := time.NewTimer(defaultTestShortTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		t.Fatalf("%s = (%v, %v), want it to block", what, r.c, r.err)
	case <-timer.C:
	}
}

func TestListenerDialAccept(t *testing.T) {
	ctx := testContext(t)
	lis := embedded.Listen()
	t.Cleanup(func() { _ = lis.Close() })

	// Several dials, each paired with exactly one accept.
	const n = 3
	for i := range n {
		dialed := goConn(t, lis, func() (channel.Conn, error) { return lis.Dial(ctx) })
		mustBlock(t, dialed, "Dial() with nobody accepting")
		server, err := lis.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept() = %v", err)
		}
		t.Cleanup(func() { _ = server.Close() })
		client := await(ctx, t, dialed, "Dial")
		if client.err != nil {
			t.Fatalf("Dial() = %v", client.err)
		}
		// The two ends are connected to each other.
		id := strconv.Itoa(i)
		if err := client.c.Send(&channel.Frame{Command: &command.Command{ID: id, Type: "PING"}}); err != nil {
			t.Fatal(err)
		}
		f, err := server.Recv()
		if err != nil || f.Command.ID != id {
			t.Fatalf("server Recv() = (%+v, %v), want PING[%s]", f, err, id)
		}
		if got, want := channel.Peer(client.c).Addr, "embedded:a"; got != want {
			t.Errorf("dialing end Peer().Addr = %q, want %q", got, want)
		}
		if got, want := channel.Peer(server).Addr, "embedded:b"; got != want {
			t.Errorf("accepted end Peer().Addr = %q, want %q", got, want)
		}
	}
}

func TestListenerAcceptWaitsForDial(t *testing.T) {
	ctx := testContext(t)
	lis := embedded.Listen()
	accepted := goConn(t, lis, func() (channel.Conn, error) { return lis.Accept(ctx) })
	mustBlock(t, accepted, "Accept() with nobody dialing")
	client, err := lis.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { _ = client.Close() })
	if r := await(ctx, t, accepted, "Accept"); r.err != nil {
		t.Fatalf("Accept() = %v", r.err)
	}
}

func TestListenerCloseFailsPending(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		call func(*embedded.Listener) (channel.Conn, error)
	}{
		{"Dial", func(l *embedded.Listener) (channel.Conn, error) { return l.Dial(ctx) }},
		{"Accept", func(l *embedded.Listener) (channel.Conn, error) { return l.Accept(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis := embedded.Listen()
			pending := goConn(t, lis, func() (channel.Conn, error) { return tc.call(lis) })
			mustBlock(t, pending, tc.name+"()")
			if err := lis.Close(); err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
			if r := await(ctx, t, pending, tc.name); !errors.Is(r.err, channel.ErrClosed) {
				t.Errorf("pending %s() after Close = %v, want an error wrapping ErrClosed", tc.name, r.err)
			}
			// And every later call fails at once; Close is idempotent.
			if _, err := tc.call(lis); !errors.Is(err, channel.ErrClosed) {
				t.Errorf("%s() after Close = %v, want an error wrapping ErrClosed", tc.name, err)
			}
			if err := lis.Close(); err != nil {
				t.Errorf("second Close() = %v, want nil", err)
			}
		})
	}
}

func TestListenerCloseKeepsConns(t *testing.T) {
	ctx := testContext(t)
	lis := embedded.Listen()
	accepted := goConn(t, lis, func() (channel.Conn, error) { return lis.Accept(ctx) })
	client, err := lis.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	server := await(ctx, t, accepted, "Accept")
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	if err := client.Send(&channel.Frame{Command: &command.Command{ID: "1", Type: "PING"}}); err != nil {
		t.Fatalf("Send() on a conn of a closed listener = %v, want nil", err)
	}
	if _, err := server.c.Recv(); err != nil {
		t.Fatalf("Recv() on a conn of a closed listener = %v, want nil", err)
	}
}

func TestListenerContextCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(context.Context, *embedded.Listener) (channel.Conn, error)
	}{
		{"Dial", func(ctx context.Context, l *embedded.Listener) (channel.Conn, error) { return l.Dial(ctx) }},
		{"Accept", func(ctx context.Context, l *embedded.Listener) (channel.Conn, error) { return l.Accept(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outer := testContext(t)
			lis := embedded.Listen()
			ctx, cancel := context.WithCancel(outer)
			defer cancel()
			pending := goConn(t, lis, func() (channel.Conn, error) { return tc.call(ctx, lis) })
			mustBlock(t, pending, tc.name+"()")
			cancel()
			if r := await(outer, t, pending, tc.name); !errors.Is(r.err, context.Canceled) {
				t.Errorf("%s() after its ctx was cancelled = %v, want an error wrapping context.Canceled", tc.name, r.err)
			}
			// The listener still works.
			accepted := goConn(t, lis, func() (channel.Conn, error) { return lis.Accept(outer) })
			c, err := lis.Dial(outer)
			if err != nil {
				t.Fatalf("Dial() after a cancelled call = %v", err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if r := await(outer, t, accepted, "Accept"); r.err != nil {
				t.Fatalf("Accept() after a cancelled call = %v", r.err)
			}
		})
	}
}

func TestMaxFrameBytes(t *testing.T) {
	a, b := embedded.Pipe(embedded.WithMaxFrameBytes(100))
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ok := &channel.Frame{Command: &command.Command{ID: "1", Type: "T", Payload: make([]byte, 50)}}
	if err := a.Send(ok); err != nil {
		t.Fatalf("Send() of a frame under the limit = %v", err)
	}
	big := &channel.Frame{Reply: &command.Reply{CommandID: "1", Type: "T", Payload: make([]byte, 100)}}
	if err := a.Send(big); !errors.Is(err, channel.ErrFrameTooLarge) {
		t.Fatalf("Send() of a frame over the limit = %v, want ErrFrameTooLarge", err)
	}
	if err := a.Send(nil); !errors.Is(err, channel.ErrMalformedFrame) {
		t.Errorf("Send(nil) = %v, want ErrMalformedFrame", err)
	}
}

// TestCopiesEveryPayloadSize sends commands and replies of payload sizes
// around every buffer size of the frame boxes: the peer gets an equal copy
// that shares no memory with the sender's, whose capacity ends at its length
// (an append copies), and a nil payload stays nil.
func TestCopiesEveryPayloadSize(t *testing.T) {
	a, b := pipe(t)
	sizes := []int{-1, 0, 1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129, 255, 256, 257, 511, 512, 513, 4000}
	for _, n := range sizes {
		var p []byte
		if n >= 0 {
			p = make([]byte, n)
			for i := range p {
				p[i] = byte(i)
			}
		}
		for _, f := range []*channel.Frame{
			{Command: &command.Command{ID: "c", Type: "T", Payload: p}},
			{Reply: &command.Reply{CommandID: "c", Type: "T", Payload: p}},
		} {
			if err := a.Send(f); err != nil {
				t.Fatalf("send %d bytes: %v", n, err)
			}
			g, err := b.Recv()
			if err != nil {
				t.Fatalf("recv %d bytes: %v", n, err)
			}
			want, got := payloadOf(f), payloadOf(g)
			switch {
			case (want == nil) != (got == nil):
				t.Errorf("%d bytes: got payload nil=%v, want nil=%v", n, got == nil, want == nil)
			case !bytes.Equal(got, want):
				t.Errorf("%d bytes: the copy differs", n)
			case cap(got) != len(got):
				t.Errorf("%d bytes: the copy's capacity is %d, want its length", n, cap(got))
			case n > 0 && &got[0] == &want[0]:
				t.Errorf("%d bytes: the copy shares the sender's memory", n)
			}
		}
	}
}

func payloadOf(f *channel.Frame) []byte {
	if f.Command != nil {
		return f.Command.Payload
	}
	return f.Reply.Payload
}

// A batch larger than the queue goes out as the receiver makes room: the
// sender wakes the receiver before it waits, and every frame arrives in order.
func TestBatchLargerThanQueue(t *testing.T) {
	a, b := pipe(t)
	const n = 150
	fs := make([]*channel.Frame, n)
	for i := range fs {
		fs[i] = &channel.Frame{Command: &command.Command{ID: strconv.Itoa(i), Type: "T"}}
	}
	errc := make(chan error, 1)
	go func() { errc <- a.(channel.BatchSender).SendBatch(fs) }()
	for i := range n {
		f, err := b.Recv()
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if f.Command.ID != strconv.Itoa(i) {
			t.Fatalf("frame %d has id %s", i, f.Command.ID)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("SendBatch = %v", err)
	}
}

// readerPipe is pipe with the InlineReceiver fast path off (on by
// default, decision 0043): every frame goes through the receiver's Recv.
func readerPipe(t testing.TB) (channel.Conn, channel.Conn) {
	a, b := embedded.Pipe(embedded.WithoutInline())
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

func TestInlineReceiver(t *testing.T) { channeltest.TestInlineReceiver(t, pipe) }

// TestConformanceReader runs the Channel suite with the fast path off: the
// reader's path keeps every semantic the suite checks too.
func TestConformanceReader(t *testing.T) { channeltest.TestChannel(t, readerPipe) }
