package grpcchannel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
)

// goroutineStacks returns the stack of every goroutine.
func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(bytes.TrimSpace(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// countStacks counts the stacks that contain every one of frames.
func countStacks(stacks []string, frames ...string) int {
	n := 0
next:
	for _, s := range stacks {
		for _, f := range frames {
			if !strings.Contains(s, f) {
				continue next
			}
		}
		n++
	}
	return n
}

// An idle channel costs its server no goroutine beyond gRPC's own: the read
// loop runs on the Connect handler's goroutine (channel.ReaderHost), there
// is no writer while nothing is queued, and no handler while nothing is
// handled. The client side keeps one goroutine of the channel's: its reader.
// This is the structure the memory figures of BenchmarkIdleChannels rest on.
func TestIdleChannelGoroutines(t *testing.T) {
	const n = 8
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis)
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	mux := echoMux()
	for range n {
		a, b := connect(t, srv, d)
		ca := channel.New(a, mux, channel.Config{})
		t.Cleanup(func() { _ = ca.Close() })
		cb := channel.New(b, mux, channel.Config{})
		t.Cleanup(func() { _ = cb.Close() })
		// Traffic both ways first: writers and handlers come and go.
		for _, ch := range []*channel.Channel{ca, cb} {
			if _, err := ch.Send(ctx, command.MustCommand("ECHO", "x")); err != nil {
				t.Fatalf("Send() = %v", err)
			}
		}
	}

	// The last writers and handlers end on their own, just after the replies
	// went out: wait for the structure, within the test's deadline.
	const (
		connectFrame = "grpcchannel.(*Server).Connect("
		hosted       = "channel.(*Channel).hostedReadLoop("
		own          = "channel.(*Channel).ownReadLoop("
		chanPkg      = "exchangekit/exchange/channel."
	)
	var stacks []string
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		stacks = goroutineStacks()
		if countStacks(stacks, chanPkg) == 2*n {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("goroutines running channel code: %d, want %d (a reader per side):\n%s",
				countStacks(stacks, chanPkg), 2*n, strings.Join(stacks, "\n\n"))
		}
	}
	if got := countStacks(stacks, connectFrame); got != n {
		t.Errorf("Connect handler goroutines = %d, want %d (one per stream)", got, n)
	}
	if got := countStacks(stacks, connectFrame, hosted); got != n {
		t.Errorf("Connect handlers hosting the read loop = %d, want %d: the server's reader needs no goroutine of its own", got, n)
	}
	if got := countStacks(stacks, own); got != n {
		t.Errorf("client readers = %d, want %d (one per client channel)", got, n)
	}
	for _, f := range []string{"channel.(*Channel).writeLoop(", "channel.(*Channel).handleGo("} {
		if got := countStacks(stacks, f); got != 0 {
			t.Errorf("idle goroutines in %s = %d, want none", f, got)
		}
	}
}

// With HandleConns, the Connect handler runs the owner's function on its own
// goroutine and then the read loop of the Channel that function made: the
// handshake takes no goroutine of the owner's either. A Close while that
// function is blocked in Recv ends the stream with the status given (here
// RESOURCE_EXHAUSTED, as a refusal before HELLO), and a function that makes
// no Channel leaves the stream to end when its Conn is closed.
func TestHandleConnsServesOnTheHandler(t *testing.T) {
	ctx := testContext(t)
	lis := listenTCP(t)
	srv := startServer(t, lis)
	d := newDialer(t, lis.Addr().String(), grpcchannel.WithInsecure())
	mux := echoMux()
	const serveFrame = "grpcchannel_test.TestHandleConnsServesOnTheHandler.func"
	type served struct {
		conn    channel.Conn
		handler bool // serve ran on a Connect handler's goroutine
	}
	conns := make(chan served, 1)
	mode := make(chan string, 1)
	srv.HandleConns(func(c channel.Conn) {
		s := served{conn: c, handler: countStacks(currentStack(), "grpcchannel.(*Server).Connect(") == 1}
		switch <-mode {
		case "channel":
			ch := channel.New(c, mux, channel.Config{})
			t.Cleanup(func() { _ = ch.Close() })
		case "refuse":
			// Blocked in Recv (no HELLO comes) until another goroutine closes.
			stop := context.AfterFunc(ctx, func() { _ = c.Close() })
			defer stop()
			conns <- s
			_, _ = c.Recv()
			return
		}
		conns <- s
	})
	take := func() served {
		t.Helper()
		select {
		case s := <-conns:
			if !s.handler {
				t.Error("HandleConns function ran off the Connect handler's goroutine")
			}
			return s
		case <-ctx.Done():
			t.Fatal("HandleConns function never ran")
			return served{}
		}
	}

	// A Channel: its read loop runs on the handler once the function returned.
	mode <- "channel"
	a, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	ca := channel.New(a, nil, channel.Config{})
	t.Cleanup(func() { _ = ca.Close() })
	take()
	if r, err := ca.Send(ctx, command.MustCommand("ECHO", "x")); err != nil || r.Status != command.StatusSucceeded {
		t.Fatalf("Send() = %v, %v; want the server Channel's answer", r, err)
	}
	if got := countStacks(goroutineStacks(), "grpcchannel.(*Server).Connect(", "channel.(*Channel).hostedReadLoop("); got != 1 {
		t.Errorf("Connect handlers hosting the read loop = %d, want 1", got)
	}
	if got := countStacks(goroutineStacks(), serveFrame); got != 0 {
		t.Errorf("goroutines in the HandleConns function = %d after it returned, want 0", got)
	}

	// A refusal while the function is blocked in Recv: the status reaches
	// the client, and the function returns.
	mode <- "refuse"
	b, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	s := take()
	_ = s.conn.(channel.CloseWithErrorer).CloseWithError(fmt.Errorf("%w: no room", channel.ErrLimitExceeded))
	if _, err := recvWithin(t, ctx, b); !errors.Is(err, channel.ErrLimitExceeded) {
		t.Errorf("client Recv() = %v, want ErrLimitExceeded (RESOURCE_EXHAUSTED)", err)
	}
}

// currentStack returns the stack of the calling goroutine.
func currentStack() []string {
	buf := make([]byte, 64<<10)
	return []string{string(buf[:runtime.Stack(buf, false)])}
}

// echoMux answers ECHO with the command's payload.
func echoMux() *command.Mux {
	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Payload: c.Payload}, nil
	})
	return mux
}
