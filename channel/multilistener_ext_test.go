package channel_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

const multiTestTimeout = 10 * time.Second

// roundTrip checks that a and b are the two ends of one pipe.
func roundTrip(t *testing.T, a, b channel.Conn) {
	t.Helper()
	if err := a.Send(&channel.Frame{Command: &command.Command{ID: "c1", Type: "ECHO"}}); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	f, err := b.Recv()
	if err != nil || f.Command == nil || f.Command.ID != "c1" {
		t.Fatalf("Recv() = %+v, %v; want command c1", f, err)
	}
}

func TestMultiListenerAcceptsFromEach(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), multiTestTimeout)
	defer cancel()
	l1, l2 := embedded.Listen(), embedded.Listen()
	m := channel.MultiListener(l1, l2)
	defer m.Close()
	for i, l := range []*embedded.Listener{l2, l1, l2} {
		a, err := l.Dial(ctx)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		b, err := m.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept() %d = %v", i, err)
		}
		roundTrip(t, a, b)
		_ = a.Close()
		_ = b.Close()
	}
}

func TestMultiListenerOneClosedUnderIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), multiTestTimeout)
	defer cancel()
	l1, l2 := embedded.Listen(), embedded.Listen()
	m := channel.MultiListener(l1, l2)
	defer m.Close()

	_ = l1.Close()
	_, err := m.Accept(ctx)
	if err == nil || errors.Is(err, channel.ErrClosed) || !strings.Contains(err.Error(), "listener 1 of 2 closed") {
		t.Fatalf("Accept() after closing one listener = %v; want a report that does not wrap ErrClosed", err)
	}
	// The other one still serves.
	a, err := l2.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() from the remaining listener = %v", err)
	}
	roundTrip(t, a, b)
	_, _ = a.Close(), b.Close()

	_ = l2.Close()
	if _, err := m.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("Accept() with every listener closed = %v, want ErrClosed", err)
	}
	if _, err := m.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("second Accept() with every listener closed = %v, want ErrClosed", err)
	}
}

func TestMultiListenerClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), multiTestTimeout)
	defer cancel()
	l1, l2 := embedded.Listen(), embedded.Listen()
	m := channel.MultiListener(l1, l2)

	// A Conn accepted by the MultiListener's goroutine but never taken.
	orphan, err := l1.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	if _, err := orphan.Recv(); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Recv() on a Conn never handed over = %v, want ErrClosed (closed by Close)", err)
	}
	if _, err := m.Accept(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Accept() after Close = %v, want ErrClosed", err)
	}
	for i, l := range []*embedded.Listener{l1, l2} {
		if _, err := l.Dial(ctx); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("listener %d: Dial() after Close = %v, want ErrClosed (Close closes every listener)", i+1, err)
		}
	}
}

func TestMultiListenerAcceptContext(t *testing.T) {
	m := channel.MultiListener(embedded.Listen())
	defer m.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := m.Accept(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Accept(canceled ctx) = %v, want context.Canceled", err)
	}
}

func TestMultiListenerEmpty(t *testing.T) {
	m := channel.MultiListener()
	defer m.Close()
	if _, err := m.Accept(t.Context()); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Accept() of no listener = %v, want ErrClosed", err)
	}
}
