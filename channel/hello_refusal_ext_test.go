package channel_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// recordingConn is a Conn that records CloseWithError and can claim that the
// frames it receives arrived in a batch.
type recordingConn struct {
	channel.Conn
	batched bool

	mu       sync.Mutex
	closeErr error
}

func (c *recordingConn) RecvBatched() bool { return c.batched }

func (c *recordingConn) CloseWithError(err error) error {
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *recordingConn) closedWith() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// AcceptHello refuses a HELLO it must not accept: unanswerable first frames
// and one-way HELLOs end the conn with a malformed-frame reason (INVALID_ARGUMENT
// over gRPC) and no reply; a HELLO that came in a batch gets a 400 reply.
func TestAcceptHelloRefusals(t *testing.T) {
	hello := []byte(`{"targetId":"t"}`)
	for _, tc := range []struct {
		name      string
		first     *channel.Frame
		batched   bool
		wantReply bool // a 400 reply to h1
		wantClose bool // closed with an error wrapping ErrMalformedFrame
	}{
		{name: "one-way HELLO", first: &channel.Frame{Command: &command.Command{ID: "h1", Type: command.TypeHello, Payload: hello, OneWay: true}}, wantClose: true},
		{name: "HELLO in a batch", first: &channel.Frame{Command: &command.Command{ID: "h1", Type: command.TypeHello, Payload: hello}}, batched: true, wantReply: true},
		{name: "reply first", first: &channel.Frame{Reply: &command.Reply{CommandID: "x", Status: command.StatusSucceeded}}, wantClose: true},
		{name: "empty frame", first: &channel.Frame{}, wantClose: true},
		{name: "command without id", first: &channel.Frame{Command: &command.Command{Type: command.TypeHello, Payload: hello}}, wantClose: true},
		{name: "not a HELLO", first: &channel.Frame{Command: &command.Command{ID: "h1", Type: "PING"}}, wantReply: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := embedded.Pipe()
			defer a.Close()
			rc := &recordingConn{Conn: b, batched: tc.batched}
			defer rc.Close()
			if err := a.Send(tc.first); err != nil {
				t.Fatal(err)
			}
			decided := false
			_, _, err := channel.AcceptHello(t.Context(), rc, func(_ context.Context, c *command.Command, h command.HelloPayload) (*command.Reply, error) {
				decided = true
				return command.Succeeded(c, command.HelloReplyPayload{TargetID: h.TargetID})
			})
			if !errors.Is(err, channel.ErrProtocol) || decided {
				t.Fatalf("AcceptHello() = %v, decided %t; want ErrProtocol, no decision", err, decided)
			}
			if got := errors.Is(rc.closedWith(), channel.ErrMalformedFrame); got != tc.wantClose {
				t.Fatalf("closed with %v; want a malformed-frame reason: %t", rc.closedWith(), tc.wantClose)
			}
			if tc.wantReply {
				f, err := a.Recv()
				if err != nil || f.Reply == nil || f.Reply.CommandID != "h1" || f.Reply.Status != command.StatusError || f.Reply.Code != 400 {
					t.Fatalf("peer got %+v, %v; want a 400 reply to h1", f, err)
				}
				return
			}
			if f, err := a.Recv(); err == nil {
				t.Fatalf("peer got %+v; want no reply and a closed conn", f)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A flood of one-way commands dropped by a busy channel logs one line per
// interval, not one per event; the next line counts the ones not logged.
func TestDroppedEventsLogThrottled(t *testing.T) {
	var logs syncBuffer
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		started <- struct{}{}
		<-release
		return command.Succeeded(c, nil)
	})
	a, b := embedded.Pipe()
	defer a.Close()
	ch := channel.New(b, h, channel.Config{MaxHandlers: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer ch.Close()
	defer close(release)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := a.Send(&channel.Frame{Command: &command.Command{ID: "slow", Type: "SLOW", Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("handler never started")
	}
	const events = 500
	for i := range events {
		if err := a.Send(&channel.Frame{Command: &command.Command{ID: "e" + string(rune('a'+i%26)), Type: "EVENT", OneWay: true}}); err != nil {
			t.Fatal(err)
		}
	}
	// Frames are handled in order: once this command is answered busy,
	// every event before it has been dropped.
	if err := a.Send(&channel.Frame{Command: &command.Command{ID: "probe", Type: "PROBE"}}); err != nil {
		t.Fatal(err)
	}
	f, err := a.Recv()
	if err != nil || f.Reply == nil || f.Reply.CommandID != "probe" || f.Reply.Code != 429 {
		t.Fatalf("probe: got %+v, %v; want a busy reply", f, err)
	}
	lines := strings.Count(logs.String(), "one-way command dropped")
	// One line per second at most; the loop takes far less than a second,
	// but a very slow machine may cross one boundary or two.
	if lines < 1 || lines > 3 {
		t.Fatalf("%d dropped-event lines for %d drops; want 1 (at most 3 on a slow machine):\n%s", lines, events, logs.String())
	}
}
