package channel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/logthrottle"
)

// dropLogInterval is the least time between two "one-way command dropped"
// lines of one Channel; each says how many drops went unlogged before it.
const dropLogInterval = time.Second

// CloseWithErrorer is implemented by Conns that can tell the peer why they are
// closing (the gRPC twin ends the stream with a status carrying err). Channel
// uses it when it closes a Conn because of a protocol error.
type CloseWithErrorer interface {
	CloseWithError(err error) error
}

// call is a pending Send: where its result goes, and whether it counts
// against the control bound (Config.MaxControl) or MaxInFlight.
type call struct {
	ch      chan result // a Send's waiter; nil for SendAsync
	async   *asyncCall  // SendAsync's; nil for Send
	control bool
}

// IsControl reports whether t is a control command type: one of the
// built-ins HELLO, GOOD_BYE, HEALTH_CHECK and PRIMARY. Control commands have
// capacity of their own (Config.MaxControl) on both sides of a channel, so
// that application commands filling MaxInFlight or MaxHandlers never get a
// health check (or a GOOD_BYE, or a PRIMARY) refused as busy.
func IsControl(t command.Type) bool {
	switch t {
	case command.TypeHello, command.TypeGoodBye, command.TypeHealthCheck, command.TypePrimary:
		return true
	}
	return false
}

// result is what a pending Send receives: a reply or an error.
type result struct {
	reply *command.Reply
	err   error
}

// A waiter is where a pending Send waits for its result: a buffered(1)
// channel, and the timer of its deadline when its context has none, which
// delivers the timeout on that same channel (expire). The caller then waits
// on that one channel, plus its context's Done if it has one: a select over
// the result, the context and a timer channel costs a third more, and the
// timer channel must be linked into the runtime's timer heap each time the
// caller blocks on it.
//
// Waiters are pooled per Channel, not per process: channels and timers made
// inside a testing/synctest bubble must never be used outside it, and a
// Channel lives in exactly one bubble. A waiter goes back to the pool only
// once nobody can send on its channel any more: its result was taken, and
// its timer stopped before it fired (a timer that fired may still run
// expire; its waiter is left to the garbage collector).
type waiter struct {
	c     *Channel
	ch    chan result
	timer *time.Timer // made at the first use that needs it; runs expire
	id    string      // the command id the timer expires; set before the timer is armed
}

// expire is the deadline of a waiter's Send: if the call is still pending,
// it takes it and delivers errExpired, as deliver delivers a reply.
func (w *waiter) expire() {
	c := w.c
	c.mu.Lock()
	p, ok := c.pending.get(w.id)
	mine := ok && p.ch == w.ch
	if mine {
		c.removeLocked(w.id, p)
	}
	c.mu.Unlock()
	if mine {
		w.ch <- result{err: errExpired} // buffered(1), one sender: never blocks
	}
}

// errExpired is the result of a call whose deadline (its waiter's timer)
// passed; Send returns it as context.DeadlineExceeded (see finish).
var errExpired = errors.New("channel: send deadline passed")

// resultTaken is the error of submit when, waiting for room in the write
// queue, it took the call's result (a timeout, or the channel's death).
type resultTaken struct{ r result }

func (e *resultTaken) Error() string { return "channel: result taken while waiting for room" }

// isResultTaken reports whether err, from submit, is a *resultTaken
// (waitRoom returns it unwrapped).
func isResultTaken(err error) bool {
	_, ok := err.(*resultTaken)
	return ok
}

// getWaiter returns a waiter of c's pool, its channel empty.
func (c *Channel) getWaiter() *waiter {
	if w, _ := c.waiters.Get().(*waiter); w != nil {
		return w
	}
	return &waiter{c: c, ch: make(chan result, 1)}
}

// arm starts w's timer: the call of id expires after d.
func (w *waiter) arm(id string, d time.Duration) {
	w.id = id
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.expire)
		return
	}
	w.timer.Reset(d)
}

// putWaiter gives w back, its result taken; armed says its timer was armed.
func (c *Channel) putWaiter(w *waiter, armed bool) {
	if armed && !w.timer.Stop() {
		return // fired: expire may still look at w
	}
	w.id = ""
	c.waiters.Put(w)
}

// Channel runs the command/reply semantics over a Conn: it correlates replies
// with commands, applies deadlines, bounds the commands in flight, runs the
// peer's commands through a Handler off the read loop (control commands, see
// IsControl, within bounds of their own), and fails every pending
// call the moment the connection ends. Both twins (embedded and gRPC) share
// this one implementation, so they cannot drift.
//
// A Channel is safe for concurrent use. An idle Channel owns at most one
// goroutine: the reader (the only caller of Conn.Recv), and none at all when
// the Conn hosts the read loop on a goroutine of its transport (ReaderHost:
// the gRPC server's Connect handler). An application command's Send alone in
// flight is written by its caller when the Conn is free; every other frame is
// queued for a writer goroutine that exists only while the channel is in use
// (it ends once its queue has stayed empty for writerLinger). At most one
// goroutine is in Conn.Send or BatchSender.SendBatch at a time. Peer commands
// run on handler goroutines, up to Config.MaxHandlers, plus up to
// Config.MaxControl for control commands; they linger for the channel's next
// command for a while (handlerLinger, decisions 0036 and 0041). Close stops them all
// and waits for them (decision 0021).
type Channel struct {
	conn Conn
	h    command.Handler
	cfg  Config

	ctx    context.Context // cancelled (with the cause) when the channel dies
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // reader, writer and handler goroutines
	sem    atomic.Int64   // running handlers of application commands (≤ MaxHandlers)
	ctlSem atomic.Int64   // running handlers of control commands (≤ MaxControl)

	// The write side (see enqueue and writeLoop). wq holds the frames waiting
	// for the writer, in order; it grows on demand and is dropped when it
	// drains. writing says that a goroutine (the writer, or a Send writing
	// inline) owns Conn.Send; while it is false wq is empty.
	wmu     sync.Mutex
	wq      []Frame
	writing bool
	wdead   bool // set by shutdown: no writer starts any more
	wparked bool // the writer goroutine waits (writerLinger) for more, without owning Conn.Send
	// hooksRun is set under mu (below), not wmu: it only shares the word.
	hooksRun bool          // shutdown has taken hooks: AfterDone runs f at once
	wroom    chan struct{} // made by a caller waiting for room in a full wq; closed when the writer takes frames
	wwake    chan struct{} // buffered(1): wakes the parked writer, which then owns Conn.Send; nil without one

	mu      sync.Mutex   // protects pending, pendCtl, hooks and hooksRun
	pending pendingCalls // command id → call with a buffered(1) result channel; emptied for good by shutdown
	pendCtl int          // how many of pending are control commands
	hooks   *doneHook    // AfterDone's, a list, newest first, until shutdown runs them

	handling  atomic.Int64              // peer commands being handled
	workers   atomic.Pointer[workerSet] // handler goroutines (see dispatch); made by the reader at the first command
	dieOnce   sync.Once                 // guards the effects of shutdown
	closeOnce sync.Once                 // Close waits for the goroutines inside it: concurrent Closes wait too

	dropLog *logthrottle.Throttle // "one-way command dropped" lines; made by the reader at the first drop

	waiters sync.Pool // of *waiter
}

// New starts a Channel over conn. Commands from the peer are answered by h; a
// nil h answers every command with UNKNOWN. New takes ownership of conn: it is
// closed when the Channel closes. Config values that are zero (or negative)
// mean their default; see Config.Validate to reject negative values early.
func New(conn Conn, h command.Handler, cfg Config) *Channel {
	c := newChannel(conn, h, cfg)
	c.wg.Add(1)
	if h, ok := conn.(ReaderHost); !ok || !h.HostReader(c.hostedReadLoop) {
		go c.ownReadLoop()
	}
	return c
}

// NewHosted is New for an owner with a goroutine that would otherwise only
// wait for the Channel to end (a connector's Run): it returns the Channel and
// its read loop, which the caller must run once, promptly, on that goroutine.
// The loop returns once the Channel is dead (the peer closed, the transport
// broke, or Close or CloseWithCause was called, from another goroutine); an
// owner that must end the Channel on events of its own (a deadline, a
// signal) closes it from their callbacks. Close waits for the loop like for
// the Channel's other goroutines. The Conn's ReaderHost, if it has one, is
// not used.
func NewHosted(conn Conn, h command.Handler, cfg Config) (*Channel, func()) {
	c := newChannel(conn, h, cfg)
	c.wg.Add(1)
	return c, c.hostedReadLoop
}

// newChannel is a Channel over conn, without its read loop.
func newChannel(conn Conn, h command.Handler, cfg Config) *Channel {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Channel{
		conn:   conn,
		h:      h,
		cfg:    cfg,
		ctx:    ctx,
		cancel: cancel,
	}
	if ir, ok := conn.(InlineReceiver); ok {
		ir.ReceiveInline(c.takeInline)
	}
	return c
}

// hostedReadLoop is the read loop run by a ReaderHost, or by NewHosted's
// caller, on a goroutine of theirs.
func (c *Channel) hostedReadLoop() {
	defer c.wg.Done()
	c.readLoop()
}

// ownReadLoop is the read loop on a goroutine of the Channel's own.
func (c *Channel) ownReadLoop() {
	defer c.wg.Done()
	c.readLoop()
}

// AfterDone arranges for f to run, on a goroutine of its own, once the
// Channel dies (at once if it is dead already), as context.AfterFunc does:
// stop deregisters f, and reports whether it did so before f started. It
// lets an owner of many channels watch them without a goroutine per channel,
// and costs less than an AfterFunc on Done's context (which links a child,
// and a map for it, into the channel's context): a few words per hook.
func (c *Channel) AfterDone(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.hooksRun {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	h := &doneHook{f: f, next: c.hooks}
	c.hooks = h
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for p := &c.hooks; *p != nil; p = &(*p).next {
			if *p == h {
				*p = h.next
				return true
			}
		}
		return false // started, or about to (shutdown took it)
	}
}

// doneHook is a function AfterDone arranged to run when the channel dies,
// in the Channel's list of them.
type doneHook struct {
	f    func()
	next *doneHook
}

// Done returns a channel that is closed when the Channel dies: closed locally,
// closed by the peer, or broken.
func (c *Channel) Done() <-chan struct{} { return c.ctx.Done() }

// Err returns why the channel died, or nil while it is alive. The error always
// wraps ErrClosed; when the channel died of a protocol error it also wraps that
// error (for example ErrMalformedFrame).
func (c *Channel) Err() error {
	if c.ctx.Err() == nil {
		return nil
	}
	return context.Cause(c.ctx)
}

// InFlight returns the commands in progress in both directions: sent and
// awaiting a reply, plus received and being handled. A channel with nothing in
// flight can be closed without cutting any work short.
func (c *Channel) InFlight() int {
	c.mu.Lock()
	n := c.pending.len()
	c.mu.Unlock()
	return n + int(c.handling.Load())
}

// Send sends cmd and waits for its reply, until ctx is done (or, if ctx has no
// deadline, Config.DefaultTimeout has passed). An empty cmd.ID gets a fresh
// one; cmd itself is not modified, and Send does not keep it after returning.
// The time left before the deadline travels with the command (Command.Timeout)
// so that the peer's handler context expires when this side stops waiting. A
// one-way cmd (OneWay set) is sent as by Notify and Send returns a nil reply.
//
// A reply with StatusError is returned as a reply, not an error. Errors:
// context.DeadlineExceeded (or ctx's other error), wrapped, when no reply came
// in time; an error wrapping ErrClosed if the channel dies first (at once, not
// at the deadline); *UnknownCommandError when the peer has no handler for the
// type; *RemoteError when the peer's handler failed or panicked; *BusyError
// when too many commands are in flight here or at the peer (control
// commands, see IsControl, are counted apart from the others); ErrDuplicateID
// when a command with the same id is already in flight; ErrFrameTooLarge when
// the transport refused the frame; ErrMalformedFrame when cmd has no type.
func (c *Channel) Send(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	return c.SendTimeout(ctx, cmd, 0)
}

// SendTimeout is Send with timeout, when positive, in place of
// Config.DefaultTimeout for a ctx without a deadline; a deadline of ctx
// earlier than timeout from now wins. Its timeout errors are Send's
// (wrapping context.DeadlineExceeded). It spares a caller that sends many
// commands with a timeout each (the controller's health checks) a context
// and its timer per call: the deadline runs on a pooled timer.
func (c *Channel) SendTimeout(ctx context.Context, cmd *command.Command, timeout time.Duration) (*command.Reply, error) {
	o := c.cfg.Observer
	if o == nil {
		return c.send(ctx, cmd, timeout)
	}
	start := time.Now()
	reply, err := c.send(ctx, cmd, timeout)
	var t command.Type
	if cmd != nil {
		t = cmd.Type
	}
	o.Sent(t, time.Since(start), err)
	return reply, err
}

func (c *Channel) send(ctx context.Context, cmd *command.Command, timeout time.Duration) (*command.Reply, error) {
	if err := checkCommand(cmd); err != nil {
		return nil, fmt.Errorf("channel: send: %w", err)
	}
	if cmd.OneWay {
		return nil, c.Notify(ctx, cmd)
	}
	// The deadline: ctx's, or timeout (else Config.DefaultTimeout) from now on
	// the timer of a pooled waiter (cheaper than a context per call),
	// whichever comes first.
	armed := false
	// A handler's own context (a command forwarded or relayed by a
	// handler) is not asked for its Done channel, which would make it a
	// context.WithDeadline with a timer and a link to its channel (four
	// allocations per command): the waiter's timer keeps its deadline, and
	// the wait watches its channel's end directly.
	hc, _ := ctx.(*handlerCtx)
	if hc != nil && hc.armed.Load() != nil {
		hc = nil
	}
	if dl, ok := ctx.Deadline(); ok && (timeout <= 0 || time.Until(dl) <= timeout) {
		timeout = time.Until(dl)
		armed = hc != nil
	} else {
		if timeout <= 0 {
			timeout = c.cfg.DefaultTimeout
		}
		armed = true
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("channel: send %s: %w", cmd, err)
	}

	// The channel's own copy of cmd, whose Payload is still cmd's: it is
	// copied only if the frame is queued (submit, borrowed), since a frame
	// written inline is done with before Send returns. The copy of a
	// command written inline (the usual case one at a time) goes back to
	// sentCommands once Send is done with it: nothing else refers to it.
	out := sentCommands.Get().(*command.Command)
	*out = *cmd
	out.Metadata = maps.Clone(cmd.Metadata)
	if out.ID == "" {
		out.ID, out.FreshID = newCommandID(), true
	}
	out.Timeout = max(timeout, time.Millisecond)
	injectTrace(ctx, out)

	w := c.getWaiter()
	control := IsControl(out.Type)
	c.mu.Lock()
	switch {
	case c.ctx.Err() != nil:
		// Checked under mu: shutdown cancels ctx before it takes pending, so a
		// call registered after that would never be failed.
		c.mu.Unlock()
		c.putWaiter(w, false)
		return nil, fmt.Errorf("channel: send %s: %w", out, context.Cause(c.ctx))
	case c.pending.has(out.ID):
		c.mu.Unlock()
		c.putWaiter(w, false)
		return nil, fmt.Errorf("channel: send %s: %w", out, ErrDuplicateID)
	case control && c.pendCtl >= c.cfg.MaxControl,
		!control && c.pending.len()-c.pendCtl >= c.cfg.MaxInFlight:
		c.mu.Unlock()
		c.putWaiter(w, false)
		return nil, fmt.Errorf("channel: send %s: %w", out, &BusyError{RetryAfter: c.cfg.RetryAfter})
	}
	c.pending.put(out.ID, call{ch: w.ch, control: control})
	c.addTotal(1)
	alone := c.pending.len() == 1
	if control {
		c.pendCtl++
	}
	c.mu.Unlock()
	if armed {
		w.arm(out.ID, timeout)
	}

	// A command alone in flight is written by its caller when the Conn is
	// free: no goroutine switch before the wire (decision 0021), and on an
	// idle channel no writer goroutine started (and lingering) for it. With
	// others in flight it goes through the queue, whose writer batches
	// (Config.Coalesce). A control command (a health check) written inline
	// must not outlive its deadline in a write the peer never drains: should
	// the write still block at the deadline, the channel dies (the health
	// check would fail, and the channel be evicted, all the same).
	var stall *time.Timer
	if control && alone {
		stall = time.AfterFunc(timeout, c.writeStalled)
	}
	wrote, err := c.submit(ctx, w.ch, Frame{Command: out}, alone, false, true)
	if stall != nil {
		stall.Stop()
	}
	if wrote {
		defer recycleSent(out)
	}
	switch {
	case err == nil:
	case isResultTaken(err): // a timeout or the channel's death, while waiting for room
		c.putWaiter(w, armed)
		return c.finish(out, err.(*resultTaken).r)
	case errors.Is(err, ErrClosed): // the channel died (shutdown fails every pending call)
		r := <-w.ch
		c.putWaiter(w, armed)
		return c.finish(out, r)
	default:
		return c.giveUp(out, w, armed, err)
	}

	var r result
	var done <-chan struct{}
	if hc != nil {
		done = hc.parentDone()
	} else {
		done = ctx.Done()
	}
	if done == nil {
		r = <-w.ch
	} else {
		select {
		case r = <-w.ch:
		case <-done:
			return c.giveUp(out, w, armed, ctx.Err())
		}
	}
	c.putWaiter(w, armed)
	return c.finish(out, r)
}

// sentCommands recycles the channel's copies of the commands Send writes
// inline (process-wide: plain memory).
var sentCommands = sync.Pool{New: func() any { return new(command.Command) }}

// recycleSent gives back cmd, a copy from sentCommands written inline: the
// Conn does not keep a frame once Send returns, and Send's results copy what
// they need of it.
func recycleSent(cmd *command.Command) {
	*cmd = command.Command{}
	sentCommands.Put(cmd)
}

// errWriteStalled is why a channel dies when a control command's write is
// still blocked at its deadline: the peer reads nothing.
var errWriteStalled = errors.New("a control command's write blocked past its deadline: the peer reads nothing")

// writeStalled kills the channel whose control command could not be written
// in time; closing the Conn ends the blocked write.
func (c *Channel) writeStalled() {
	c.shutdown(&connError{op: "write", err: errWriteStalled}, nil)
}

// checkCommand rejects commands that could not be sent.
func checkCommand(cmd *command.Command) error {
	if cmd == nil {
		return fmt.Errorf("%w: nil command", ErrMalformedFrame)
	}
	if cmd.Type == "" {
		return fmt.Errorf("%w: command %q has no type", ErrMalformedFrame, cmd.ID)
	}
	return nil
}

// finish turns the result of a call into Send's return values.
func (c *Channel) finish(cmd *command.Command, r result) (*command.Reply, error) {
	if r.err == errExpired {
		return nil, fmt.Errorf("channel: send %s: no reply: %w", cmd, context.DeadlineExceeded)
	}
	if r.err != nil {
		return nil, fmt.Errorf("channel: send %s: %w", cmd, r.err)
	}
	return classify(cmd, r.reply)
}

// giveUp ends a call whose caller stopped waiting. If the result is already on
// its way (a reply or the channel's death raced with the deadline), that result
// wins; otherwise the pending entry is dropped, and a late reply is ignored.
func (c *Channel) giveUp(cmd *command.Command, w *waiter, armed bool, err error) (*command.Reply, error) {
	c.mu.Lock()
	p, _ := c.pending.get(cmd.ID)
	mine := p.ch == w.ch
	if mine {
		c.removeLocked(cmd.ID, p)
	}
	c.mu.Unlock()
	if !mine {
		// deliver, expire or shutdown took the entry and sends exactly
		// once, promptly.
		r := <-w.ch
		c.putWaiter(w, armed)
		return c.finish(cmd, r)
	}
	c.putWaiter(w, armed)
	return nil, fmt.Errorf("channel: send %s: no reply: %w", cmd, err)
}

// classify turns the reserved reply kinds into typed errors.
func classify(cmd *command.Command, r *command.Reply) (*command.Reply, error) {
	switch {
	case r.Type == command.TypeUnknown:
		return nil, &UnknownCommandError{CommandID: cmd.ID, Type: cmd.Type, Message: r.Error}
	case r.Type == command.TypeNoReply:
		return nil, &RemoteError{CommandID: cmd.ID, Type: cmd.Type, Message: r.Error, Reply: r}
	case r.Status == command.StatusError && r.Code == codeBusy && r.RetryAfter > 0:
		return nil, fmt.Errorf("channel: send %s: %w", cmd, &BusyError{RetryAfter: r.RetryAfter, Remote: true})
	}
	return r, nil
}

// Reply codes the channel itself puts on the replies it makes.
const (
	codeBadRequest = 400 // malformed command
	codeNotFound   = 404 // no handler for the type (UNKNOWN)
	codeTooLarge   = 413 // the handler's reply was over the frame limit (NO_REPLY)
	codeBusy       = 429 // MaxHandlers reached; RetryAfter set
	codeInternal   = 500 // the handler failed or panicked (NO_REPLY)
)

// Notify sends a one-way command: the peer runs its handler and sends no
// reply. Notify returns once the command is queued for writing, so a nil error
// does not mean the peer got it. It blocks while the write queue is full,
// until ctx is done or the channel dies.
func (c *Channel) Notify(ctx context.Context, cmd *command.Command) error {
	if err := checkCommand(cmd); err != nil {
		return fmt.Errorf("channel: notify: %w", err)
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("channel: notify %s: %w", cmd, err)
	}
	out := cmd.Clone()
	out.OneWay = true
	if out.ID == "" {
		out.ID, out.FreshID = newCommandID(), true
	}
	injectTrace(ctx, out)
	if err := c.enqueue(ctx, Frame{Command: out}); err != nil {
		return fmt.Errorf("channel: notify %s: %w", out, err)
	}
	return nil
}

// deliver hands r to the caller waiting for id, if it still waits.
func (c *Channel) deliver(id string, r result) bool {
	c.mu.Lock()
	p, ok := c.pending.get(id)
	if ok {
		c.removeLocked(id, p)
	}
	c.mu.Unlock()
	if !ok {
		return false
	}
	if p.async != nil {
		p.async.complete(r)
		return true
	}
	p.ch <- r // buffered(1), and only one sender ever holds ch: never blocks
	return true
}

// removeLocked drops the pending call p of id. c.mu must be held.
func (c *Channel) removeLocked(id string, p call) {
	c.pending.del(id)
	c.addTotal(-1)
	if p.control {
		c.pendCtl--
	}
}

// addHandling counts d more peer commands being handled (InFlight).
func (c *Channel) addHandling(d int64) {
	c.handling.Add(d)
	c.addTotal(d)
}

// addTotal adds d to Config.InFlightTotal, if set.
func (c *Channel) addTotal(d int64) {
	if t := c.cfg.InFlightTotal; t != nil {
		t.Add(d)
	}
}

// Close closes the channel: pending calls fail at once with an error wrapping
// ErrClosed, handlers' contexts are cancelled, and Close waits for every
// goroutine of the channel, handlers included. Commands and replies still
// queued for writing are dropped. It is idempotent and returns nil.
//
// Close must not be called from a Handler running on this channel: it would
// wait for that handler to return.
func (c *Channel) Close() error {
	return c.CloseWithCause(ErrClosed)
}

// CloseWithCause is Close, saying why: if the channel was still alive, Err
// then wraps cause (a *CloseCause, typically) as well as ErrClosed, and
// CloseReason reads it. If the channel had already died, the first cause
// stays. A nil cause is ErrClosed.
func (c *Channel) CloseWithCause(cause error) error {
	if cause == nil {
		cause = ErrClosed
	}
	c.shutdown(cause, nil)
	c.closeOnce.Do(c.wg.Wait)
	return nil
}

// shutdown kills the channel with cause: the first cause wins, and it is
// wrapped so that it always matches ErrClosed. tell, if not nil, is passed to
// the peer where the transport allows.
func (c *Channel) shutdown(cause, tell error) {
	c.dieOnce.Do(func() {
		if !errors.Is(cause, ErrClosed) {
			cause = fmt.Errorf("%w: %w", ErrClosed, cause)
		}
		c.cancel(cause)
		c.stopWorkers()
		c.wmu.Lock()
		c.wdead = true
		clear(c.wq)
		c.wq = c.wq[:0]
		c.wmu.Unlock()
		if cw, ok := c.conn.(CloseWithErrorer); ok && tell != nil {
			_ = cw.CloseWithError(tell)
		} else {
			_ = c.conn.Close()
		}
		c.mu.Lock()
		pending := c.pending.takeAll()
		c.addTotal(-int64(len(pending)))
		c.pendCtl = 0
		hooks := c.hooks
		c.hooks, c.hooksRun = nil, true
		c.mu.Unlock()
		for h := hooks; h != nil; h = h.next {
			go h.f()
		}
		for _, p := range pending {
			if p.async != nil {
				p.async.complete(result{err: cause})
				continue
			}
			p.ch <- result{err: cause} // buffered(1), never blocks
		}
	})
}

// readLoop is the reader: it delivers replies to the pending calls and
// hands commands to handler goroutines (dispatch). It stays one long-lived
// goroutine (or the transport's, see ReaderHost), whose stack has grown to
// the depth of the transport's decoding once: a reader handed on to a fresh
// goroutine per command (tried) spends more copying stacks than the switch
// it saves, and handing its role to a waiting handler goroutine (tried too,
// decision 0036) makes the next Recv wait for a goroutine switch.
func (c *Channel) readLoop() {
	for {
		f, err := c.conn.Recv()
		if err != nil {
			c.cfg.Logger.Debug("channel: read loop ends", "err", err)
			c.shutdown(&connError{op: "read", err: err}, nil)
			return
		}
		if err := f.Validate(); err != nil {
			if f != nil && f.Command != nil && f.Command.ID != "" && f.Reply == nil {
				// A command we can answer: tell the sender exactly what is wrong.
				c.cfg.Logger.Warn("channel: malformed command answered", "err", err)
				r := command.Failed(f.Command, err.Error())
				r.Code = codeBadRequest
				c.queueReply(r)
				continue
			}
			c.cfg.Logger.Warn("channel: closing on malformed frame", "err", err)
			c.shutdown(err, err)
			return
		}
		if f.Reply != nil {
			c.receiveReply(f.Reply)
			continue
		}
		if sem := c.admit(f.Command); sem != nil && !c.handOver(f.Command, sem) {
			c.dispatch(job{cmd: f.Command, sem: sem})
		}
	}
}

// receiveReply completes the call r answers, if it still waits.
func (c *Channel) receiveReply(r *command.Reply) {
	if !c.deliver(r.CommandID, result{reply: r}) {
		c.cfg.Logger.Debug("channel: late or unknown reply ignored", "commandId", r.CommandID, "type", r.Type)
	}
}

// takeInline is the reader's step for one frame, as an InlineReceiver runs
// it on the peer's sending goroutine while the reader waits (which makes it
// exclusive with the reader, as dispatch requires). It takes a well-formed
// reply, and a well-formed command within its bounds, and does with them
// what the reader would. It leaves the rest to the reader: a malformed
// frame (the reader answers or closes on it), and a command beyond its
// bounds (the reader's busy reply may wait for room in the write queue; a
// dropped one-way command is logged by the reader).
func (c *Channel) takeInline(f *Frame) bool {
	if f.Validate() != nil {
		return false
	}
	if f.Reply != nil {
		c.receiveReply(f.Reply)
		return true
	}
	sem, limit := &c.sem, c.cfg.MaxHandlers
	if IsControl(f.Command.Type) {
		sem, limit = &c.ctlSem, c.cfg.MaxControl
	}
	if sem.Add(1) > int64(limit) {
		sem.Add(-1)
		return false
	}
	c.addHandling(1)
	if !c.handOver(f.Command, sem) {
		c.dispatch(job{cmd: f.Command, sem: sem})
	}
	return true
}

// admit takes a handler token for cmd and returns its semaphore, or answers
// busy at once (or drops a one-way cmd) and returns nil. Control commands
// (IsControl) take their tokens from a semaphore of their own, so that
// application commands never crowd them out.
func (c *Channel) admit(cmd *command.Command) *atomic.Int64 {
	sem, limit, what := &c.sem, c.cfg.MaxHandlers, "commands"
	if IsControl(cmd.Type) {
		sem, limit, what = &c.ctlSem, c.cfg.MaxControl, "control commands"
	}
	if sem.Add(1) > int64(limit) {
		sem.Add(-1)
		if cmd.OneWay {
			// A busy channel may drop events by the thousand: one line per
			// dropLogInterval, saying how many were dropped unlogged.
			if c.dropLog == nil {
				c.dropLog = logthrottle.New(dropLogInterval)
			}
			if ok, skipped := c.dropLog.Allow(time.Now()); ok {
				c.cfg.Logger.Warn("channel: one-way command dropped: too many "+what+" being handled",
					"command", cmd.String(), "also_dropped_since_last_line", skipped)
			}
			return nil
		}
		r := command.Failed(cmd, fmt.Sprintf("busy: %d %s already being handled", limit, what))
		r.Code = codeBusy
		r.RetryAfter = c.cfg.RetryAfter
		c.queueReply(r)
		return nil
	}
	c.addHandling(1)
	return sem
}

// job is a peer command admitted for handling, with the semaphore whose
// token it holds.
type job struct {
	cmd *command.Command
	sem *atomic.Int64
}

// handlerLinger is how long a handler goroutine waits for another command of
// its channel once its own is answered, before it ends: between one and two
// times handlerLinger after its last command (see work).
const handlerLinger = 250 * time.Millisecond

// dispatch hands j to a handler goroutine of the channel waiting for work,
// or starts one. Only the reader calls it, or takeInline in its stead while
// it waits in Recv: one at a time all the same, and while the reader, counted
// in wg, is alive. A goroutine that has handled a command lingers
// (handlerLinger) for the next one: its stack has grown to the depth of the
// handler and of the transport's encoding once, and stays grown, instead of
// growing again on a fresh goroutine for every command
// (measured: a fifth of the CPU of a sequential round trip). The goroutines
// are the channel's own, counted in wg like the handlers they are: Close
// stops and waits for them, a channel in a testing/synctest bubble keeps
// them in the bubble, and there are never more of them than the most
// commands handled at once (MaxHandlers plus MaxControl). An idle channel
// keeps none (decision 0036).
//
// A waiting goroutine waits on its own buffered(1) channel, the only thing
// it waits on: the channel's death and the end of its lingering come to it
// through that channel too (a job without a command), from shutdown and from
// the workerSet's reaper. A select over a shared jobs channel, the channel's
// Done and a linger timer cost a third more per command (decision 0041).
func (c *Channel) dispatch(j job) {
	ws := c.workers.Load()
	if ws == nil {
		ws = &workerSet{}
		c.workers.Store(ws)
	}
	ws.mu.Lock()
	if n := len(ws.idle); n > 0 {
		w := ws.idle[n-1] // the most recent: its stack is the warmest
		ws.idle[n-1] = nil
		ws.idle = ws.idle[:n-1]
		w.used = true
		ws.mu.Unlock()
		w.wake <- j // buffered(1), empty while w is idle: never blocks
		return
	}
	ws.live++
	if ws.live == 1 && !ws.dead {
		if ws.reaper == nil {
			ws.reaper = time.AfterFunc(handlerLinger, func() { c.reap(ws) })
		} else {
			ws.reaper.Reset(handlerLinger)
		}
	}
	ws.mu.Unlock()
	// Not wg.Go: on this hot path a plain go statement saves the
	// allocation of wg.Go's wrapper closure.
	c.wg.Add(1)
	go c.work(j, ws)
}

// workerSet is the handler goroutines of a channel (see dispatch): how many
// there are, and those waiting for a command, the most recent last.
type workerSet struct {
	mu     sync.Mutex
	idle   []*worker
	live   int         // handler goroutines running, idle or not
	dead   bool        // the channel died: none waits any more
	reaper *time.Timer // runs reap every handlerLinger while live > 0
}

// worker is a handler goroutine waiting for work: a job with no command on
// wake tells it to end.
type worker struct {
	wake chan job // buffered(1)
	used bool     // a command came since reap last looked; guarded by workerSet.mu
}

// reap ends the idle handler goroutines that got no command since it last
// ran (they end between one and two times handlerLinger after their last
// command), and runs again later while any are left.
func (c *Channel) reap(ws *workerSet) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.dead {
		return
	}
	kept := ws.idle[:0]
	for _, w := range ws.idle {
		if w.used {
			w.used = false
			kept = append(kept, w)
			continue
		}
		ws.live--
		w.wake <- job{} // idle: its buffer is empty
	}
	clear(ws.idle[len(kept):])
	ws.idle = kept
	if len(ws.idle) == 0 && cap(ws.idle) > 4 {
		ws.idle = nil
	}
	if ws.live > 0 {
		ws.reaper.Reset(handlerLinger)
	}
}

// stopWorkers ends the idle handler goroutines when the channel dies; the
// busy ones end once their command is answered (see park).
func (c *Channel) stopWorkers() {
	ws := c.workers.Load()
	if ws == nil {
		return // a worker started later sees the channel dead when it parks
	}
	ws.mu.Lock()
	ws.dead = true
	if ws.reaper != nil {
		ws.reaper.Stop()
	}
	for _, w := range ws.idle {
		w.wake <- job{}
	}
	ws.live -= len(ws.idle)
	ws.idle = nil
	ws.mu.Unlock()
}

// work is a handler goroutine, counted in wg: it handles j, then the
// commands dispatch hands it, until reap or stopWorkers tells it to end.
func (c *Channel) work(j job, ws *workerSet) {
	defer c.wg.Done()
	w := &worker{wake: make(chan job, 1), used: true}
	for {
		c.handle(j.cmd, j.sem)
		if !c.park(ws, w) {
			return
		}
		if j = <-w.wake; j.cmd == nil {
			return
		}
	}
}

// park puts w among the idle workers of ws, or reports false if the channel
// died (w then ends).
func (c *Channel) park(ws *workerSet, w *worker) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.dead || c.ctx.Err() != nil {
		ws.live--
		return false
	}
	ws.idle = append(ws.idle, w)
	return true
}

// handle runs cmd's handler, on a handler goroutine (see work); it gives
// back its token of sem when done.
func (c *Channel) handle(cmd *command.Command, sem *atomic.Int64) {
	counted := true // cmd counts in handling (InFlight) until its reply is written or queued
	defer func() {
		if counted {
			c.addHandling(-1)
		}
		sem.Add(-1)
	}()
	var start time.Time
	if c.cfg.Observer != nil {
		start = time.Now()
	}
	r := c.run(cmd)
	if o := c.cfg.Observer; o != nil {
		status := command.StatusError
		if r != nil {
			status = r.Status
		}
		o.Handled(cmd.Type, time.Since(start), status)
	}
	if r != nil && !cmd.OneWay {
		// The command stops counting in InFlight once its reply is queued,
		// or this goroutine starts writing it (submit). The reply to the
		// only command being handled is written here when the Conn is
		// free: a handler goroutine's stack has grown through the
		// transport's encoding already (see dispatch), so this saves the
		// hand-off to the writer goroutine. Under load, replies go through
		// the queue, whose writer batches them (Config.Coalesce).
		alone := c.handling.Load() == 1
		counted = false
		_, _ = c.submit(context.Background(), nil, Frame{Reply: r}, alone, true, false)
	}
}

// run calls the handler, turning errors and panics into replies. It returns
// nil when no reply should be sent.
func (c *Channel) run(cmd *command.Command) (r *command.Reply) {
	ctx := c.ctx
	// The handler's context and the channel's copy of its reply (see the
	// default case below) in one allocation: both are needed for nearly
	// every command, and live about as long.
	var box *runBox
	if cmd.Timeout > 0 {
		box = new(runBox)
		box.hc.init(c.ctx, time.Now().Add(cmd.Timeout))
		box.hc.ownedByRun = true
		defer box.hc.cancel()
		ctx = &box.hc
	}
	ctx, span := startHandleSpan(ctx, cmd)
	if span != nil {
		defer func() { endHandleSpan(span, r) }() // after the recover below: sees its reply
	}
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("channel: handler panicked", "command", cmd.String(), "panic", p)
			r = &command.Reply{CommandID: cmd.ID, Type: command.TypeNoReply, Status: command.StatusError,
				Error: fmt.Sprintf("handler for %s panicked: %v", cmd.Type, p), Code: codeInternal}
		}
	}()
	var err error
	if c.h == nil {
		err = fmt.Errorf("%w %q", command.ErrUnknownCommand, cmd.Type)
	} else {
		r, err = c.h.Handle(ctx, cmd)
	}
	gaveUp := err != nil && cmd.Timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded)
	var spare *command.Reply
	if box != nil {
		spare = &box.reply
	}
	return c.answer(cmd, r, err, gaveUp, spare)
}

// answer turns what a handler returned for cmd (r, err) into the reply to
// send, or nil when none is to be sent. gaveUp says the handler failed
// because the sender's deadline (cmd.Timeout) passed. A reply the handler
// built is copied unless it is complete for cmd already (the handler may
// share it between commands; the fields Complete sets are ours): into spare
// when given.
func (c *Channel) answer(cmd *command.Command, r *command.Reply, err error, gaveUp bool, spare *command.Reply) *command.Reply {
	switch {
	case gaveUp && c.ctx.Err() == nil:
		// The handler gave up because the sender's deadline passed: the
		// sender stopped waiting (its deadline came first, as its clock
		// started first), so an answer would only be dropped there. Without
		// this, a NO_REPLY could overtake the sender's own timeout and turn a
		// DeadlineExceeded into a *RemoteError.
		c.cfg.Logger.Debug("channel: handler timed out, no reply sent", "command", cmd.String(), "err", err)
		return nil
	case errors.Is(err, command.ErrUnknownCommand):
		return &command.Reply{CommandID: cmd.ID, Type: command.TypeUnknown, Status: command.StatusError,
			Error: fmt.Sprintf("no handler for command type %q", cmd.Type), Code: codeNotFound}
	case err != nil:
		return &command.Reply{CommandID: cmd.ID, Type: command.TypeNoReply, Status: command.StatusError,
			Error: err.Error(), Code: codeInternal}
	case r == nil:
		r = &command.Reply{Status: command.StatusSucceeded}
	case r.IsCompleteFor(cmd):
		return r // complete already (as built by command.Succeeded or Failed, or by the connector's window)
	case spare != nil:
		*spare = *r
		r = spare
	default:
		cp := *r
		r = &cp
	}
	r.Complete(cmd)
	return r
}

// runBox is what run allocates for a command with a deadline: its handler's
// context, and room for the channel's copy of the reply.
type runBox struct {
	hc    handlerCtx
	reply command.Reply
}

// queueReply hands r to the writer, unless the channel dies first: the
// reader's own replies (busy, malformed) never wait for the Conn.
func (c *Channel) queueReply(r *command.Reply) {
	_, _ = c.submit(context.Background(), nil, Frame{Reply: r}, false, false, false)
}

// Coalescing bounds (Config.Coalesce): a batch holds at most maxBatchFrames
// frames and about maxBatchBytes bytes (estimated by frameSize). Batching
// pays off for small frames, whose per-message costs dominate; a frame of
// maxBatchBytes or more travels alone. The byte bound also keeps a batch far
// below the default frame limit (DefaultMaxFrameBytes), so that the fallback
// of writeBatch is rare.
const (
	maxBatchFrames = 64
	maxBatchBytes  = 64 << 10
)

// keptQueueCap is the largest write queue kept (for reuse) once it drains;
// a larger one, grown by a burst, is dropped, so that an idle channel holds
// no queue memory beyond a few slots.
const keptQueueCap = 4

// writerLinger is how long the writer goroutine waits for more frames once
// its queue is empty, before it ends.
const writerLinger = time.Second

// keptPendingHigh is the most calls pending at once for which the map of
// pending calls is kept once it empties; a map grown larger is dropped.
const keptPendingHigh = 64

// waitRoom waits, with c.wmu held, until wq has room for one more frame;
// it returns with c.wmu held and nil, or with c.wmu released and the reason:
// ctx's error, a *resultTaken when a result came on res (the waiter of the
// Send whose frame this is: its deadline passed, or the channel died), or an
// error wrapping ErrClosed when the channel died.
func (c *Channel) waitRoom(ctx context.Context, res <-chan result) error {
	for {
		// c.ctx ends before shutdown sets wdead: a frame submitted in
		// between (a handler woken by that very end, answering it) must
		// not go out on a Conn that is being closed.
		if c.wdead || c.ctx.Err() != nil {
			c.wmu.Unlock()
			return context.Cause(c.ctx)
		}
		if len(c.wq) < c.cfg.SendQueue {
			return nil
		}
		if c.wroom == nil {
			c.wroom = make(chan struct{})
		}
		room := c.wroom
		c.wmu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case r := <-res:
			return &resultTaken{r}
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		}
		c.wmu.Lock()
	}
}

// enqueue queues f for the writer, starting the writer goroutine if none is
// running. It blocks while Config.SendQueue frames are queued already (the
// peer does not keep up), until ctx is done or the channel dies; see
// waitRoom for the errors.
func (c *Channel) enqueue(ctx context.Context, f Frame) error {
	_, err := c.submit(ctx, nil, f, false, false, false)
	return err
}

// submit is enqueue, or with inline set, writes f on the calling goroutine
// when no one else is writing: then it returns once f is written. Frames
// queued meanwhile by others go to a writer goroutine, started here: the
// caller writes its own frame only. With handled set, f is a reply whose
// command stops counting in c.handling once f is queued or being written
// (under c.wmu, so that InFlight is 0 only once every reply is queued).
// With borrowed set, f is a command whose Payload belongs to the caller: it
// is copied before f is queued, as a queued frame may outlive the call.
// wrote reports that f was written on the calling goroutine (or its write
// failed there): nothing refers to it any more.
func (c *Channel) submit(ctx context.Context, res <-chan result, f Frame, inline, handled, borrowed bool) (wrote bool, err error) {
	if borrowed && !inline {
		f.Command.Payload = slices.Clone(f.Command.Payload)
		borrowed = false
	}
	c.wmu.Lock()
	if err := c.waitRoom(ctx, res); err != nil {
		if handled {
			c.addHandling(-1)
		}
		return false, err
	}
	if handled {
		c.addHandling(-1)
	}
	if borrowed && c.writing { // queued after all
		f.Command.Payload = slices.Clone(f.Command.Payload)
	}
	if c.writing || !inline {
		c.queueLocked(f)
		return false, nil
	}
	c.writing = true
	c.wmu.Unlock()
	buf := writeBufs.Get().(*writeBuf) // f would escape to the heap
	defer writeBufs.Put(buf)
	buf.frames[0] = f
	if !c.writeTaken(buf, 1, nil) {
		c.releaseWriting()
		return true, nil
	}
	// Frames queued meanwhile: write one batch of them too, the load that
	// queued them is likely to go on; what is left then goes to a writer
	// goroutine. The caller's extra work is bounded by one batch.
	c.wmu.Lock()
	if len(c.wq) > 0 && !c.wdead {
		bs := c.batchSender()
		n := c.takeLocked(buf, bs)
		c.wmu.Unlock()
		if !c.writeTaken(buf, n, bs) {
			c.releaseWriting()
			return true, nil
		}
		c.wmu.Lock()
	}
	if len(c.wq) == 0 || c.wdead {
		c.writing = false
		c.wmu.Unlock()
		return true, nil
	}
	if c.wparked {
		c.wparked = false
		c.wwake <- struct{}{}
		c.wmu.Unlock()
		return true, nil
	}
	c.wg.Add(1)
	c.wmu.Unlock()
	go c.writeLoop()
	return true, nil
}

// queueLocked appends f to the write queue and makes sure a writer sends
// it: the one writing now, the parked writer (woken, it then owns
// Conn.Send), or a new writer goroutine. c.wmu must be held, on a live
// channel (not wdead); queueLocked releases it.
func (c *Channel) queueLocked(f Frame) {
	c.wq = append(c.wq, f)
	switch {
	case c.writing:
		c.wmu.Unlock()
	case c.wparked: // hand Conn.Send to the writer waiting for more
		c.writing, c.wparked = true, false
		c.wwake <- struct{}{} // buffered(1), one send per park: never blocks
		c.wmu.Unlock()
	default:
		c.writing = true
		c.wg.Add(1) // before shutdown sets wdead, so before Close waits
		c.wmu.Unlock()
		go c.writeLoop()
	}
}

// releaseWriting gives up the Conn's send side after a failed write.
func (c *Channel) releaseWriting() {
	c.wmu.Lock()
	c.writing = false // the channel is dead (wdead): no writer starts again
	c.wmu.Unlock()
}

// writeBuf holds the frames a writer takes from the queue at once. Writers
// come and go with the traffic, so their buffers are pooled (process-wide:
// plain memory, unlike the channels and timers of a Channel's own pools).
type writeBuf struct {
	frames [maxBatchFrames]Frame
	batch  [maxBatchFrames]*Frame
}

var writeBufs = sync.Pool{New: func() any { return new(writeBuf) }}

// writeLoop is the writer goroutine. It exists only while frames are queued:
// it sends them in order and ends when the queue is empty. With coalescing,
// it sends everything already queued (up to the batch bounds) in one
// transport message.
func (c *Channel) writeLoop() {
	defer c.wg.Done()
	// Conn.Send and SendBatch do not keep the frames: the buffers go back
	// to the pool when the writer ends.
	buf := writeBufs.Get().(*writeBuf)
	defer writeBufs.Put(buf)
	bs := c.batchSender()
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	yielded, lingered := false, false
	for {
		c.wmu.Lock()
		if len(c.wq) == 0 && !c.wdead && bs != nil && !lingered {
			// Before ending, give the goroutines already runnable one turn to
			// queue more (as before a lone frame, below): under load the
			// writer then lives on from batch to batch instead of being
			// started again for each.
			lingered = true
			c.wmu.Unlock()
			runtime.Gosched()
			continue
		}
		lingered = false
		if len(c.wq) == 0 && !c.wdead {
			// Wait writerLinger for more, without owning Conn.Send (a lone
			// Send may still write inline): a channel in use keeps its
			// writer, whose stack has grown to the depth of the transport's
			// encoding once, instead of starting (and growing) one per frame.
			// An idle channel keeps none.
			c.writing = false
			c.wparked = true
			if c.wwake == nil {
				c.wwake = make(chan struct{}, 1)
			}
			wake := c.wwake
			c.wmu.Unlock()
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			} else {
				linger.Reset(writerLinger)
			}
			select {
			case <-wake: // handed Conn.Send, with frames queued
				continue
			case <-linger.C:
			case <-c.ctx.Done():
			}
			c.wmu.Lock()
			if !c.wparked { // handed Conn.Send meanwhile
				c.wmu.Unlock()
				<-wake
				continue
			}
			c.wparked = false
			c.wwake = nil
			// Parked, the writer does not own the queue: a Send writing
			// inline may own it, with frames queued behind its own that it
			// writes next. Only an empty queue may be dropped (dropping a
			// full one lost those frames: a reply lost that way left its
			// Send waiting until its deadline, decision 0043).
			if len(c.wq) == 0 && cap(c.wq) > keptQueueCap {
				c.wq = nil
			}
			c.wmu.Unlock()
			return
		}
		if len(c.wq) == 0 || c.wdead {
			c.writing = false
			c.wparked = false
			if cap(c.wq) > keptQueueCap {
				c.wq = nil
			}
			c.wmu.Unlock()
			return
		}
		if bs != nil && len(c.wq) == 1 && !yielded {
			// Alone in the queue: give the goroutines that are already
			// runnable (callers and handlers about to queue frames) one turn,
			// then take what they queued. On an idle channel nothing is
			// runnable and this costs nothing; under load it turns many
			// one-frame writes into one batch. This is what grpc-go's own
			// writer does before a small flush; it is no timer and never
			// waits for frames that are not coming.
			yielded = true
			c.wmu.Unlock()
			runtime.Gosched()
			continue
		}
		yielded = false
		n := c.takeLocked(buf, bs)
		c.wmu.Unlock()
		if !c.writeTaken(buf, n, bs) {
			c.wmu.Lock()
			c.writing = false // the channel is dead (wdead): no writer starts again
			c.wmu.Unlock()
			return
		}
	}
}

// batchSender returns the Conn as a BatchSender when the channel coalesces.
func (c *Channel) batchSender() BatchSender {
	if !c.cfg.Coalesce {
		return nil
	}
	bs, _ := c.conn.(BatchSender)
	return bs
}

// takeLocked moves the frames at the head of wq into buf: one, or with bs,
// as many as one batch holds. c.wmu must be held and wq not empty.
func (c *Channel) takeLocked(buf *writeBuf, bs BatchSender) int {
	n := 1
	if bs != nil {
		for size := frameSize(&c.wq[0]); n < len(c.wq) && n < maxBatchFrames; n++ {
			s := frameSize(&c.wq[n])
			if size >= maxBatchBytes || size+s > maxBatchBytes {
				break
			}
			size += s
		}
	}
	copy(buf.frames[:n], c.wq[:n])
	rest := copy(c.wq, c.wq[n:])
	clear(c.wq[rest:])
	c.wq = c.wq[:rest]
	if c.wroom != nil {
		close(c.wroom)
		c.wroom = nil
	}
	return n
}

// writeTaken writes the n frames takeLocked put in buf, and clears them. It
// reports whether the writer may go on.
func (c *Channel) writeTaken(buf *writeBuf, n int, bs BatchSender) bool {
	var ok bool
	if n == 1 {
		ok = c.write(&buf.frames[0])
	} else {
		for i := range n {
			buf.batch[i] = &buf.frames[i]
		}
		ok = c.writeBatch(bs, buf.batch[:n])
		clear(buf.batch[:n])
	}
	clear(buf.frames[:n]) // let the GC have what was sent
	return ok
}

// writeBatch sends fs in one transport message. When the Conn refuses the
// batch as a whole for what one of its frames is (too large, malformed), it
// has sent nothing: the frames then go one at a time, so that exactly the
// faulty one fails, as without coalescing. It reports whether the writer may
// go on.
func (c *Channel) writeBatch(bs BatchSender, fs []*Frame) bool {
	err := bs.SendBatch(fs)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrMalformedFrame):
		c.cfg.Logger.Debug("channel: batch refused; sending its frames one at a time", "frames", len(fs), "err", err)
		for _, f := range fs {
			if !c.write(f) {
				return false
			}
		}
		return true
	default:
		c.shutdown(&connError{op: "write", err: err}, nil)
		return false
	}
}

// write sends one frame. A frame over the transport's limit fails alone: a
// command's Send gets ErrFrameTooLarge, a reply turns into a small NO_REPLY
// (413) so that the sender learns why. Any other error kills the channel. It
// reports whether the writer may go on.
func (c *Channel) write(f *Frame) bool {
	err := c.conn.Send(f)
	switch {
	case err == nil:
	case errors.Is(err, ErrFrameTooLarge) && f.Command != nil:
		if !c.deliver(f.Command.ID, result{err: err}) {
			c.cfg.Logger.Warn("channel: command dropped", "command", f.Command.String(), "err", err)
		}
	case errors.Is(err, ErrFrameTooLarge):
		// The handler's answer cannot travel: the sender gets a NO_REPLY
		// (a *RemoteError) naming the problem instead of a timeout.
		small := Frame{Reply: &command.Reply{CommandID: f.Reply.CommandID, Type: command.TypeNoReply,
			Status: command.StatusError, Error: "reply not sent: " + err.Error(), Code: codeTooLarge}}
		if err := c.conn.Send(&small); err != nil {
			c.shutdown(&connError{op: "write", err: err}, nil)
			return false
		}
	default:
		c.shutdown(&connError{op: "write", err: err}, nil)
		return false
	}
	return true
}

// frameSize estimates the encoded size of f from what dominates it, for the
// byte bound of a batch (the transport checks the exact size).
func frameSize(f *Frame) int {
	n := 16
	if c := f.Command; c != nil {
		n += len(c.ID) + len(c.Type) + len(c.Payload) + 16
		for k, v := range c.Metadata {
			n += len(k) + len(v) + 8
		}
	}
	if r := f.Reply; r != nil {
		n += len(r.CommandID) + len(r.Type) + len(r.Payload) + len(r.Error) + 24
	}
	return n
}
