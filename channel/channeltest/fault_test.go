package channeltest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	defaultTestTimeout      = 10 * time.Second
	defaultTestShortTimeout = 20 * time.Millisecond
)

// faultPipe is an embedded pipe with a FaultConn on each end.
func faultPipe(t testing.TB) (*channeltest.FaultConn, *channeltest.FaultConn) {
	a, b := embedded.Pipe()
	fa, fb := channeltest.NewFaultConn(a), channeltest.NewFaultConn(b)
	t.Cleanup(func() { _ = fa.Close(); _ = fb.Close() })
	return fa, fb
}

// With no fault set, a FaultConn is a conforming Conn, so wrapping one end
// of a pipe changes nothing for the channel above it.
func TestFaultConnConformance(t *testing.T) {
	mp := func(t testing.TB) (channel.Conn, channel.Conn) { return faultPipe(t) }
	channeltest.TestConn(t, mp)
	channeltest.TestChannel(t, mp)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// goErr runs f, which uses c, on a goroutine and returns where its error
// arrives. At cleanup c is closed (to unblock f if the test failed early) and
// the goroutine is waited for.
func goErr(t *testing.T, c channel.Conn, f func() error) <-chan error {
	out := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		out <- f()
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return out
}

func waitErr(ctx context.Context, t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		t.Fatalf("%s: no result before %v", what, ctx.Err())
		return nil
	}
}

func mustBlock(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	timer := time.NewTimer(defaultTestShortTimeout)
	defer timer.Stop()
	select {
	case err := <-ch:
		t.Fatalf("%s returned %v, want it to block", what, err)
	case <-timer.C:
	}
}

func frame(id string) *channel.Frame {
	return &channel.Frame{Command: &command.Command{ID: id, Type: "FAULT"}}
}

func recvID(t *testing.T, c channel.Conn) string {
	t.Helper()
	f, err := c.Recv()
	if err != nil || f.Command == nil {
		t.Fatalf("Recv() = (%+v, %v), want a command", f, err)
	}
	return f.Command.ID
}

func TestFaultConnStallSend(t *testing.T) {
	ctx := testContext(t)
	fa, fb := faultPipe(t)
	fa.Stall(channeltest.DirSend)
	sent := goErr(t, fa, func() error { return fa.Send(frame("held")) })
	mustBlock(t, sent, "stalled Send")
	fa.Unstall()
	if err := waitErr(ctx, t, sent, "Send after Unstall"); err != nil {
		t.Fatalf("Send after Unstall = %v, want nil", err)
	}
	if id := recvID(t, fb); id != "held" {
		t.Errorf("peer received %q, want held", id)
	}
	// Recv is not affected by a send stall.
	fa.Stall(channeltest.DirSend)
	if err := fb.Send(frame("other way")); err != nil {
		t.Fatal(err)
	}
	if id := recvID(t, fa); id != "other way" {
		t.Errorf("Recv during a send stall = %q, want other way", id)
	}
}

func TestFaultConnStallRecv(t *testing.T) {
	ctx := testContext(t)
	fa, fb := faultPipe(t)
	fa.Stall(channeltest.DirRecv)
	if err := fb.Send(frame("waiting")); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	received := goErr(t, fa, func() error {
		f, err := fa.Recv()
		if err == nil {
			got <- f.Command.ID
		}
		return err
	})
	mustBlock(t, received, "stalled Recv")
	// Send is not affected by a receive stall.
	if err := fa.Send(frame("out")); err != nil {
		t.Fatalf("Send during a recv stall = %v, want nil", err)
	}
	fa.Unstall()
	if err := waitErr(ctx, t, received, "Recv after Unstall"); err != nil {
		t.Fatalf("Recv after Unstall = %v, want nil", err)
	}
	if id := <-got; id != "waiting" {
		t.Errorf("Recv after Unstall = %q, want waiting", id)
	}
}

func TestFaultConnCloseReleasesStalls(t *testing.T) {
	ctx := testContext(t)
	fa, _ := faultPipe(t)
	fa.Stall(channeltest.DirBoth)
	sent := goErr(t, fa, func() error { return fa.Send(frame("x")) })
	received := goErr(t, fa, func() error { _, err := fa.Recv(); return err })
	mustBlock(t, sent, "stalled Send")
	mustBlock(t, received, "stalled Recv")
	if err := fa.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	for what, ch := range map[string]<-chan error{"Send": sent, "Recv": received} {
		if err := waitErr(ctx, t, ch, what); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("stalled %s after Close = %v, want an error wrapping ErrClosed", what, err)
		}
	}
}

func TestFaultConnDropNext(t *testing.T) {
	fa, fb := faultPipe(t)
	fa.DropNext(2)
	for _, id := range []string{"lost-1", "lost-2", "kept"} {
		if err := fa.Send(frame(id)); err != nil {
			t.Fatalf("Send(%s) = %v, want nil (drops are silent)", id, err)
		}
	}
	if id := recvID(t, fb); id != "kept" {
		t.Errorf("peer received %q first, want kept (the two before were dropped)", id)
	}
	if n := fa.Dropped(); n != 2 {
		t.Errorf("Dropped() = %d, want 2", n)
	}
}

func TestFaultConnFailSends(t *testing.T) {
	fa, fb := faultPipe(t)
	errBroken := errors.New("broken pipe")
	fa.FailSends(errBroken)
	if err := fa.Send(frame("x")); !errors.Is(err, errBroken) {
		t.Fatalf("Send() = %v, want %v", err, errBroken)
	}
	fa.FailSends(nil)
	if err := fa.Send(frame("y")); err != nil {
		t.Fatalf("Send() after FailSends(nil) = %v, want nil", err)
	}
	if id := recvID(t, fb); id != "y" {
		t.Errorf("peer received %q, want y (x was never sent)", id)
	}
}

// echoHandler answers every command with an empty SUCCEEDED reply.
var echoHandler = command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) {
	return nil, nil
})

func newChannel(t *testing.T, c channel.Conn, h command.Handler) *channel.Channel {
	ch := channel.New(c, h, channel.Config{})
	t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// A stalled peer looks alive but never answers: the sender times out, and
// the channel works again once the stall ends. This is the silent channel a
// controller's health check must catch.
func TestFaultConnSilentPeer(t *testing.T) {
	ctx := testContext(t)
	fa, fb := faultPipe(t)
	ca := newChannel(t, fa, nil)
	newChannel(t, fb, echoHandler)

	fb.Stall(channeltest.DirBoth)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := ca.Send(short, &command.Command{Type: command.TypeHealthCheck}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send() to a stalled peer = %v, want DeadlineExceeded", err)
	}
	if err := ca.Err(); err != nil {
		t.Fatalf("Err() = %v: a silent peer does not close the channel", err)
	}
	fb.Unstall()
	if _, err := ca.Send(ctx, &command.Command{Type: command.TypeHealthCheck}); err != nil {
		t.Fatalf("Send() after Unstall = %v, want nil", err)
	}
}

// A dropped reply leaves the sender waiting until its deadline.
func TestFaultConnLostReply(t *testing.T) {
	ctx := testContext(t)
	fa, fb := faultPipe(t)
	ca := newChannel(t, fa, nil)
	newChannel(t, fb, echoHandler)
	fb.DropNext(1)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := ca.Send(short, &command.Command{Type: "PING"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send() whose reply was dropped = %v, want DeadlineExceeded", err)
	}
	if _, err := ca.Send(ctx, &command.Command{Type: "PING"}); err != nil {
		t.Fatalf("next Send() = %v, want nil", err)
	}
}

// A failing write path kills the channel at once, with the cause.
func TestFaultConnBrokenWrite(t *testing.T) {
	ctx := testContext(t)
	fa, fb := faultPipe(t)
	ca := newChannel(t, fa, nil)
	newChannel(t, fb, echoHandler)
	errBroken := errors.New("broken pipe")
	fa.FailSends(errBroken)
	_, err := ca.Send(ctx, &command.Command{Type: "PING"})
	if !errors.Is(err, channel.ErrClosed) || !errors.Is(err, errBroken) {
		t.Fatalf("Send() on a broken write path = %v, want an error wrapping ErrClosed and the cause", err)
	}
	select {
	case <-ca.Done():
	case <-ctx.Done():
		t.Fatal("channel still alive after its write path broke")
	}
	if err := ca.Err(); !errors.Is(err, errBroken) {
		t.Errorf("Err() = %v, want it to wrap the write error", err)
	}
}
