package channel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/exchangekit/exchange/command"
)

// AsyncHandler is a command.Handler that can also answer commands without
// a goroutine of the channel waiting for each answer: a handler whose work
// is itself a round trip elsewhere (a cluster node delivering forwarded
// commands to its connectors' channels, with SendAsync) answers from that
// round trip's completion instead of holding a handler goroutine while it
// waits.
//
// For every admitted command the Channel asks Async first, on its reading
// goroutine. Commands it declines go to Handle on a handler goroutine, as
// for any Handler. A command it takes goes to HandleAsync, on the reading
// goroutine too; the command counts against MaxHandlers (or MaxControl), and
// in InFlight, until answer is called.
type AsyncHandler interface {
	command.Handler
	// Async reports whether cmd is handled by HandleAsync. It must be
	// quick and must not block: the channel reads its next frame after it.
	Async(cmd *command.Command) bool
	// HandleAsync starts handling cmd and returns without waiting for the
	// outcome; it must not block. It must call answer exactly once, on any
	// goroutine (during HandleAsync too), with what Handle would return:
	// answer turns them into the reply as it does Handle's, sends it
	// without ever waiting for room in the write queue (such replies are at
	// most MaxHandlers beyond Config.SendQueue), and returns at once. Later
	// calls of answer are ignored; a command never answered holds its
	// handler token until the channel closes. ctx carries the command's
	// trace context and ends when the channel dies; the sender's deadline
	// is cmd.Timeout from the call.
	HandleAsync(ctx context.Context, cmd *command.Command, answer func(*command.Reply, error))
}

// handOver gives cmd, admitted with a token of sem, to the handler's
// HandleAsync if it takes it (AsyncHandler); it reports whether it did. The
// reader calls it, or takeInline in its stead.
func (c *Channel) handOver(cmd *command.Command, sem *atomic.Int64) (took bool) {
	ah, ok := c.h.(AsyncHandler)
	if !ok || !ah.Async(cmd) {
		return false
	}
	run := &asyncRun{c: c, cmd: cmd, sem: sem}
	if cmd.Timeout > 0 || c.cfg.Observer != nil {
		run.start = time.Now()
	}
	ctx, span := startHandleSpan(c.ctx, cmd)
	run.span = span
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("channel: handler panicked", "command", cmd.String(), "panic", p)
			run.finish(&command.Reply{CommandID: cmd.ID, Type: command.TypeNoReply, Status: command.StatusError,
				Error: fmt.Sprintf("handler for %s panicked: %v", cmd.Type, p), Code: codeInternal})
			took = true // taken and answered: not to be handled again
		}
	}()
	ah.HandleAsync(ctx, cmd, run.answer)
	return true
}

// asyncRun is a command handed to HandleAsync, until it is answered.
type asyncRun struct {
	c        *Channel
	cmd      *command.Command
	sem      *atomic.Int64 // whose token the command holds
	start    time.Time     // set for a deadline or an Observer
	span     trace.Span
	answered atomic.Bool
}

// answer is HandleAsync's answer: see AsyncHandler.
func (run *asyncRun) answer(r *command.Reply, err error) {
	cmd := run.cmd
	gaveUp := err != nil && cmd.Timeout > 0 && errors.Is(err, context.DeadlineExceeded) &&
		time.Since(run.start) >= cmd.Timeout
	run.finish(run.c.answer(cmd, r, err, gaveUp, nil))
}

// finish sends reply (nil: none), once, and gives the command's handler
// token back.
func (run *asyncRun) finish(reply *command.Reply) {
	if !run.answered.CompareAndSwap(false, true) {
		return
	}
	c, cmd := run.c, run.cmd
	endHandleSpan(run.span, reply)
	if o := c.cfg.Observer; o != nil {
		status := command.StatusError
		if reply != nil {
			status = reply.Status
		}
		o.Handled(cmd.Type, time.Since(run.start), status)
	}
	if reply != nil && !cmd.OneWay {
		c.pushReply(reply)
	} else {
		c.addHandling(-1)
	}
	run.sem.Add(-1)
}

// pushReply queues r, the reply to a command HandleAsync took, for the
// writer without waiting for room (see AsyncHandler): the goroutine that
// answers may be another channel's reader, which must not wait for this
// channel's peer. The command stops counting in InFlight once r is queued,
// as submit's handled replies do.
func (c *Channel) pushReply(r *command.Reply) {
	c.wmu.Lock()
	c.addHandling(-1)
	if c.wdead || c.ctx.Err() != nil {
		c.wmu.Unlock()
		return
	}
	c.queueLocked(Frame{Reply: r})
}

// SendAsync sends cmd as Send does, but returns without waiting for the
// reply: done gets what Send would have returned (the reply, or an error
// wrapping the same errors), exactly once, on the goroutine that completes
// the call: the channel's reader when the reply arrives, the deadline's
// timer, or the one that closes the channel; possibly before SendAsync
// returns. done must not block (the reader waits for it) and must not call
// Close on this channel.
//
// The deadline is timeout (Config.DefaultTimeout when not positive), or
// ctx's deadline if earlier; when ctx is done first, the call ends with its
// error, as Send's does (a late reply is then ignored, and the command's id
// is free again). SendAsync never
// waits: the frame is always queued for the writer goroutine, and a full
// write queue (Config.SendQueue frames) is a *BusyError at once, as are
// MaxInFlight (or MaxControl) calls already pending. When SendAsync returns
// an error, done is not called. cmd is copied: the caller may reuse it at
// once. One-way commands go through Notify.
func (c *Channel) SendAsync(ctx context.Context, cmd *command.Command, timeout time.Duration, done func(*command.Reply, error)) error {
	if err := checkCommand(cmd); err != nil {
		return fmt.Errorf("channel: send: %w", err)
	}
	if cmd.OneWay {
		return fmt.Errorf("channel: send %s: %w: a one-way command is sent with Notify", cmd, ErrMalformedFrame)
	}
	if timeout <= 0 {
		timeout = c.cfg.DefaultTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("channel: send %s: %w", cmd, err)
	}
	if timeout <= 0 {
		return fmt.Errorf("channel: send %s: %w", cmd, context.DeadlineExceeded)
	}
	out := new(command.Command)
	*out = *cmd
	out.Payload = slices.Clone(cmd.Payload) // queued: it outlives the call
	out.Metadata = maps.Clone(cmd.Metadata)
	if out.ID == "" {
		out.ID, out.FreshID = newCommandID(), true
	}
	out.Timeout = max(timeout, time.Millisecond)
	injectTrace(ctx, out)
	a := &asyncCall{c: c, cmd: out, done: done}
	if c.cfg.Observer != nil {
		a.start = time.Now()
	}
	control := IsControl(out.Type)
	c.mu.Lock()
	switch {
	case c.ctx.Err() != nil: // under mu: see send
		c.mu.Unlock()
		return fmt.Errorf("channel: send %s: %w", out, context.Cause(c.ctx))
	case c.pending.has(out.ID):
		c.mu.Unlock()
		return fmt.Errorf("channel: send %s: %w", out, ErrDuplicateID)
	case control && c.pendCtl >= c.cfg.MaxControl,
		!control && c.pending.len()-c.pendCtl >= c.cfg.MaxInFlight:
		c.mu.Unlock()
		return fmt.Errorf("channel: send %s: %w", out, &BusyError{RetryAfter: c.cfg.RetryAfter})
	}
	// Armed under mu, before the call is pending: whoever takes the call
	// (deliver, expire, shutdown, all under mu) finds its timer set, and
	// its watch of ctx.
	a.timer = time.AfterFunc(timeout, a.expire)
	if ctx.Done() != nil {
		a.stopWatch = context.AfterFunc(ctx, func() { a.abandon(ctx.Err()) })
	}
	c.pending.put(out.ID, call{async: a, control: control})
	c.addTotal(1)
	if control {
		c.pendCtl++
	}
	c.mu.Unlock()

	if err := c.tryQueue(Frame{Command: out}); err != nil {
		if !c.take(out.ID, a) {
			return nil // the deadline or the channel's death took the call: done has its result
		}
		a.stop()
		return fmt.Errorf("channel: send %s: %w", out, err)
	}
	return nil
}

// tryQueue queues f for the writer unless the channel is dead or the write
// queue full; it never waits.
func (c *Channel) tryQueue(f Frame) error {
	c.wmu.Lock()
	switch {
	case c.wdead || c.ctx.Err() != nil:
		c.wmu.Unlock()
		return context.Cause(c.ctx)
	case len(c.wq) >= c.cfg.SendQueue:
		c.wmu.Unlock()
		return &BusyError{RetryAfter: c.cfg.RetryAfter}
	}
	c.queueLocked(f)
	return nil
}

// take removes a's call of id from the pending calls if it is still there,
// and reports whether it was: the caller then completes it (or drops it).
func (c *Channel) take(id string, a *asyncCall) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending.get(id)
	if !ok || p.async != a {
		return false
	}
	c.removeLocked(id, p)
	return true
}

// asyncCall is a pending SendAsync.
type asyncCall struct {
	c         *Channel
	cmd       *command.Command // the channel's copy, as sent
	done      func(*command.Reply, error)
	timer     *time.Timer // the deadline; set under Channel.mu before the call is pending
	stopWatch func() bool // stops the watch of the caller's ctx; nil without one
	start     time.Time   // for the Observer
}

// stop stops the deadline and the watch of the caller's ctx. One that fired
// already finds the call gone (expire, abandon).
func (a *asyncCall) stop() {
	a.timer.Stop()
	if a.stopWatch != nil {
		a.stopWatch()
	}
}

// abandon ends the call, if still pending, because the caller's ctx is done.
func (a *asyncCall) abandon(err error) {
	if a.c.take(a.cmd.ID, a) {
		a.complete(result{err: fmt.Errorf("no reply: %w", err)})
	}
}

// expire is the deadline of the call: if it is still pending, it fails
// with the deadline error, as Send's does.
func (a *asyncCall) expire() {
	if a.c.take(a.cmd.ID, a) {
		a.complete(result{err: errExpired})
	}
}

// complete ends the call with r; only the one that took the call from the
// pending calls calls it.
func (a *asyncCall) complete(r result) {
	a.stop()
	reply, err := a.c.finish(a.cmd, r)
	if o := a.c.cfg.Observer; o != nil {
		o.Sent(a.cmd.Type, time.Since(a.start), err)
	}
	a.done(reply, err)
}
