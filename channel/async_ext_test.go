package channel_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// outcome is what a SendAsync's done got.
type outcome struct {
	reply *command.Reply
	err   error
}

// asyncDone returns a done function for SendAsync and the channel its
// outcomes go to; a second call of done fails the test.
func asyncDone(t *testing.T) (func(*command.Reply, error), <-chan outcome) {
	out := make(chan outcome, 1)
	var calls atomic.Int32
	return func(r *command.Reply, err error) {
		if calls.Add(1) > 1 {
			t.Errorf("done called %d times", calls.Load())
			return
		}
		out <- outcome{r, err}
	}, out
}

func echoHandler() command.Handler {
	return command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
}

// SendAsync's done gets the reply, its payload copied from the caller's
// command (which the caller may reuse at once).
func TestSendAsyncReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := embedded.Pipe()
		ca := channel.New(a, nil, channel.Config{})
		cb := channel.New(b, echoHandler(), channel.Config{})
		defer cb.Close()
		defer ca.Close()
		done, out := asyncDone(t)
		cmd := &command.Command{Type: "ECHO", Payload: []byte(`"hi"`)}
		if err := ca.SendAsync(t.Context(), cmd, 0, done); err != nil {
			t.Fatal(err)
		}
		copy(cmd.Payload, `"xx"`) // the caller's to reuse
		o := <-out
		if o.err != nil || string(o.reply.Payload) != `"hi"` || o.reply.Status != command.StatusSucceeded || o.reply.Type != "ECHO" {
			t.Fatalf("done got %+v, %v; want the echo of \"hi\"", o.reply, o.err)
		}
		synctest.Wait()
		if n := ca.InFlight(); n != 0 {
			t.Errorf("InFlight() = %d after the reply, want 0", n)
		}
	})
}

// The deadline: timeout, else DefaultTimeout, or an earlier ctx deadline;
// the peer is given what is left, as with Send; done gets DeadlineExceeded.
func TestSendAsyncDeadline(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ctxTimeout time.Duration
		timeout    time.Duration
		want       time.Duration
	}{
		{"timeout", 0, 5 * time.Second, 5 * time.Second},
		{"DefaultTimeout", 0, 0, time.Minute},
		{"ctx deadline earlier", 2 * time.Second, 5 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca, seen, ctx := silentPair(t, tc.ctxTimeout)
				done, out := asyncDone(t)
				start := time.Now()
				if err := ca.SendAsync(ctx, &command.Command{Type: "SLOW"}, tc.timeout, done); err != nil {
					t.Fatal(err)
				}
				o := <-out
				if !errors.Is(o.err, context.DeadlineExceeded) || o.reply != nil {
					t.Fatalf("done got %v, %v; want DeadlineExceeded", o.reply, o.err)
				}
				if got := time.Since(start); got != tc.want {
					t.Errorf("the call ended after %v, want %v", got, tc.want)
				}
				if got := time.Duration(seen.Load()); got != tc.want {
					t.Errorf("the peer got timeout %v, want %v", got, tc.want)
				}
			})
		})
	}
}

// What SendAsync refuses at once, it returns, and done is never called:
// a malformed or one-way command, a duplicate id, MaxInFlight reached, a
// dead channel. A call pending when the channel dies gets ErrClosed.
func TestSendAsyncRefusalsAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := embedded.Pipe()
		ca := channel.New(a, nil, channel.Config{MaxInFlight: 1})
		release := make(chan struct{})
		cb := channel.New(b, command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, ctx.Err()
		}), channel.Config{})
		defer cb.Close()
		never := func(r *command.Reply, err error) { t.Errorf("done called for a refused send: %v, %v", r, err) }
		ctx := t.Context()
		done, out := asyncDone(t)
		if err := ca.SendAsync(ctx, &command.Command{ID: "one", Type: "SLOW"}, 0, done); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			cmd  *command.Command
			want error
			text string
		}{
			{nil, channel.ErrMalformedFrame, ""},
			{&command.Command{ID: "x"}, channel.ErrMalformedFrame, ""},
			{&command.Command{Type: "EV", OneWay: true}, channel.ErrMalformedFrame, "Notify"},
			{&command.Command{ID: "one", Type: "SLOW"}, channel.ErrDuplicateID, ""},
			{&command.Command{ID: "two", Type: "SLOW"}, channel.ErrBusy, ""},
		} {
			err := ca.SendAsync(ctx, tc.cmd, 0, never)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("SendAsync(%v) = %v, want %v", tc.cmd, err, tc.want)
			}
		}
		_ = ca.Close()
		if o := <-out; !errors.Is(o.err, channel.ErrClosed) {
			t.Errorf("the pending call's done got %v, want ErrClosed", o.err)
		}
		if err := ca.SendAsync(ctx, &command.Command{Type: "SLOW"}, 0, never); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("SendAsync on a closed channel = %v, want ErrClosed", err)
		}
		close(release)
	})
}

// A write queue that is full is a *BusyError at once: SendAsync never waits
// for the peer.
func TestSendAsyncFullQueueIsBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := embedded.Pipe()
		stuck := &stuckConn{Conn: a, closed: make(chan struct{})}
		ca := channel.New(stuck, nil, channel.Config{SendQueue: 1})
		defer ca.Close()
		ctx := t.Context()
		var outs []<-chan outcome
		send := func() error {
			done, out := asyncDone(t)
			outs = append(outs, out)
			return ca.SendAsync(ctx, &command.Command{Type: "SLOW"}, 0, done)
		}
		if err := send(); err != nil { // taken by the writer, stuck in Conn.Send
			t.Fatal(err)
		}
		synctest.Wait()
		if err := send(); err != nil { // queued
			t.Fatal(err)
		}
		var busy *channel.BusyError
		if err := send(); !errors.As(err, &busy) {
			t.Fatalf("SendAsync with a full queue = %v, want a *BusyError", err)
		}
		_ = ca.Close()
		for _, out := range outs[:2] {
			if o := <-out; !errors.Is(o.err, channel.ErrClosed) {
				t.Errorf("done got %v, want ErrClosed", o.err)
			}
		}
	})
}

// asyncHandler takes commands of type ASYNC (AsyncHandler) and hands their
// answers to the test; the others it answers on a handler goroutine.
type asyncHandler struct {
	answers chan func(*command.Reply, error)
	cmds    chan *command.Command
	panics  bool
}

func (h *asyncHandler) Handle(context.Context, *command.Command) (*command.Reply, error) {
	return &command.Reply{Status: command.StatusSucceeded, Payload: []byte(`"sync"`)}, nil
}

func (h *asyncHandler) Async(cmd *command.Command) bool { return cmd.Type == "ASYNC" }

func (h *asyncHandler) HandleAsync(_ context.Context, cmd *command.Command, answer func(*command.Reply, error)) {
	if h.panics {
		panic("boom")
	}
	h.cmds <- cmd
	h.answers <- answer
}

func newAsyncPair(t *testing.T, h *asyncHandler, cfg channel.Config) (*channel.Channel, *channel.Channel) {
	a, b := embedded.Pipe()
	ca := channel.New(a, nil, channel.Config{})
	cb := channel.New(b, h, cfg)
	t.Cleanup(func() { _ = ca.Close(); _ = cb.Close() })
	return ca, cb
}

// A command an AsyncHandler takes is answered when answer is called, from
// any goroutine; it counts in InFlight and against MaxHandlers until then;
// what answer is given becomes the reply as a Handler's return values do;
// a second answer is ignored; commands Async declines go to Handle.
func TestAsyncHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &asyncHandler{answers: make(chan func(*command.Reply, error), 8), cmds: make(chan *command.Command, 8)}
		ca, cb := newAsyncPair(t, h, channel.Config{MaxHandlers: 1})
		ctx := t.Context()

		if r, err := ca.Send(ctx, &command.Command{Type: "SYNC"}); err != nil || string(r.Payload) != `"sync"` {
			t.Fatalf("Send(SYNC) = %v, %v; want Handle's reply", r, err)
		}

		res := make(chan outcome, 1)
		go func() {
			r, err := ca.Send(ctx, &command.Command{Type: "ASYNC", Payload: []byte(`1`)})
			res <- outcome{r, err}
		}()
		answer := <-h.answers
		if cmd := <-h.cmds; string(cmd.Payload) != `1` {
			t.Errorf("HandleAsync got payload %s, want 1", cmd.Payload)
		}
		synctest.Wait()
		if n := cb.InFlight(); n != 1 {
			t.Errorf("InFlight() = %d while the answer is pending, want 1", n)
		}
		var busy *channel.BusyError
		if _, err := ca.Send(ctx, &command.Command{Type: "ASYNC"}); !errors.As(err, &busy) {
			t.Errorf("a second command beyond MaxHandlers 1: %v, want a *BusyError", err)
		}
		go answer(&command.Reply{Status: command.StatusSucceeded, Payload: []byte(`"later"`)}, nil)
		o := <-res
		if o.err != nil || string(o.reply.Payload) != `"later"` || o.reply.Type != "ASYNC" {
			t.Fatalf("Send(ASYNC) = %+v, %v; want the answer", o.reply, o.err)
		}
		answer(&command.Reply{Status: command.StatusError, Error: "again"}, nil) // ignored
		synctest.Wait()
		if n := cb.InFlight(); n != 0 {
			t.Errorf("InFlight() = %d once answered, want 0", n)
		}

		for _, tc := range []struct {
			name   string
			reply  *command.Reply
			err    error
			check  func(*command.Reply, error) bool
			expect string
		}{
			{"nil reply", nil, nil, func(r *command.Reply, err error) bool { return err == nil && r.Succeeded() }, "SUCCEEDED"},
			{"unknown", nil, command.ErrUnknownCommand, func(_ *command.Reply, err error) bool {
				var u *channel.UnknownCommandError
				return errors.As(err, &u)
			}, "*UnknownCommandError"},
			{"error", nil, errors.New("kaput"), func(_ *command.Reply, err error) bool {
				var re *channel.RemoteError
				return errors.As(err, &re) && strings.Contains(err.Error(), "kaput")
			}, "*RemoteError kaput"},
		} {
			go func() {
				r, err := ca.Send(ctx, &command.Command{Type: "ASYNC"})
				res <- outcome{r, err}
			}()
			<-h.cmds
			(<-h.answers)(tc.reply, tc.err)
			if o := <-res; !tc.check(o.reply, o.err) {
				t.Errorf("%s: Send = %+v, %v; want %s", tc.name, o.reply, o.err, tc.expect)
			}
		}
	})
}

// An answer that fails because the sender's deadline passed sends nothing
// (the sender has stopped waiting), as a Handler's does; the sender gets
// its own DeadlineExceeded, not a remote error.
func TestAsyncHandlerGaveUpAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &asyncHandler{answers: make(chan func(*command.Reply, error), 1), cmds: make(chan *command.Command, 1)}
		ca, cb := newAsyncPair(t, h, channel.Config{})
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		res := make(chan error, 1)
		go func() {
			_, err := ca.Send(ctx, &command.Command{Type: "ASYNC"})
			res <- err
		}()
		<-h.cmds
		answer := <-h.answers
		time.Sleep(3 * time.Second) // the fake clock of the bubble
		answer(nil, context.DeadlineExceeded)
		if err := <-res; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send = %v, want DeadlineExceeded", err)
		}
		synctest.Wait()
		if n := cb.InFlight(); n != 0 {
			t.Errorf("InFlight() = %d, want 0", n)
		}
	})
}

// A panic in HandleAsync is answered as a panicking Handler's is, and the
// channel goes on.
func TestAsyncHandlerPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &asyncHandler{panics: true}
		ca, cb := newAsyncPair(t, h, channel.Config{Logger: slog.New(slog.DiscardHandler)})
		var re *channel.RemoteError
		if _, err := ca.Send(t.Context(), &command.Command{Type: "ASYNC"}); !errors.As(err, &re) || !strings.Contains(err.Error(), "panicked") {
			t.Errorf("Send = %v, want a *RemoteError saying the handler panicked", err)
		}
		if r, err := ca.Send(t.Context(), &command.Command{Type: "SYNC"}); err != nil || !r.Succeeded() {
			t.Errorf("Send after the panic = %v, %v", r, err)
		}
		synctest.Wait()
		if n := cb.InFlight(); n != 0 {
			t.Errorf("InFlight() = %d, want 0", n)
		}
	})
}

// An answer that comes after the channel closed sends nothing and gives
// its token and InFlight back: the process-wide count returns to zero.
func TestAsyncHandlerAnswerAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var total atomic.Int64
		h := &asyncHandler{answers: make(chan func(*command.Reply, error), 1), cmds: make(chan *command.Command, 1)}
		a, b := embedded.Pipe()
		ca := channel.New(a, nil, channel.Config{})
		cb := channel.New(b, h, channel.Config{InFlightTotal: &total})
		defer ca.Close()
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = ca.Send(t.Context(), &command.Command{Type: "ASYNC"}) })
		<-h.cmds
		answer := <-h.answers
		if n := total.Load(); n != 1 {
			t.Errorf("InFlightTotal = %d while handled, want 1", n)
		}
		_ = cb.Close()
		wg.Wait()
		answer(&command.Reply{Status: command.StatusSucceeded}, nil)
		if n := total.Load(); n != 0 {
			t.Errorf("InFlightTotal = %d after the late answer, want 0", n)
		}
	})
}

// A call whose ctx is done ends with ctx's error at once, and its id is free
// again: a retry of the command with the same id is sent (a batch's retry
// after the node that forwarded it died).
func TestSendAsyncCtxDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := embedded.Pipe()
		ca := channel.New(a, nil, channel.Config{})
		var calls atomic.Int32
		cb := channel.New(b, command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done() // the first delivery is never answered
				return nil, ctx.Err()
			}
			return &command.Reply{Status: command.StatusSucceeded}, nil
		}), channel.Config{})
		defer cb.Close()
		defer ca.Close()
		ctx, cancel := context.WithCancel(t.Context())
		done, out := asyncDone(t)
		if err := ca.SendAsync(ctx, &command.Command{ID: "same", Type: "X"}, time.Minute, done); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		cancel()
		if o := <-out; !errors.Is(o.err, context.Canceled) {
			t.Fatalf("done got %v, want context.Canceled", o.err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("the call ended %v after its ctx, want at once", d)
		}
		done, out = asyncDone(t)
		if err := ca.SendAsync(t.Context(), &command.Command{ID: "same", Type: "X"}, time.Minute, done); err != nil {
			t.Fatalf("a retry with the same id: %v", err)
		}
		if o := <-out; o.err != nil || !o.reply.Succeeded() {
			t.Errorf("the retry got %v, %v", o.reply, o.err)
		}
	})
}
