package channel

import (
	"context"
	"errors"
	"fmt"
	"runtime"
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
	ch      chan result
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

// The pools of a Channel (resultChans, timers) are per Channel, not per
// process: channels and timers made inside a testing/synctest bubble must
// never be used outside it, and a Channel lives in exactly one bubble.
//
// resultChans recycles the buffered(1) channels on which pending calls wait,
// so that Send does not allocate one per call. A channel goes back to the pool
// only once nobody can send on it any more (see Channel.await).
func newResultChan() any { return make(chan result, 1) }

// timers recycles the timers of Sends whose context has no deadline. Since Go
// 1.23, Stop and Reset guarantee that a recycled timer delivers no stale value.
func newTimer() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// Channel runs the command/reply semantics over a Conn: it correlates replies
// with commands, applies deadlines, bounds the commands in flight, runs the
// peer's commands through a Handler off the read loop (control commands, see
// IsControl, within bounds of their own), and fails every pending
// call the moment the connection ends. Both twins (embedded and gRPC) share
// this one implementation, so they cannot drift.
//
// A Channel is safe for concurrent use. It owns three kinds of goroutine: one
// reader (the only caller of Conn.Recv), one writer (the only caller of
// Conn.Send and BatchSender.SendBatch) and up to Config.MaxHandlers handler
// goroutines, plus up to Config.MaxControl for control commands. Close stops
// them all and waits for them.
type Channel struct {
	conn Conn
	h    command.Handler
	cfg  Config

	ctx    context.Context // cancelled (with the cause) when the channel dies
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup        // reader, writer and handler goroutines
	sendq  chan *command.Command // outgoing commands, to the writer
	replyq chan *command.Reply   // outgoing replies, to the writer
	sem    chan struct{}         // one token per running handler of an application command
	ctlSem chan struct{}         // one token per running handler of a control command

	mu      sync.Mutex      // protects pending and pendCtl
	pending map[string]call // command id → call with a buffered(1) result channel; nil once dead
	pendCtl int             // how many of pending are control commands

	handling  atomic.Int64 // peer commands being handled
	dieOnce   sync.Once    // guards the effects of shutdown
	closeOnce sync.Once
	closed    chan struct{} // closed once Close has finished waiting

	dropLog *logthrottle.Throttle // "one-way command dropped" lines

	resultChans sync.Pool // of chan result; see newResultChan
	timers      sync.Pool // of *time.Timer; see newTimer
}

// New starts a Channel over conn. Commands from the peer are answered by h; a
// nil h answers every command with UNKNOWN. New takes ownership of conn: it is
// closed when the Channel closes. Config values that are zero (or negative)
// mean their default; see Config.Validate to reject negative values early.
func New(conn Conn, h command.Handler, cfg Config) *Channel {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Channel{
		conn:    conn,
		h:       h,
		cfg:     cfg,
		ctx:     ctx,
		cancel:  cancel,
		sendq:   make(chan *command.Command, cfg.SendQueue),
		replyq:  make(chan *command.Reply, cfg.SendQueue),
		sem:     make(chan struct{}, cfg.MaxHandlers),
		ctlSem:  make(chan struct{}, cfg.MaxControl),
		pending: make(map[string]call),
		closed:  make(chan struct{}),
		dropLog: logthrottle.New(dropLogInterval),
	}
	c.resultChans.New = newResultChan
	c.timers.New = newTimer
	c.wg.Go(c.readLoop)
	c.wg.Go(c.writeLoop)
	return c
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
	n := len(c.pending)
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
	o := c.cfg.Observer
	if o == nil {
		return c.send(ctx, cmd)
	}
	start := time.Now()
	reply, err := c.send(ctx, cmd)
	var t command.Type
	if cmd != nil {
		t = cmd.Type
	}
	o.Sent(t, time.Since(start), err)
	return reply, err
}

func (c *Channel) send(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	if err := checkCommand(cmd); err != nil {
		return nil, fmt.Errorf("channel: send: %w", err)
	}
	if cmd.OneWay {
		return nil, c.Notify(ctx, cmd)
	}
	// The deadline: ctx's, or Config.DefaultTimeout from now on a pooled timer
	// (cheaper than a context per call).
	var (
		timeout time.Duration
		timer   *time.Timer
		expired <-chan time.Time
	)
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	} else {
		timeout = c.cfg.DefaultTimeout
		timer = c.timers.Get().(*time.Timer)
		timer.Reset(timeout)
		expired = timer.C
		defer func() {
			timer.Stop()
			c.timers.Put(timer)
		}()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("channel: send %s: %w", cmd, err)
	}

	out := cmd.Clone()
	if out.ID == "" {
		out.ID = command.NewID()
	}
	out.Timeout = max(timeout, time.Millisecond)
	injectTrace(ctx, out)

	ch := c.resultChans.Get().(chan result)
	control := IsControl(out.Type)
	c.mu.Lock()
	switch {
	case c.ctx.Err() != nil:
		// Checked under mu: shutdown cancels ctx before it takes pending, so a
		// call registered after that would never be failed.
		c.mu.Unlock()
		c.resultChans.Put(ch)
		return nil, fmt.Errorf("channel: send %s: %w", out, context.Cause(c.ctx))
	case c.pending[out.ID].ch != nil:
		c.mu.Unlock()
		c.resultChans.Put(ch)
		return nil, fmt.Errorf("channel: send %s: %w", out, ErrDuplicateID)
	case control && c.pendCtl >= c.cfg.MaxControl,
		!control && len(c.pending)-c.pendCtl >= c.cfg.MaxInFlight:
		c.mu.Unlock()
		c.resultChans.Put(ch)
		return nil, fmt.Errorf("channel: send %s: %w", out, &BusyError{RetryAfter: c.cfg.RetryAfter})
	}
	c.pending[out.ID] = call{ch: ch, control: control}
	if control {
		c.pendCtl++
	}
	c.mu.Unlock()

	select {
	case c.sendq <- out:
	case r := <-ch: // the channel died (shutdown fails every pending call)
		c.resultChans.Put(ch)
		return c.finish(out, r)
	case <-ctx.Done():
		return c.giveUp(out, ch, ctx.Err())
	case <-expired:
		return c.giveUp(out, ch, context.DeadlineExceeded)
	}

	select {
	case r := <-ch:
		c.resultChans.Put(ch)
		return c.finish(out, r)
	case <-ctx.Done():
		return c.giveUp(out, ch, ctx.Err())
	case <-expired:
		return c.giveUp(out, ch, context.DeadlineExceeded)
	}
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
	if r.err != nil {
		return nil, fmt.Errorf("channel: send %s: %w", cmd, r.err)
	}
	return classify(cmd, r.reply)
}

// giveUp ends a call whose caller stopped waiting. If the result is already on
// its way (a reply or the channel's death raced with the deadline), that result
// wins; otherwise the pending entry is dropped, and a late reply is ignored.
func (c *Channel) giveUp(cmd *command.Command, ch chan result, err error) (*command.Reply, error) {
	c.mu.Lock()
	p := c.pending[cmd.ID]
	mine := p.ch == ch
	if mine {
		c.removeLocked(cmd.ID, p)
	}
	c.mu.Unlock()
	if !mine {
		// deliver or shutdown took the entry and sends exactly once, promptly.
		r := <-ch
		c.resultChans.Put(ch)
		return c.finish(cmd, r)
	}
	c.resultChans.Put(ch)
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
		out.ID = command.NewID()
	}
	injectTrace(ctx, out)
	select {
	case c.sendq <- out:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("channel: notify %s: %w", out, ctx.Err())
	case <-c.ctx.Done():
		return fmt.Errorf("channel: notify %s: %w", out, context.Cause(c.ctx))
	}
}

// deliver hands r to the caller waiting for id, if it still waits.
func (c *Channel) deliver(id string, r result) bool {
	c.mu.Lock()
	p, ok := c.pending[id]
	if ok {
		c.removeLocked(id, p)
	}
	c.mu.Unlock()
	if !ok {
		return false
	}
	p.ch <- r // buffered(1), and only one sender ever holds ch: never blocks
	return true
}

// removeLocked drops the pending call p of id. c.mu must be held.
func (c *Channel) removeLocked(id string, p call) {
	delete(c.pending, id)
	if p.control {
		c.pendCtl--
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
	c.closeOnce.Do(func() {
		c.wg.Wait()
		close(c.closed)
	})
	<-c.closed
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
		if cw, ok := c.conn.(CloseWithErrorer); ok && tell != nil {
			_ = cw.CloseWithError(tell)
		} else {
			_ = c.conn.Close()
		}
		c.mu.Lock()
		pending := c.pending
		c.pending = nil
		c.pendCtl = 0
		c.mu.Unlock()
		for _, p := range pending {
			p.ch <- result{err: cause} // buffered(1), never blocks
		}
	})
}

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
			if !c.deliver(f.Reply.CommandID, result{reply: f.Reply}) {
				c.cfg.Logger.Debug("channel: late or unknown reply ignored", "commandId", f.Reply.CommandID, "type", f.Reply.Type)
			}
			continue
		}
		c.dispatch(f.Command)
	}
}

// dispatch runs cmd's handler on its own goroutine, or answers busy at once.
// Control commands (IsControl) take their tokens from a semaphore of their
// own, so that application commands never crowd them out.
func (c *Channel) dispatch(cmd *command.Command) {
	sem, limit, what := c.sem, c.cfg.MaxHandlers, "commands"
	if IsControl(cmd.Type) {
		sem, limit, what = c.ctlSem, c.cfg.MaxControl, "control commands"
	}
	select {
	case sem <- struct{}{}:
	default:
		if cmd.OneWay {
			// A busy channel may drop events by the thousand: one line per
			// dropLogInterval, saying how many were dropped unlogged.
			if ok, skipped := c.dropLog.Allow(time.Now()); ok {
				c.cfg.Logger.Warn("channel: one-way command dropped: too many "+what+" being handled",
					"command", cmd.String(), "also_dropped_since_last_line", skipped)
			}
			return
		}
		r := command.Failed(cmd, fmt.Sprintf("busy: %d %s already being handled", limit, what))
		r.Code = codeBusy
		r.RetryAfter = c.cfg.RetryAfter
		c.queueReply(r)
		return
	}
	c.handling.Add(1)
	// Not wg.Go: on this hot path a plain go statement saves the allocation
	// of wg.Go's wrapper closure.
	c.wg.Add(1)
	go c.handle(cmd, sem)
}

// handle runs on its own goroutine, one per command being handled; it gives
// back its token of sem when done.
func (c *Channel) handle(cmd *command.Command, sem chan struct{}) {
	defer func() {
		c.handling.Add(-1)
		<-sem
		c.wg.Done()
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
		c.queueReply(r)
	}
}

// run calls the handler, turning errors and panics into replies. It returns
// nil when no reply should be sent.
func (c *Channel) run(cmd *command.Command) (r *command.Reply) {
	ctx := c.ctx
	if cmd.Timeout > 0 {
		hc := newHandlerCtx(c.ctx, time.Now().Add(cmd.Timeout))
		defer hc.cancel()
		ctx = hc
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
	switch {
	case err != nil && cmd.Timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && c.ctx.Err() == nil:
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
	case r.CommandID == cmd.ID && r.Type != "" && r.Status != command.StatusUnspecified:
		return r // complete already (as built by command.Succeeded or Failed)
	default:
		cp := *r // the handler keeps its reply; the fields below are ours to set
		r = &cp
	}
	r.CommandID = cmd.ID
	if r.Type == "" {
		r.Type = cmd.Type
	}
	if r.Status == command.StatusUnspecified {
		r.Status = command.StatusSucceeded
		if r.Error != "" {
			r.Status = command.StatusError
		}
	}
	return r
}

// queueReply hands r to the writer, unless the channel dies first.
func (c *Channel) queueReply(r *command.Reply) {
	select {
	case c.replyq <- r:
	case <-c.ctx.Done():
	}
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

// writeLoop is the writer: the only caller of Conn.Send and SendBatch. With
// coalescing, after taking one frame it takes whatever else is already queued
// (never waiting for more) and sends it all at once.
func (c *Channel) writeLoop() {
	bs, _ := c.conn.(BatchSender)
	if !c.cfg.Coalesce {
		bs = nil
	}
	// Reused: Conn.Send and SendBatch do not keep the frames.
	var (
		frames [maxBatchFrames]Frame
		batch  [maxBatchFrames]*Frame
		carry  Frame // taken, but over the byte bound of the last batch
	)
	for i := range frames {
		batch[i] = &frames[i]
	}
	for {
		if carry != (Frame{}) {
			frames[0], carry = carry, Frame{}
		} else {
			select {
			case <-c.ctx.Done():
				return
			case r := <-c.replyq:
				frames[0] = Frame{Reply: r}
			case cmd := <-c.sendq:
				frames[0] = Frame{Command: cmd}
			}
		}
		n := 1
		if bs != nil {
			yielded := false
			for size := frameSize(&frames[0]); n < maxBatchFrames && size < maxBatchBytes; n++ {
				f, ok := c.poll()
				if !ok && !yielded {
					// Alone in the queue: give the goroutines that are already
					// runnable (callers and handlers about to queue frames) one
					// turn, then take what they queued. On an idle channel
					// nothing is runnable and this costs nothing; under load it
					// turns many one-frame writes into one batch. This is what
					// grpc-go's own writer does before a small flush; it is no
					// timer and never waits for frames that are not coming.
					yielded = true
					runtime.Gosched()
					f, ok = c.poll()
				}
				if !ok {
					break
				}
				s := frameSize(&f)
				if size+s > maxBatchBytes {
					carry = f
					break
				}
				frames[n], size = f, size+s
			}
		}
		var ok bool
		if n == 1 {
			ok = c.write(&frames[0])
		} else {
			ok = c.writeBatch(bs, batch[:n])
		}
		clear(frames[:n]) // let the GC have what was sent
		if !ok {
			return
		}
	}
}

// poll takes a frame already queued for the writer, without waiting.
func (c *Channel) poll() (Frame, bool) {
	select {
	case r := <-c.replyq:
		return Frame{Reply: r}, true
	case cmd := <-c.sendq:
		return Frame{Command: cmd}, true
	default:
		return Frame{}, false
	}
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
