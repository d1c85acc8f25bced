package channeltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// TestChannel checks the channel.Channel semantics over the Conns made by mp:
// correlation, deadlines, bounds, errors, close, malformed frames and the HELLO
// handshake. Each subtest makes its own pipe; in most, a Channel runs on each
// end, and in the malformed-frame and handshake tests the test drives one end
// through the raw Conn.
//
// The whole suite runs twice: with the default Config, then (subtest
// "Coalesce") with Config.Coalesce set on every Channel, so that the
// semantics are the same whether or not the writer coalesces frames. Its
// Burst test checks that a burst of frames queued behind a stalled writer is
// sent in batches exactly when Coalesce is set.
func TestChannel(t *testing.T, mp MakePipe) {
	t.Helper()
	runChannelSuite(t, suite{mp: mp})
	t.Run("Coalesce", func(t *testing.T) {
		s := suite{mp: mp, coalesce: true}
		runChannelSuite(t, s)
	})
}

// suite is one configuration of the TestChannel suite.
type suite struct {
	mp       MakePipe
	coalesce bool // every Channel made by the suite's env coalesces
}

// env returns the scaffolding of one test of the suite.
func (s suite) env(t testing.TB) *env {
	e := newEnv(t)
	e.coalesce = s.coalesce
	return e
}

func runChannelSuite(t *testing.T, s suite) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, suite)
	}{
		{"RequestReply", testRequestReply},
		{"ConcurrentInFlight64", testConcurrentInFlight},
		{"DeadlineExceeded", testDeadlineExceeded},
		{"DefaultTimeout", testDefaultTimeout},
		{"HandlerDeadline", testHandlerDeadline},
		{"UnknownCommand", testUnknownCommand},
		{"HandlerError", testHandlerError},
		{"HandlerPanic", testHandlerPanic},
		{"HandlerFailedReply", testHandlerFailedReply},
		{"LocalBusy", testLocalBusy},
		{"RemoteBusy", testRemoteBusy},
		{"ControlReservedLocal", testControlReservedLocal},
		{"ControlReservedRemote", testControlReservedRemote},
		{"ControlBound", testControlBound},
		{"DuplicateID", testDuplicateID},
		{"CloseFailsPending", testCloseFailsPending},
		{"PeerCloseFailsPending", testPeerCloseFailsPending},
		{"HandlerContextCancelledOnClose", testHandlerCtxCancelledOnClose},
		{"CloseWaitsForHandlers", testCloseWaitsForHandlers},
		{"Notify", testNotify},
		{"InFlightBothDirections", testInFlightBothDirections},
		{"FrameTooLarge", testChannelFrameTooLarge},
		{"UnexpectedReplyIgnored", testUnexpectedReplyIgnored},
		{"MalformedCommandAnswered", testMalformedCommandAnswered},
		{"MalformedFrameClosesChannel", testMalformedFrameCloses},
		{"HelloAccepted", testHelloAccepted},
		{"HelloRejected", testHelloRejected},
		{"HelloFirstFrameNotHello", testHelloFirstFrameNotHello},
		{"HelloTimeout", testHelloTimeout},
		{"Burst", testBurst},
		{"QueuedSendKeepsNoPayload", testQueuedSendKeepsNoPayload},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, s) })
	}
}

// echo is the payload of the suite's ECHO command.
type echo struct {
	Text string `json:"text"`
}

// echoMux answers ECHO with its payload, and reports the metadata it saw in
// the reply's payload as well.
func echoMux() *command.Mux {
	mux := command.NewMux()
	mux.Register("ECHO", command.Typed(func(_ context.Context, in echo) (echo, error) { return in, nil }))
	return mux
}

func echoCmd(text string) *command.Command { return command.MustCommand("ECHO", echo{Text: text}) }

// checkEcho sends ECHO on ch and checks the reply.
func checkEcho(e *env, ch *channel.Channel, text string) {
	e.t.Helper()
	r, err := ch.Send(e.ctx, echoCmd(text))
	if err != nil {
		e.t.Fatalf("Send(ECHO %q) error = %v, want nil", text, err)
	}
	got, err := command.Decode[echo](r.Payload)
	if err != nil || got.Text != text || r.Status != command.StatusSucceeded {
		e.t.Fatalf("Send(ECHO %q) = %+v (payload %+v, decode error %v), want SUCCEEDED with the same text", text, r, got, err)
	}
}

// checkAlive checks that ch is up and still serves a request to a peer with
// an echoMux.
func checkAlive(e *env, ch *channel.Channel) {
	e.t.Helper()
	if err := ch.Err(); err != nil {
		e.t.Fatalf("Err() = %v, want nil: the channel must stay up", err)
	}
	checkEcho(e, ch, "still alive")
}

// blocker is a handler that blocks until released or until its context ends.
type blocker struct {
	started chan *command.Command // one value per call, as it starts
	release chan struct{}         // closed to let calls return
	ctxErr  chan error            // the cause, when a call ended by its context
	once    sync.Once
}

func newBlocker() *blocker {
	return &blocker{
		started: make(chan *command.Command, 128),
		release: make(chan struct{}),
		ctxErr:  make(chan error, 128),
	}
}

func (b *blocker) Handle(ctx context.Context, c *command.Command) (*command.Reply, error) {
	b.started <- c
	select {
	case <-b.release:
		return command.Succeeded(c, echo{Text: "released " + c.ID})
	case <-ctx.Done():
		b.ctxErr <- context.Cause(ctx)
		return nil, context.Cause(ctx)
	}
}

func (b *blocker) unblock() { b.once.Do(func() { close(b.release) }) }

// blockMux routes ECHO to echoMux's handler and BLOCK to b.
func blockMux(b *blocker) *command.Mux {
	mux := echoMux()
	mux.Register("BLOCK", b)
	return mux
}

func blockCmd(id string) *command.Command { return &command.Command{ID: id, Type: "BLOCK"} }

func testRequestReply(t *testing.T, s suite) {
	e := s.env(t)
	var seen atomic.Pointer[command.Command]
	mux := echoMux()
	mux.RegisterFunc("META", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		seen.Store(c)
		return &command.Reply{Payload: []byte(c.Metadata["k"]), Code: 201}, nil
	})
	ca, cb := e.channels(s.mp, mux, mux, channel.Config{}, channel.Config{})

	// Both directions: either side can be the sender.
	checkEcho(e, ca, "from a")
	checkEcho(e, cb, "from b")

	// Metadata reaches the handler; an empty id is filled in without
	// touching the caller's command; the reply is completed by the channel.
	cmd := &command.Command{Type: "META", Metadata: map[string]string{"k": "v"}}
	r, err := ca.Send(e.ctx, cmd)
	if err != nil {
		t.Fatalf("Send(META) error = %v", err)
	}
	if cmd.ID != "" || cmd.Timeout != 0 {
		t.Errorf("Send modified the caller's command: %+v", cmd)
	}
	got := seen.Load()
	switch {
	case got == nil || got.ID == "":
		t.Fatalf("handler saw command %+v, want one with a fresh id", got)
	case got.Metadata["k"] != "v":
		t.Errorf("handler saw metadata %v, want k=v", got.Metadata)
	case got.Timeout <= 0:
		t.Errorf("handler saw Timeout %v, want the sender's remaining time", got.Timeout)
	}
	if r.CommandID != got.ID || r.Type != "META" || r.Status != command.StatusSucceeded || string(r.Payload) != "v" || r.Code != 201 {
		t.Errorf("Send(META) reply = %+v, want CommandID %q, type META, SUCCEEDED, payload v, code 201", r, got.ID)
	}
	e.eventually("InFlight back to 0", func() bool { return ca.InFlight()+cb.InFlight() == 0 })
}

func testConcurrentInFlight(t *testing.T, s suite) {
	const n = 64
	e := s.env(t)
	// The handler holds every call until all n have arrived, which proves
	// they were in flight together.
	var arrived atomic.Int32
	all := make(chan struct{})
	mux := command.NewMux()
	mux.Register("BARRIER", command.Typed(func(ctx context.Context, in echo) (echo, error) {
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
			return in, nil
		case <-ctx.Done():
			return echo{}, ctx.Err()
		}
	}))
	ca, _ := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
	results := make([]<-chan sendResult, n)
	for i := range n {
		results[i] = e.goSend(e.ctx, ca, command.MustCommand("BARRIER", echo{Text: strconv.Itoa(i)}))
	}
	for i, ch := range results {
		r := await(e, ch, "Send #"+strconv.Itoa(i))
		if r.err != nil {
			t.Fatalf("Send #%d error = %v", i, r.err)
		}
		got, err := command.Decode[echo](r.reply.Payload)
		if err != nil || got.Text != strconv.Itoa(i) {
			t.Errorf("Send #%d got the reply %q (%v): replies crossed", i, got.Text, err)
		}
	}
	if n := ca.InFlight(); n != 0 {
		t.Errorf("InFlight() after all replies = %d, want 0", n)
	}
}

func testDeadlineExceeded(t *testing.T, s suite) {
	e := s.env(t)
	// LATE sees its context end with the sender's deadline, then answers
	// anyway once released: a late reply the sender must ignore.
	started := make(chan struct{})
	ctxErr := make(chan error, 1)
	release := make(chan struct{})
	mux := echoMux()
	mux.RegisterFunc("LATE", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		close(started)
		<-ctx.Done()
		ctxErr <- context.Cause(ctx)
		select {
		case <-release:
		case <-e.ctx.Done(): // the test failed or timed out: let Close finish
		}
		return command.Succeeded(c, echo{Text: "too late"})
	})
	ca, cb := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})

	ctx, cancel := context.WithTimeout(e.ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ca.Send(ctx, &command.Command{ID: "late", Type: "LATE"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send() past its deadline = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if errors.Is(err, channel.ErrClosed) {
		t.Errorf("Send() past its deadline = %v, must not wrap ErrClosed", err)
	}
	if d := time.Since(start); d >= defaultTestTimeout/2 {
		t.Errorf("Send() took %v to time out, want about 50ms", d)
	}
	if n := ca.InFlight(); n != 0 {
		t.Errorf("sender's InFlight() after the timeout = %d, want 0 (pending entry freed)", n)
	}

	await(e, started, "handler start")
	if err := await(e, ctxErr, "handler context end"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handler context ended with %v, want DeadlineExceeded (the sender's deadline)", err)
	}
	close(release)
	// The late reply precedes the next one on the wire: once the next Send
	// has its own answer, the late one was read and dropped.
	checkAlive(e, ca)
	e.eventually("InFlight back to 0 on both sides", func() bool { return ca.InFlight()+cb.InFlight() == 0 })
	if err := cb.Err(); err != nil {
		t.Errorf("receiver's Err() = %v, want nil", err)
	}
}

func testDefaultTimeout(t *testing.T, s suite) {
	e := s.env(t)
	const timeout = 50 * time.Millisecond
	blk := newBlocker()
	ca, _ := e.channels(s.mp, nil, blockMux(blk), channel.Config{DefaultTimeout: timeout}, channel.Config{})

	// Only a watchdog bounds this context (it has no deadline), so the
	// channel's DefaultTimeout must apply.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stop := context.AfterFunc(e.ctx, cancel)
	defer stop()
	start := time.Now()
	_, err := ca.Send(ctx, blockCmd("default-timeout"))
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send() with no deadline, DefaultTimeout %v = %v, want an error wrapping context.DeadlineExceeded", timeout, err)
	}
	if elapsed < timeout {
		t.Errorf("Send() returned after %v, before DefaultTimeout %v", elapsed, timeout)
	}
	c := await(e, blk.started, "handler start")
	if c.Timeout <= 0 || c.Timeout > timeout {
		t.Errorf("handler saw Command.Timeout %v, want in (0, %v]", c.Timeout, timeout)
	}
	if n := ca.InFlight(); n != 0 {
		t.Errorf("InFlight() after the timeout = %d, want 0", n)
	}
}

func testHandlerDeadline(t *testing.T, s suite) {
	e := s.env(t)
	type seen struct {
		deadline time.Time
		ok       bool
		timeout  time.Duration
	}
	got := make(chan seen, 1)
	mux := command.NewMux()
	mux.RegisterFunc("DEADLINE", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		dl, ok := ctx.Deadline()
		got <- seen{dl, ok, c.Timeout}
		return nil, nil
	})
	ca, _ := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
	const timeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	before := time.Now()
	if _, err := ca.Send(ctx, &command.Command{Type: "DEADLINE"}); err != nil {
		t.Fatalf("Send() error = %v", err)
	}
	h := await(e, got, "handler")
	if !h.ok {
		t.Fatal("handler context has no deadline, want the sender's")
	}
	if h.timeout <= 0 || h.timeout > timeout {
		t.Errorf("Command.Timeout = %v, want in (0, %v]", h.timeout, timeout)
	}
	if h.deadline.Before(before) || h.deadline.After(before.Add(timeout+time.Second)) {
		t.Errorf("handler deadline = %v from the send, want within about %v", h.deadline.Sub(before), timeout)
	}
}

func testUnknownCommand(t *testing.T, s suite) {
	for _, tc := range []struct {
		name string
		h    command.Handler
	}{
		{"Mux", echoMux()},
		{"NilHandler", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := s.env(t)
			ca, cb := e.channels(s.mp, echoMux(), tc.h, channel.Config{}, channel.Config{})
			_, err := ca.Send(e.ctx, &command.Command{ID: "u1", Type: "NO_SUCH_TYPE"})
			var ue *channel.UnknownCommandError
			if !errors.As(err, &ue) {
				t.Fatalf("Send(NO_SUCH_TYPE) = %v, want a *UnknownCommandError", err)
			}
			if ue.Type != "NO_SUCH_TYPE" || ue.CommandID != "u1" || !errors.Is(err, channel.ErrUnknownCommand) {
				t.Errorf("error = %#v, want type NO_SUCH_TYPE, id u1, wrapping ErrUnknownCommand", ue)
			}
			if err := ca.Err(); err != nil {
				t.Errorf("Err() = %v, want nil", err)
			}
			checkAlive(e, cb) // the side without the handler still sends
		})
	}
}

func testHandlerError(t *testing.T, s suite) {
	e := s.env(t)
	mux := echoMux()
	mux.RegisterFunc("FAIL", func(context.Context, *command.Command) (*command.Reply, error) {
		return nil, errors.New("database unreachable")
	})
	ca, cb := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
	_, err := ca.Send(e.ctx, &command.Command{ID: "f1", Type: "FAIL"})
	var re *channel.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("Send(FAIL) = %v, want a *RemoteError", err)
	}
	if re.CommandID != "f1" || re.Type != "FAIL" || !strings.Contains(re.Message, "database unreachable") {
		t.Errorf("RemoteError = %+v, want id f1, type FAIL and the handler's message", re)
	}
	if errors.Is(err, channel.ErrClosed) {
		t.Errorf("Send(FAIL) = %v, must not wrap ErrClosed", err)
	}
	// One faulty handler must not take the channel down (reference weakness 22).
	checkAlive(e, ca)
	if err := cb.Err(); err != nil {
		t.Errorf("handler side Err() = %v, want nil", err)
	}
}

func testHandlerPanic(t *testing.T, s suite) {
	e := s.env(t)
	mux := echoMux()
	mux.RegisterFunc("PANIC", func(context.Context, *command.Command) (*command.Reply, error) {
		panic("boom")
	})
	ca, cb := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
	_, err := ca.Send(e.ctx, &command.Command{ID: "p1", Type: "PANIC"})
	var re *channel.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("Send(PANIC) = %v, want a *RemoteError", err)
	}
	if !strings.Contains(re.Message, "boom") {
		t.Errorf("RemoteError.Message = %q, want it to mention the panic value", re.Message)
	}
	checkAlive(e, ca)
	if err := cb.Err(); err != nil {
		t.Errorf("handler side Err() = %v, want nil", err)
	}
}

func testHandlerFailedReply(t *testing.T, s suite) {
	e := s.env(t)
	mux := command.NewMux()
	mux.RegisterFunc("NO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		r := command.Failed(c, "the answer is no")
		r.Code = 409
		return r, nil
	})
	ca, _ := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
	r, err := ca.Send(e.ctx, &command.Command{ID: "n1", Type: "NO"})
	if err != nil {
		t.Fatalf("Send(NO) error = %v, want nil: a failed reply is a reply", err)
	}
	if r.Status != command.StatusError || r.Error != "the answer is no" || r.Code != 409 || r.CommandID != "n1" || r.Type != "NO" {
		t.Errorf("Send(NO) = %+v, want ERROR %q, code 409, for n1", r, "the answer is no")
	}
}

func testLocalBusy(t *testing.T, s suite) {
	e := s.env(t)
	blk := newBlocker()
	const retryAfter = 70 * time.Millisecond
	ca, _ := e.channels(s.mp, nil, blockMux(blk), channel.Config{MaxInFlight: 1, RetryAfter: retryAfter}, channel.Config{})
	first := e.goSend(e.ctx, ca, blockCmd("first"))
	await(e, blk.started, "first handler start")

	_, err := ca.Send(e.ctx, echoCmd("second"))
	var be *channel.BusyError
	if !errors.As(err, &be) || !errors.Is(err, channel.ErrBusy) {
		t.Fatalf("Send() beyond MaxInFlight = %v, want a *BusyError wrapping ErrBusy", err)
	}
	if be.Remote || be.RetryAfter != retryAfter {
		t.Errorf("BusyError = %+v, want Remote false, RetryAfter %v", be, retryAfter)
	}

	blk.unblock()
	if r := await(e, first, "first Send"); r.err != nil {
		t.Fatalf("first Send() = %v", r.err)
	}
	checkEcho(e, ca, "room again")
}

func testRemoteBusy(t *testing.T, s suite) {
	e := s.env(t)
	blk := newBlocker()
	const retryAfter = 250 * time.Millisecond
	ca, _ := e.channels(s.mp, nil, blockMux(blk), channel.Config{}, channel.Config{MaxHandlers: 1, RetryAfter: retryAfter})
	first := e.goSend(e.ctx, ca, blockCmd("first"))
	await(e, blk.started, "first handler start")

	_, err := ca.Send(e.ctx, echoCmd("second"))
	var be *channel.BusyError
	if !errors.As(err, &be) || !errors.Is(err, channel.ErrBusy) {
		t.Fatalf("Send() beyond the peer's MaxHandlers = %v, want a *BusyError wrapping ErrBusy", err)
	}
	if !be.Remote || be.RetryAfter != retryAfter {
		t.Errorf("BusyError = %+v, want Remote true, RetryAfter %v", be, retryAfter)
	}

	blk.unblock()
	if r := await(e, first, "first Send"); r.err != nil {
		t.Fatalf("first Send() = %v", r.err)
	}
	e.eventually("the handler slot is free", func() bool {
		_, err := ca.Send(e.ctx, echoCmd("room again"))
		return err == nil
	})
}

func testDuplicateID(t *testing.T, s suite) {
	e := s.env(t)
	blk := newBlocker()
	ca, _ := e.channels(s.mp, nil, blockMux(blk), channel.Config{}, channel.Config{})
	first := e.goSend(e.ctx, ca, blockCmd("same-id"))
	await(e, blk.started, "first handler start")

	_, err := ca.Send(e.ctx, blockCmd("same-id"))
	if !errors.Is(err, channel.ErrDuplicateID) {
		t.Fatalf("Send() with an id in flight = %v, want an error wrapping ErrDuplicateID", err)
	}
	blk.unblock()
	r := await(e, first, "first Send")
	if r.err != nil {
		t.Fatalf("first Send() = %v, want its own reply", r.err)
	}
	if got, _ := command.Decode[echo](r.reply.Payload); got.Text != "released same-id" {
		t.Errorf("first Send() reply = %q, want the first command's", got.Text)
	}
	// Once answered, the id may be used again (a retry with a stable id).
	if _, err := ca.Send(e.ctx, blockCmd("same-id")); err != nil {
		t.Errorf("Send() reusing an answered id = %v, want nil", err)
	}
}

func testCloseFailsPending(t *testing.T, s suite) {
	const n = 8
	e := s.env(t)
	blk := newBlocker()
	ca, _ := e.channels(s.mp, nil, blockMux(blk), channel.Config{}, channel.Config{})
	pending := make([]<-chan sendResult, n)
	for i := range n {
		pending[i] = e.goSend(e.ctx, ca, blockCmd("pending-"+strconv.Itoa(i)))
	}
	for range n {
		await(e, blk.started, "handler start")
	}
	if err := ca.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	// Every pending call fails at once with ErrClosed, not at its deadline
	// (reference weakness 20).
	for i, ch := range pending {
		r := await(e, ch, "pending Send after Close")
		if !errors.Is(r.err, channel.ErrClosed) || errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("pending Send #%d after Close = %v, want an error wrapping ErrClosed", i, r.err)
		}
	}
	select {
	case <-ca.Done():
	default:
		t.Error("Done() not closed after Close")
	}
	if err := ca.Err(); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Err() after Close = %v, want an error wrapping ErrClosed", err)
	}
	if _, err := ca.Send(e.ctx, echoCmd("after close")); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Send() after Close = %v, want an error wrapping ErrClosed", err)
	}
	if err := ca.Notify(e.ctx, echoCmd("after close")); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Notify() after Close = %v, want an error wrapping ErrClosed", err)
	}
	if n := ca.InFlight(); n != 0 {
		t.Errorf("InFlight() after Close = %d, want 0", n)
	}
	if err := ca.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

func testPeerCloseFailsPending(t *testing.T, s suite) {
	e := s.env(t)
	blk := newBlocker()
	ca, cb := e.channels(s.mp, nil, blockMux(blk), channel.Config{}, channel.Config{})
	pending := e.goSend(e.ctx, ca, blockCmd("pending"))
	await(e, blk.started, "handler start")
	if err := cb.Close(); err != nil {
		t.Errorf("peer Close() = %v, want nil", err)
	}
	r := await(e, pending, "pending Send after the peer closed")
	if !errors.Is(r.err, channel.ErrClosed) || errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("pending Send after the peer closed = %v, want an error wrapping ErrClosed", r.err)
	}
	await(e, ca.Done(), "Done() after the peer closed")
	if err := ca.Err(); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Err() after the peer closed = %v, want an error wrapping ErrClosed", err)
	}
}

func testHandlerCtxCancelledOnClose(t *testing.T, s suite) {
	for _, who := range []string{"LocalClose", "PeerClose"} {
		t.Run(who, func(t *testing.T) {
			e := s.env(t)
			blk := newBlocker()
			ca, cb := e.channels(s.mp, nil, blockMux(blk), channel.Config{}, channel.Config{})
			e.goSend(e.ctx, ca, blockCmd("long"))
			await(e, blk.started, "handler start")
			if who == "LocalClose" {
				_ = cb.Close()
			} else {
				_ = ca.Close()
			}
			if err := await(e, blk.ctxErr, "handler context end"); !errors.Is(err, channel.ErrClosed) {
				t.Errorf("handler context cause = %v, want an error wrapping ErrClosed", err)
			}
		})
	}
}

func testCloseWaitsForHandlers(t *testing.T, s suite) {
	e := s.env(t)
	started := make(chan struct{})
	release := make(chan struct{})
	var returned atomic.Bool
	mux := command.NewMux()
	mux.RegisterFunc("STUBBORN", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		close(started)
		<-ctx.Done()
		select { // cleans up for a while after its context ended
		case <-release:
		case <-e.ctx.Done(): // the test failed or timed out: let Close finish
		}
		returned.Store(true)
		return nil, ctx.Err()
	})
	ca, cb := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
	e.goSend(e.ctx, ca, &command.Command{Type: "STUBBORN"})
	await(e, started, "handler start")

	closed := e.goFunc(func() { _ = cb.Close() })
	never(e, closed, "Close() while a handler runs")
	close(release)
	await(e, closed, "Close() after the handler returned")
	if !returned.Load() {
		t.Error("Close() returned before the handler did")
	}
}

func testNotify(t *testing.T, s suite) {
	events := make(chan *command.Command, 4)
	mux := echoMux()
	mux.RegisterFunc("EVENT", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		events <- c
		return command.Succeeded(c, echo{Text: "this reply must not be sent"})
	})

	t.Run("Channel", func(t *testing.T) {
		e := s.env(t)
		ca, _ := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})
		if err := ca.Notify(e.ctx, &command.Command{Type: "EVENT", Payload: []byte(`"n"`)}); err != nil {
			t.Fatalf("Notify() = %v, want nil", err)
		}
		if c := await(e, events, "handler of the notified command"); !c.OneWay || string(c.Payload) != `"n"` {
			t.Errorf("handler got %+v, want the one-way EVENT", c)
		}
		// Send of a one-way command behaves as Notify.
		r, err := ca.Send(e.ctx, &command.Command{Type: "EVENT", OneWay: true})
		if r != nil || err != nil {
			t.Errorf("Send(one-way) = (%+v, %v), want (nil, nil)", r, err)
		}
		await(e, events, "handler of the one-way Send")
		if n := ca.InFlight(); n != 0 {
			t.Errorf("InFlight() after one-way sends = %d, want 0", n)
		}
	})

	t.Run("NoReplyOnTheWire", func(t *testing.T) {
		e := s.env(t)
		a, b := e.pipe(s.mp)
		e.channel(b, mux, channel.Config{})
		e.send(a, &channel.Frame{Command: &command.Command{ID: "ev", Type: "EVENT", OneWay: true}})
		await(e, events, "handler of the one-way command")
		e.send(a, &channel.Frame{Command: echoCmd("next")})
		// Frames are ordered: had the event been answered, that reply would
		// come first.
		if f := e.recv(a); f.Reply == nil || f.Reply.CommandID == "ev" || f.Reply.Type != "ECHO" {
			t.Errorf("first frame after a one-way command = %s, want the ECHO reply", describe(f))
		}
	})
}

func testInFlightBothDirections(t *testing.T, s suite) {
	e := s.env(t)
	blkA, blkB := newBlocker(), newBlocker()
	ca, cb := e.channels(s.mp, blockMux(blkA), blockMux(blkB), channel.Config{}, channel.Config{})
	check := func(wantA, wantB int) {
		t.Helper()
		if got := ca.InFlight(); got != wantA {
			t.Errorf("a.InFlight() = %d, want %d", got, wantA)
		}
		if got := cb.InFlight(); got != wantB {
			t.Errorf("b.InFlight() = %d, want %d", got, wantB)
		}
	}
	check(0, 0)
	ab := e.goSend(e.ctx, ca, blockCmd("a→b"))
	await(e, blkB.started, "b's handler")
	check(1, 1) // a awaits a reply, b handles a command
	ba := e.goSend(e.ctx, cb, blockCmd("b→a"))
	await(e, blkA.started, "a's handler")
	check(2, 2)
	blkA.unblock()
	blkB.unblock()
	for _, ch := range []<-chan sendResult{ab, ba} {
		if r := await(e, ch, "Send"); r.err != nil {
			t.Fatalf("Send() = %v", r.err)
		}
	}
	e.eventually("InFlight back to 0", func() bool { return ca.InFlight() == 0 && cb.InFlight() == 0 })
}

func testChannelFrameTooLarge(t *testing.T, s suite) {
	e := s.env(t)
	huge := bytes.Repeat([]byte("z"), channel.DefaultMaxFrameBytes+1)
	mux := echoMux()
	mux.RegisterFunc("HUGE_REPLY", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Payload: huge}, nil
	})
	ca, cb := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{})

	_, err := ca.Send(e.ctx, &command.Command{Type: "ECHO", Payload: huge})
	if !errors.Is(err, channel.ErrFrameTooLarge) {
		t.Fatalf("Send() of an oversized command = %v, want an error wrapping ErrFrameTooLarge", err)
	}
	if n := ca.InFlight(); n != 0 {
		t.Errorf("InFlight() after a refused command = %d, want 0", n)
	}
	checkAlive(e, ca)

	// An oversized reply cannot travel: the sender learns why at once.
	_, err = ca.Send(e.ctx, &command.Command{Type: "HUGE_REPLY"})
	var re *channel.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "too large") {
		t.Fatalf("Send() answered by an oversized reply = %v, want a *RemoteError saying the reply was too large", err)
	}
	checkAlive(e, ca)
	if err := cb.Err(); err != nil {
		t.Errorf("handler side Err() = %v, want nil", err)
	}
}

func testUnexpectedReplyIgnored(t *testing.T, s suite) {
	e := s.env(t)
	a, b := e.pipe(s.mp)
	ca := e.channel(a, echoMux(), channel.Config{})
	e.send(b, &channel.Frame{Reply: &command.Reply{CommandID: "nobody-asked", Type: "ECHO", Status: command.StatusSucceeded}})
	e.send(b, &channel.Frame{Command: echoCmd("still there?")})
	if f := e.recv(b); f.Reply == nil || f.Reply.Status != command.StatusSucceeded {
		t.Fatalf("reply after an unexpected reply = %s, want a SUCCEEDED ECHO reply", describe(f))
	}
	if err := ca.Err(); err != nil {
		t.Errorf("Err() after an unexpected reply = %v, want nil", err)
	}
}

func testMalformedCommandAnswered(t *testing.T, s suite) {
	e := s.env(t)
	a, b := e.pipe(s.mp)
	ca := e.channel(a, echoMux(), channel.Config{})
	e.send(b, &channel.Frame{Command: &command.Command{ID: "no-type", Payload: []byte(`{}`)}})
	f := e.recv(b)
	switch r := f.Reply; {
	case r == nil:
		t.Fatalf("answer to a command without type = %s, want a reply", describe(f))
	case r.CommandID != "no-type" || r.Status != command.StatusError || r.Code != 400:
		t.Errorf("answer to a command without type = %+v, want an ERROR reply, code 400, to no-type", r)
	case !strings.Contains(r.Error, "no type"):
		t.Errorf("answer's Error = %q, want it to name the problem (no type)", r.Error)
	}
	if err := ca.Err(); err != nil {
		t.Errorf("Err() after a malformed command = %v, want nil", err)
	}
	e.send(b, &channel.Frame{Command: echoCmd("next")})
	if f := e.recv(b); f.Reply == nil || f.Reply.Status != command.StatusSucceeded {
		t.Errorf("answer to the next command = %s, want a SUCCEEDED reply", describe(f))
	}
}

func testMalformedFrameCloses(t *testing.T, s suite) {
	e := s.env(t)
	a, b := e.pipe(s.mp)
	ca := e.channel(a, echoMux(), channel.Config{})
	pending := e.goSend(e.ctx, ca, echoCmd("never answered"))
	e.recv(b) // the command; the raw end does not answer it
	e.send(b, &channel.Frame{})

	// Not a silent drop (reference weakness 23): the channel dies, says why,
	// and the pending call fails at once.
	await(e, ca.Done(), "Done() after a frame with neither kind")
	err := ca.Err()
	if !errors.Is(err, channel.ErrMalformedFrame) || !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Err() = %v, want an error wrapping ErrMalformedFrame and ErrClosed", err)
	}
	if r := await(e, pending, "pending Send"); !errors.Is(r.err, channel.ErrMalformedFrame) {
		t.Errorf("pending Send() = %v, want an error wrapping ErrMalformedFrame", r.err)
	}
	// The peer learns that the connection is over.
	for {
		f, err := b.Recv()
		if err != nil {
			break
		}
		if f.Reply == nil {
			t.Fatalf("peer received %s after the malformed frame, want the connection to end", describe(f))
		}
	}
}

func helloPayload() command.HelloPayload {
	return command.HelloPayload{
		TargetID:     "target-1",
		ConnectorID:  "connector-1",
		Token:        "s3cret",
		Metadata:     map[string]string{"region": "eu", "version": "1.2.3"},
		Capabilities: []string{"batch"},
	}
}

// acceptResult is the outcome of AcceptHello.
type acceptResult struct {
	hello command.HelloPayload
	reply *command.Reply
	err   error
}

func (e *env) goAcceptHello(ctx context.Context, conn channel.Conn, decide channel.HelloDecider) <-chan acceptResult {
	out := make(chan acceptResult, 1)
	e.goFunc(func() {
		h, r, err := channel.AcceptHello(ctx, conn, decide)
		out <- acceptResult{h, r, err}
	})
	return out
}

func testHelloAccepted(t *testing.T, s suite) {
	e := s.env(t)
	a, b := e.pipe(s.mp)
	want := command.HelloReplyPayload{
		TargetID:        "target-rewritten",
		ChannelID:       "channel-1",
		ProtocolVersion: command.ProtocolVersion,
		Limits:          command.Limits{MaxFrameBytes: channel.DefaultMaxFrameBytes, MaxInFlight: 1024},
		HeartbeatMs:     30000,
		NodeID:          "node-1",
		Capabilities:    []string{"batch"},
	}
	var sawTimeout atomic.Int64
	accepted := e.goAcceptHello(e.ctx, b, func(_ context.Context, cmd *command.Command, _ command.HelloPayload) (*command.Reply, error) {
		sawTimeout.Store(int64(cmd.Timeout))
		return command.Succeeded(cmd, want)
	})
	got, err := channel.Hello(e.ctx, a, helloPayload())
	if err != nil {
		t.Fatalf("Hello() = %v, want nil", err)
	}
	if diff := diffJSON(want, got); diff != "" {
		t.Errorf("Hello() reply payload differs: %s", diff)
	}
	r := await(e, accepted, "AcceptHello")
	if r.err != nil {
		t.Fatalf("AcceptHello() = %v, want nil", r.err)
	}
	wantHello := helloPayload()
	wantHello.ProtocolVersion = command.ProtocolVersion // filled in by Hello
	if diff := diffJSON(wantHello, r.hello); diff != "" {
		t.Errorf("AcceptHello() payload differs: %s", diff)
	}
	if r.reply == nil || r.reply.Type != command.TypeHello || r.reply.Status != command.StatusSucceeded {
		t.Errorf("AcceptHello() reply = %+v, want a SUCCEEDED HELLO reply", r.reply)
	}
	if sawTimeout.Load() <= 0 {
		t.Errorf("HELLO Command.Timeout = %v, want the connector's remaining time", time.Duration(sawTimeout.Load()))
	}
	// The handshake leaves both ends ready for channels.
	ca := e.channel(a, nil, channel.Config{})
	e.channel(b, echoMux(), channel.Config{})
	checkAlive(e, ca)
}

func testHelloRejected(t *testing.T, s suite) {
	for _, tc := range []struct {
		name   string
		decide channel.HelloDecider
		reason string
	}{
		{"FailedReply", func(_ context.Context, cmd *command.Command, h command.HelloPayload) (*command.Reply, error) {
			if h.Token != "s3cret" {
				return nil, errors.New("wrong token seen")
			}
			return command.Failed(cmd, "target not allowed"), nil
		}, "target not allowed"},
		{"Error", func(context.Context, *command.Command, command.HelloPayload) (*command.Reply, error) {
			return nil, errors.New("bad token")
		}, "bad token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := s.env(t)
			a, b := e.pipe(s.mp)
			accepted := e.goAcceptHello(e.ctx, b, func(ctx context.Context, cmd *command.Command, h command.HelloPayload) (*command.Reply, error) {
				return tc.decide(ctx, cmd, h)
			})
			connected := make(chan error, 1)
			e.goFunc(func() {
				_, err := channel.Hello(e.ctx, a, helloPayload())
				connected <- err
			})
			r := await(e, accepted, "AcceptHello")
			var hre *channel.HelloRejectedError
			if !errors.As(r.err, &hre) || !strings.Contains(hre.Reason, tc.reason) {
				t.Errorf("AcceptHello() = %v, want a *HelloRejectedError with reason %q", r.err, tc.reason)
			}
			_ = b.Close() // what a controller does next: the reply must still arrive
			err := await(e, connected, "Hello")
			if !errors.As(err, &hre) || !errors.Is(err, channel.ErrHelloRejected) || !strings.Contains(hre.Reason, tc.reason) {
				t.Errorf("Hello() = %v, want a *HelloRejectedError with reason %q", err, tc.reason)
			}
		})
	}
}

func testHelloFirstFrameNotHello(t *testing.T, s suite) {
	e := s.env(t)
	a, b := e.pipe(s.mp)
	accepted := e.goAcceptHello(e.ctx, b, func(context.Context, *command.Command, command.HelloPayload) (*command.Reply, error) {
		return nil, errors.New("decider must not be called")
	})
	e.send(a, &channel.Frame{Command: &command.Command{ID: "too-early", Type: "ECHO"}})
	r := await(e, accepted, "AcceptHello")
	if !errors.Is(r.err, channel.ErrProtocol) {
		t.Errorf("AcceptHello() = %v, want an error wrapping ErrProtocol", r.err)
	}
	f := e.recv(a)
	if f.Reply == nil || f.Reply.CommandID != "too-early" || f.Reply.Status != command.StatusError || f.Reply.Error == "" {
		t.Errorf("sender got %s, want an ERROR reply to too-early saying why", describe(f))
	}
}

func testHelloTimeout(t *testing.T, s suite) {
	const timeout = 50 * time.Millisecond
	t.Run("AcceptHello", func(t *testing.T) {
		e := s.env(t)
		a, b := e.pipe(s.mp)
		ctx, cancel := context.WithTimeout(e.ctx, timeout)
		defer cancel()
		start := time.Now()
		r := await(e, e.goAcceptHello(ctx, b, nil), "AcceptHello with a silent connector")
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("AcceptHello() = %v, want an error wrapping DeadlineExceeded", r.err)
		}
		if d := time.Since(start); d > defaultTestTimeout/2 {
			t.Errorf("AcceptHello() returned %v after its %v deadline, want promptly", d, timeout)
		}
		if _, err := a.Recv(); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("connector's Recv() after the handshake timed out = %v, want ErrClosed (conn closed)", err)
		}
	})
	t.Run("Hello", func(t *testing.T) {
		e := s.env(t)
		a, b := e.pipe(s.mp)
		ctx, cancel := context.WithTimeout(e.ctx, timeout)
		defer cancel()
		start := time.Now()
		_, err := channel.Hello(ctx, a, helloPayload())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Hello() with a silent controller = %v, want an error wrapping DeadlineExceeded", err)
		}
		if d := time.Since(start); d > defaultTestTimeout/2 {
			t.Errorf("Hello() returned %v after its %v deadline, want promptly", d, timeout)
		}
		// The controller end sees the conn end (after the HELLO, if the
		// transport delivered it before the close).
		for {
			f, err := b.Recv()
			if err != nil {
				if !errors.Is(err, channel.ErrClosed) {
					t.Errorf("controller's Recv() after the handshake timed out = %v, want ErrClosed (conn closed)", err)
				}
				break
			}
			if f.Command == nil || f.Command.Type != command.TypeHello {
				t.Fatalf("controller received %s, want only the HELLO", describe(f))
			}
		}
	})
}

// diffJSON compares two payload structs, returning "" when they are equal.
func diffJSON(want, got any) string {
	w, err1 := command.Encode(want)
	g, err2 := command.Encode(got)
	if err := errors.Join(err1, err2); err != nil {
		return err.Error()
	}
	if !bytes.Equal(w, g) {
		return fmt.Sprintf("\n got %s\nwant %s", g, w)
	}
	return ""
}

// testBurst queues commands and replies behind a stalled writer and checks
// that, once it is released, they all arrive in order, in batches when the
// channel coalesces and one at a time otherwise.
func testBurst(t *testing.T, s suite) {
	// How much the writer coalesces depends on the scheduler (it yields once
	// before a lone frame, it never waits): a burst that went out one frame
	// at a time, or mostly so, is run again, at most four more times, before
	// it counts as a failure. The order and completeness checks apply to
	// every run.
	for run := 1; ; run++ {
		batches, frames := burstOnce(t, s)
		if t.Failed() || !s.coalesce || (batches > 0 && frames >= burstN) || run == 5 {
			checkBurstBatches(t, s, batches, frames)
			return
		}
		t.Logf("run %d: %d batches of %d frames in all (the scheduler ran the writer frame by frame); again", run, batches, frames)
	}
}

// checkBurstBatches checks how the burst went out: in batches when the
// channel coalesces, one frame at a time otherwise.
func checkBurstBatches(t *testing.T, s suite, batches, frames int) {
	const n = burstN
	switch {
	case !s.coalesce && batches != 0:
		t.Errorf("without Coalesce: %d batches sent, want none", batches)
	case s.coalesce && (batches == 0 || frames < n):
		t.Errorf("with Coalesce: %d batches of %d frames in all, want the %d frames queued behind the stalled writer batched", batches, frames, 2*n)
	}
}

// burstN is how many commands and how many replies a burst queues.
const burstN = 10

// burstOnce runs one burst and returns how the FaultConn saw it go out.
func burstOnce(t *testing.T, s suite) (batches, frames int) {
	const n = burstN
	e := s.env(t)
	a, b := e.pipe(s.mp)
	fa := NewFaultConn(a)
	var handled atomic.Int64
	mux := echoMux()
	ca := e.channel(fa, command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		defer handled.Add(1)
		return mux.Handle(ctx, cmd)
	}), channel.Config{})

	fa.Stall(DirSend)
	// Replies: the peer's commands are answered while the writer is held
	// (InFlight counts a command until its reply is queued; it is 0 too
	// between two commands that the reader has not read yet, hence the
	// count of handler runs).
	for i := range n {
		e.send(b, &channel.Frame{Command: &command.Command{ID: "to-a-" + strconv.Itoa(i), Type: "ECHO", Payload: []byte(`{"text":"x"}`)}})
	}
	e.eventually("every command handled", func() bool { return handled.Load() == n && ca.InFlight() == 0 })
	// Commands: Notify returns once its command is queued.
	for i := range n {
		if err := ca.Notify(e.ctx, &command.Command{ID: "from-a-" + strconv.Itoa(i), Type: "EVENT"}); err != nil {
			t.Fatalf("Notify() = %v", err)
		}
	}
	fa.Unstall()

	// Handlers run concurrently, so replies come in any order; commands keep
	// the order of the Notify calls.
	replied := map[string]bool{}
	commands := 0
	for range 2 * n {
		switch f := e.recv(b); {
		case f.Reply != nil:
			id := f.Reply.CommandID
			if !strings.HasPrefix(id, "to-a-") || replied[id] || f.Reply.Status != command.StatusSucceeded {
				t.Fatalf("reply %+v, want one SUCCEEDED reply to each to-a-* command", f.Reply)
			}
			replied[id] = true
		case f.Command != nil:
			if want := "from-a-" + strconv.Itoa(commands); f.Command.ID != want || !f.Command.OneWay {
				t.Fatalf("command #%d = %s, want the one-way EVENT[%s]", commands, describe(f), want)
			}
			commands++
		}
	}
	batches, frames = fa.Batches()
	// A lone frame still goes out at once.
	e.send(b, &channel.Frame{Command: &command.Command{ID: "last", Type: "ECHO", Payload: []byte(`{"text":"x"}`)}})
	if f := e.recv(b); f.Reply == nil || f.Reply.CommandID != "last" {
		t.Fatalf("answer to a lone command = %s, want its reply", describe(f))
	}
	if err := ca.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
	return batches, frames
}

// testQueuedSendKeepsNoPayload checks that a Send which returns while its
// command still waits to be written does not keep the caller's payload: the
// caller may reuse it at once, and the peer gets what was sent.
func testQueuedSendKeepsNoPayload(t *testing.T, s suite) {
	e := s.env(t)
	a, b := e.pipe(s.mp)
	fa := NewFaultConn(a)
	ca := e.channel(fa, nil, channel.Config{})
	fa.Stall(DirSend)
	first := e.goSend(e.ctx, ca, &command.Command{ID: "one", Type: "ECHO", Payload: []byte(`{"text":"one"}`)})
	e.eventually("the first Send pending", func() bool { return ca.InFlight() == 1 })
	payload := []byte(`{"text":"two"}`)
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Millisecond)
	defer cancel()
	// The writer (or the first Send, writing inline) is stalled: this
	// command is queued, and Send gives up before it is written.
	if _, err := ca.Send(ctx, &command.Command{ID: "two", Type: "ECHO", Payload: payload}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send(two) behind a stalled writer = %v, want DeadlineExceeded", err)
	}
	copy(payload, `{"text":"XXX"}`) // the caller's buffer, reused
	fa.Unstall()
	for range 2 {
		f := e.recv(b)
		if f.Command == nil {
			t.Fatalf("peer received %s, want the two commands", describe(f))
		}
		want := `{"text":"` + f.Command.ID + `"}`
		if got := string(f.Command.Payload); got != want {
			t.Errorf("command %s arrived with payload %s, want %s", f.Command.ID, got, want)
		}
	}
	e.send(b, &channel.Frame{Reply: &command.Reply{CommandID: "one", Type: "ECHO", Status: command.StatusSucceeded}})
	if r := await(e, first, "the first Send"); r.err != nil {
		t.Errorf("Send(one) = %v, want its reply", r.err)
	}
}
