package channel_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/channeltest"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// A batch the transport refuses as a whole (over its frame limit, although
// each frame is small enough for a batch) is sent frame by frame, so that
// exactly the frames that are too large fail, as without coalescing: a
// command's Send gets ErrFrameTooLarge, a reply becomes a NO_REPLY 413, and
// everything else arrives, in order.
func TestCoalesceFallsBackFrameByFrame(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	const limit = 1000
	a, b := embedded.Pipe(embedded.WithMaxFrameBytes(limit))
	defer b.Close()
	stop := context.AfterFunc(ctx, func() { _ = b.Close() }) // a Recv below never hangs
	defer stop()
	fa := channeltest.NewFaultConn(a)
	small, big := bytes.Repeat([]byte("s"), limit*2/5), bytes.Repeat([]byte("b"), 2*limit)
	mux := command.NewMux()
	mux.RegisterFunc("HUGE_REPLY", func(context.Context, *command.Command) (*command.Reply, error) {
		return &command.Reply{Payload: big}, nil
	})
	ca := channel.New(fa, mux, channel.Config{Coalesce: true})
	defer ca.Close()

	// Queue behind a stalled writer: a reply too large, small commands, and
	// a command too large. (Which of them share a batch depends on when the
	// writer takes the first one; the outcome must not.)
	fa.Stall(channeltest.DirSend)
	if err := ca.Notify(ctx, &command.Command{ID: "first", Type: "EVENT"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(&channel.Frame{Command: &command.Command{ID: "h", Type: "HUGE_REPLY"}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(ctx, t, "the reply queued", func() bool { return ca.InFlight() == 0 && ca.Err() == nil })
	for _, id := range []string{"small-1", "small-2", "small-3"} {
		if err := ca.Notify(ctx, &command.Command{ID: id, Type: "EVENT", Payload: small}); err != nil {
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() {
		_, err := ca.Send(ctx, &command.Command{ID: "big", Type: "EVENT", Payload: big})
		sent <- err
	}()
	waitUntil(ctx, t, "Send(big) in flight", func() bool { return ca.InFlight() == 1 })
	fa.Unstall()

	select {
	case err := <-sent:
		if !errors.Is(err, channel.ErrFrameTooLarge) {
			t.Errorf("Send() of a command over the limit = %v, want ErrFrameTooLarge", err)
		}
	case <-ctx.Done():
		t.Fatal("Send(big) did not return")
	}
	var events []string
	var noReply *command.Reply
	for len(events) < 4 || noReply == nil {
		f, err := b.Recv()
		if err != nil {
			t.Fatalf("Recv() = %v; got events %v, NO_REPLY %+v", err, events, noReply)
		}
		switch {
		case f.Command != nil:
			events = append(events, f.Command.ID)
		case f.Reply != nil:
			noReply = f.Reply
		}
	}
	if want := []string{"first", "small-1", "small-2", "small-3"}; !slices.Equal(events, want) {
		t.Errorf("commands received = %v, want %v (and never big)", events, want)
	}
	if noReply.CommandID != "h" || noReply.Type != command.TypeNoReply || noReply.Code != 413 {
		t.Errorf("answer to HUGE_REPLY = %+v, want a NO_REPLY with code 413", noReply)
	}
	if err := ca.Err(); err != nil {
		t.Errorf("Err() = %v, want nil: the channel stays up", err)
	}
}

// waitUntil polls cond until it holds, failing the test when ctx ends first.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s: still false: %v", what, ctx.Err())
		}
	}
}
