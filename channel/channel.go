package channel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/command"
)

// CloseWithErrorer is implemented by Conns that can tell the peer why they are
// closing (the gRPC twin ends the stream with a status carrying err). Channel
// uses it when it closes a Conn because of a protocol error.
type CloseWithErrorer interface {
	CloseWithError(err error) error
}

// result is what a pending Send receives: a reply or an error.
type result struct {
	reply *command.Reply
	err   error
}

// Channel runs the command/reply semantics over a Conn: it correlates replies
// with commands, applies deadlines, bounds the commands in flight, runs the
// peer's commands through a Handler off the read loop, and fails every pending
// call the moment the connection ends. Both twins (embedded and gRPC) share
// this one implementation, so they cannot drift.
//
// A Channel is safe for concurrent use. It owns three kinds of goroutine: one
// reader (the only caller of Conn.Recv), one writer (the only caller of
// Conn.Send) and up to Config.MaxHandlers handler goroutines. Close stops them
// all and waits for them.
type Channel struct {
	conn Conn
	h    command.Handler
	cfg  Config

	ctx    context.Context // cancelled (with the cause) when the channel dies
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	sendq  chan *command.Command // outgoing commands, to the writer
	replyq chan *command.Reply   // outgoing replies, to the writer
	sem    chan struct{}         // one token per running handler

	mu      sync.Mutex             // protects pending
	pending map[string]chan result // command id → buffered(1) result channel

	handling  atomic.Int64 // peer commands being handled
	closeOnce sync.Once
	closed    chan struct{} // closed once Close has finished waiting
}

// New starts a Channel over conn. Commands from the peer are answered by h; a
// nil h answers every command with UNKNOWN. New takes ownership of conn: it is
// closed when the Channel closes.
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
		pending: make(map[string]chan result),
		closed:  make(chan struct{}),
	}
	c.wg.Go(c.readLoop)
	c.wg.Go(c.writeLoop)
	return c
}

// Done returns a channel that is closed when the Channel dies: closed locally,
// closed by the peer, or broken.
func (c *Channel) Done() <-chan struct{} { return c.ctx.Done() }

// Err returns why the channel died (an error wrapping ErrClosed for a normal
// close), or nil while it is alive.
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
// deadline, Config.DefaultTimeout). An empty cmd.ID gets a fresh one.
//
// A reply with StatusError is returned as a reply, not an error. Errors:
// ctx's error (context.DeadlineExceeded on timeout) wrapped; an error wrapping
// ErrClosed if the channel closes first; *UnknownCommandError when the peer
// has no handler for the type; *RemoteError when the peer's handler failed;
// *BusyError when too many commands are in flight here or at the peer;
// ErrDuplicateID; ErrFrameTooLarge.
func (c *Channel) Send(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	start := time.Now()
	reply, err := c.send(ctx, cmd)
	if o := c.cfg.Observer; o != nil {
		o.Sent(cmd.Type, time.Since(start), err)
	}
	return reply, err
}

func (c *Channel) send(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
	if cmd == nil || cmd.Type == "" {
		return nil, errors.New("channel: send needs a command with a type")
	}
	if cmd.OneWay {
		return nil, c.Notify(ctx, cmd)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.DefaultTimeout)
		defer cancel()
	}
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("send %s: %w", cmd, err)
	}
	out := cmd.Clone()
	if out.ID == "" {
		out.ID = command.NewID()
	}
	if dl, ok := ctx.Deadline(); ok {
		out.Timeout = max(time.Until(dl), time.Millisecond)
	}

	ch := make(chan result, 1)
	c.mu.Lock()
	switch {
	case len(c.pending) >= c.cfg.MaxInFlight:
		c.mu.Unlock()
		return nil, fmt.Errorf("send %s: %w", out, &BusyError{RetryAfter: c.cfg.RetryAfter})
	case c.pending[out.ID] != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("send %s: %w", out, ErrDuplicateID)
	}
	c.pending[out.ID] = ch
	c.mu.Unlock()

	select {
	case c.sendq <- out:
	case <-ctx.Done():
		c.forget(out.ID)
		return nil, fmt.Errorf("send %s: %w", out, ctx.Err())
	case <-c.ctx.Done():
		c.forget(out.ID)
		return nil, fmt.Errorf("send %s: %w", out, context.Cause(c.ctx))
	}

	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("send %s: %w", out, r.err)
		}
		return classify(out, r.reply)
	case <-ctx.Done():
		c.forget(out.ID)
		return nil, fmt.Errorf("send %s: no reply: %w", out, ctx.Err())
	}
}

// classify turns the reserved reply kinds into typed errors.
func classify(cmd *command.Command, r *command.Reply) (*command.Reply, error) {
	switch {
	case r.Type == command.TypeUnknown:
		return nil, &UnknownCommandError{CommandID: cmd.ID, Type: cmd.Type, Message: r.Error}
	case r.Type == command.TypeNoReply:
		return nil, &RemoteError{CommandID: cmd.ID, Type: cmd.Type, Message: r.Error, Reply: r}
	case r.Status == command.StatusError && r.Code == 429 && r.RetryAfter > 0:
		return nil, fmt.Errorf("send %s: %w", cmd, &BusyError{RetryAfter: r.RetryAfter, Remote: true})
	}
	return r, nil
}

// Notify sends a one-way command: the peer runs its handler and sends no
// reply. Notify returns once the command is queued for writing.
func (c *Channel) Notify(ctx context.Context, cmd *command.Command) error {
	if err := c.Err(); err != nil {
		return fmt.Errorf("notify %s: %w", cmd, err)
	}
	out := cmd.Clone()
	out.OneWay = true
	if out.ID == "" {
		out.ID = command.NewID()
	}
	select {
	case c.sendq <- out:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("notify %s: %w", out, ctx.Err())
	case <-c.ctx.Done():
		return fmt.Errorf("notify %s: %w", out, context.Cause(c.ctx))
	}
}

// forget drops a pending call whose caller gave up; a late reply is then
// ignored.
func (c *Channel) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// deliver hands r to the caller waiting for id, if it still waits.
func (c *Channel) deliver(id string, r result) bool {
	c.mu.Lock()
	ch := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- r // buffered(1), never blocks
	return true
}

// Close closes the channel: pending calls fail with ErrClosed, handlers'
// contexts are cancelled, and Close waits for every goroutine of the channel.
// It is idempotent and returns nil.
func (c *Channel) Close() error {
	c.shutdown(ErrClosed, nil)
	c.closeOnce.Do(func() {
		c.wg.Wait()
		close(c.closed)
	})
	<-c.closed
	return nil
}

// shutdown kills the channel with cause: the first cause wins. tell, if not
// nil, is passed to the peer where the transport allows.
func (c *Channel) shutdown(cause, tell error) {
	if c.ctx.Err() != nil {
		return
	}
	c.cancel(cause)
	if cw, ok := c.conn.(CloseWithErrorer); ok && tell != nil {
		_ = cw.CloseWithError(tell)
	} else {
		_ = c.conn.Close()
	}
	cause = context.Cause(c.ctx)
	c.mu.Lock()
	pending := c.pending
	c.pending = make(map[string]chan result)
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: cause}
	}
}

func (c *Channel) readLoop() {
	for {
		f, err := c.conn.Recv()
		if err != nil {
			if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrMalformedFrame) {
				err = fmt.Errorf("%w: %w", ErrClosed, err)
			}
			c.cfg.Logger.Debug("channel: read loop ends", "err", err)
			c.shutdown(err, nil)
			return
		}
		if err := f.Validate(); err != nil {
			if f != nil && f.Command != nil && f.Command.ID != "" && f.Reply == nil {
				// A command we can answer: tell the sender exactly what is wrong.
				r := command.Failed(f.Command, err.Error())
				r.Code = 400
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
func (c *Channel) dispatch(cmd *command.Command) {
	select {
	case c.sem <- struct{}{}:
	default:
		if !cmd.OneWay {
			r := command.Failed(cmd, fmt.Sprintf("busy: %d commands already being handled", c.cfg.MaxHandlers))
			r.Code = 429
			r.RetryAfter = c.cfg.RetryAfter
			c.queueReply(r)
		}
		return
	}
	c.handling.Add(1)
	c.wg.Go(func() {
		defer func() {
			c.handling.Add(-1)
			<-c.sem
		}()
		start := time.Now()
		r := c.run(cmd)
		if o := c.cfg.Observer; o != nil {
			o.Handled(cmd.Type, time.Since(start), r.Status)
		}
		if !cmd.OneWay {
			c.queueReply(r)
		}
	})
}

// run calls the handler, turning errors and panics into replies.
func (c *Channel) run(cmd *command.Command) (r *command.Reply) {
	ctx := c.ctx
	if cmd.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmd.Timeout)
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("channel: handler panicked", "command", cmd.String(), "panic", p)
			r = &command.Reply{CommandID: cmd.ID, Type: command.TypeNoReply, Status: command.StatusError,
				Error: fmt.Sprintf("handler for %s panicked: %v", cmd.Type, p), Code: 500}
		}
	}()
	var err error
	if c.h == nil {
		err = fmt.Errorf("%w %q", command.ErrUnknownCommand, cmd.Type)
	} else {
		r, err = c.h.Handle(ctx, cmd)
	}
	switch {
	case errors.Is(err, command.ErrUnknownCommand):
		return &command.Reply{CommandID: cmd.ID, Type: command.TypeUnknown, Status: command.StatusError,
			Error: fmt.Sprintf("no handler for command type %q", cmd.Type), Code: 404}
	case err != nil:
		return &command.Reply{CommandID: cmd.ID, Type: command.TypeNoReply, Status: command.StatusError,
			Error: err.Error(), Code: 500}
	case r == nil:
		r = &command.Reply{Status: command.StatusSucceeded}
	default:
		r = r.Clone()
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

func (c *Channel) queueReply(r *command.Reply) {
	select {
	case c.replyq <- r:
	case <-c.ctx.Done():
	}
}

func (c *Channel) writeLoop() {
	for {
		var f Frame
		select {
		case <-c.ctx.Done():
			return
		case r := <-c.replyq:
			f.Reply = r
		case cmd := <-c.sendq:
			f.Command = cmd
		}
		err := c.conn.Send(&f)
		switch {
		case err == nil:
		case errors.Is(err, ErrFrameTooLarge) && f.Command != nil:
			c.deliver(f.Command.ID, result{err: err})
		case errors.Is(err, ErrFrameTooLarge):
			small := &command.Reply{CommandID: f.Reply.CommandID, Type: f.Reply.Type, Status: command.StatusError,
				Error: err.Error(), Code: 413}
			if err := c.conn.Send(&Frame{Reply: small}); err != nil {
				c.shutdown(fmt.Errorf("%w: write: %w", ErrClosed, err), nil)
				return
			}
		default:
			if !errors.Is(err, ErrClosed) {
				err = fmt.Errorf("%w: write: %w", ErrClosed, err)
			}
			c.shutdown(err, nil)
			return
		}
	}
}
