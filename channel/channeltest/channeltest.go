package channeltest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// MakePipe returns the two connected ends of a fresh connection of the
// transport under test: a is the dialing (connector) end and b the accepting
// (controller) end. It must register, with t.Cleanup, whatever closes both ends
// and releases the transport's resources (servers, listeners), and it must fail
// t (t.Fatal) if it cannot connect.
//
// t is a testing.TB so that one MakePipe serves TestConn, TestChannel (which
// pass a *testing.T) and RunBenchmarks (which passes a *testing.B).
type MakePipe func(t testing.TB) (a, b channel.Conn)

const (
	// defaultTestTimeout bounds every wait of the suite.
	defaultTestTimeout = 10 * time.Second
	// largeFrameTimeout bounds the waits of LargeFrame: a frame of nearly
	// channel.DefaultMaxFrameBytes through an encoding that copies it
	// several times (the WebSocket twin's JSON and base64, over TLS) takes
	// seconds under the race detector on a loaded machine.
	largeFrameTimeout = time.Minute
	// defaultTestShortTimeout is how long the suite waits for something that
	// must NOT happen.
	defaultTestShortTimeout = 20 * time.Millisecond
)

// env is the per-test scaffolding of the suite: a bounded context and a
// WaitGroup for the test's goroutines, waited for after every other cleanup.
type env struct {
	t        testing.TB
	ctx      context.Context // ends with the test or after defaultTestTimeout
	wg       sync.WaitGroup
	coalesce bool // set Config.Coalesce on every Channel made by channel
}

func newEnv(t testing.TB) *env { return newEnvTimeout(t, defaultTestTimeout) }

// newEnvTimeout is newEnv with waits bounded by d instead of
// defaultTestTimeout.
func newEnvTimeout(t testing.TB, d time.Duration) *env {
	e := &env{t: t}
	t.Cleanup(e.wg.Wait) // registered first, so it runs last
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	e.ctx = ctx
	return e
}

// pipe makes a pipe with mp. Both ends are closed if the test's context ends,
// so that a broken transport fails the test instead of hanging it.
func (e *env) pipe(mp MakePipe) (a, b channel.Conn) {
	e.t.Helper()
	a, b = mp(e.t)
	if a == nil || b == nil {
		e.t.Fatal("MakePipe returned a nil Conn")
	}
	stop := context.AfterFunc(e.ctx, func() { _ = a.Close(); _ = b.Close() })
	e.t.Cleanup(func() { stop() })
	return a, b
}

// channel starts a Channel over conn; it is closed at cleanup.
func (e *env) channel(conn channel.Conn, h command.Handler, cfg channel.Config) *channel.Channel {
	cfg.Coalesce = cfg.Coalesce || e.coalesce
	ch := channel.New(conn, h, cfg)
	e.t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// channels makes a pipe and starts a Channel on each end: ca over a with
// handler ha, cb over b with handler hb.
func (e *env) channels(mp MakePipe, ha, hb command.Handler, cfga, cfgb channel.Config) (ca, cb *channel.Channel) {
	e.t.Helper()
	a, b := e.pipe(mp)
	return e.channel(a, ha, cfga), e.channel(b, hb, cfgb)
}

// goFunc runs f on a goroutine the test waits for after its other cleanups
// (which close the pipes and channels f may be blocked on). The returned
// channel is closed when f returns.
func (e *env) goFunc(f func()) <-chan struct{} {
	done := make(chan struct{})
	e.wg.Go(func() {
		defer close(done)
		f()
	})
	return done
}

// sendResult is the outcome of one Channel.Send.
type sendResult struct {
	reply *command.Reply
	err   error
}

// goSend calls ch.Send(ctx, cmd) on a goroutine and returns where its outcome arrives.
func (e *env) goSend(ctx context.Context, ch *channel.Channel, cmd *command.Command) <-chan sendResult {
	out := make(chan sendResult, 1)
	e.goFunc(func() {
		r, err := ch.Send(ctx, cmd)
		out <- sendResult{r, err}
	})
	return out
}

// recvResult is the outcome of one Conn.Recv.
type recvResult struct {
	f   *channel.Frame
	err error
}

// goRecv calls c.Recv on a goroutine and returns where its outcome arrives.
func (e *env) goRecv(c channel.Conn) <-chan recvResult {
	out := make(chan recvResult, 1)
	e.goFunc(func() {
		f, err := c.Recv()
		out <- recvResult{f, err}
	})
	return out
}

// send sends f on c, failing the test on error.
func (e *env) send(c channel.Conn, f *channel.Frame) {
	e.t.Helper()
	if err := c.Send(f); err != nil {
		e.t.Fatalf("Send(%s) = %v, want nil", describe(f), err)
	}
}

// recv receives one frame from c, failing the test on error. (The pipe's ends
// are closed when the test's context ends, so this cannot hang.)
func (e *env) recv(c channel.Conn) *channel.Frame {
	e.t.Helper()
	f, err := c.Recv()
	if err != nil {
		e.t.Fatalf("Recv() error = %v, want a frame", err)
	}
	if f == nil {
		e.t.Fatal("Recv() = nil frame, nil error")
	}
	return f
}

// await waits for a value on ch, failing the test if none comes in time.
func await[T any](e *env, ch <-chan T, what string) T {
	e.t.Helper()
	select {
	case v := <-ch:
		return v
	case <-e.ctx.Done():
		e.t.Fatalf("%s: nothing happened before %v", what, context.Cause(e.ctx))
		var zero T
		return zero
	}
}

// never checks that nothing arrives on ch for defaultTestShortTimeout.
func never[T any](e *env, ch <-chan T, what string) {
	e.t.Helper()
	timer := time.NewTimer(defaultTestShortTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		e.t.Fatalf("%s: got %+v, want nothing yet", what, v)
	case <-timer.C:
	}
}

// eventually polls cond until it holds, failing the test if it does not in
// time.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-e.ctx.Done():
			e.t.Fatalf("%s: still false after %v", what, context.Cause(e.ctx))
		}
	}
}

// describe names a frame in failure messages.
func describe(f *channel.Frame) string {
	switch {
	case f == nil:
		return "<nil frame>"
	case f.Command != nil && f.Reply != nil:
		return "command " + f.Command.String() + " + reply to " + f.Reply.CommandID
	case f.Command != nil:
		return "command " + f.Command.String()
	case f.Reply != nil:
		return "reply " + string(f.Reply.Type) + " to " + f.Reply.CommandID
	}
	return "empty frame"
}
