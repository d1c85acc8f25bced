package channel

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Detach returns a context for work that a handler starts and that must
// outlive its channel: it ends at ctx's deadline (for a handler's context, the
// sender's deadline), or when parent ends, but not when ctx ends otherwise (the
// channel dying). Its values are parent's, except that it carries ctx's trace
// span (OpenTelemetry), if valid, so that the work stays in the handler's
// trace. Call cancel once the work is done.
// The connector runs user handlers in such a context, so that work cut off by
// a reconnection completes for the retry to find.
//
// Like a handler's own context, it costs next to nothing until someone asks
// for its Done channel (see handlerCtx); it is otherwise equivalent to
// context.WithDeadline(parent, deadline of ctx).
func Detach(ctx, parent context.Context) (context.Context, context.CancelFunc) {
	d, _ := ctx.Deadline()
	hc := newHandlerCtx(parent, d)
	if span := trace.SpanFromContext(ctx); span.SpanContext().IsValid() {
		return trace.ContextWithSpan(hc, span), hc.cancel
	}
	return hc, hc.cancel
}

// DetachInline is Detach for a handler that does the detached work itself,
// before it returns, and no longer uses ctx, its own context, once it has
// called DetachInline (nor do goroutines it started). The context returned
// ends at ctx's deadline or when parent ends, not when the channel dies,
// and at the latest when the handler returns: the channel then ends it, as
// it ends the handler's own. Its values are parent's, and it keeps ctx's
// trace span. It may be ctx itself, turned into a context of parent (no
// allocation), and cancel may then do nothing until the handler returns.
// The connector runs user handlers in such a context (Detach costs two
// allocations per command).
func DetachInline(ctx, parent context.Context) (context.Context, context.CancelFunc) {
	if hc, ok := ctx.(*handlerCtx); ok && hc.reparent(parent) {
		return hc, noCancel
	}
	return Detach(ctx, parent)
}

// noCancel is the cancel func of a context the channel ends itself.
func noCancel() {}

// reparent turns hc, a handler's own context (made by run), into a context
// of parent, keeping its deadline (or parent's, if earlier), unless it was
// armed or cancelled already. See DetachInline.
func (c *handlerCtx) reparent(parent context.Context) bool {
	if !c.ownedByRun {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed.Load() != nil || c.cancelled {
		return false
	}
	c.parent = parent
	if pd, ok := parent.Deadline(); ok && (c.deadline.IsZero() || pd.Before(c.deadline)) {
		c.deadline = pd
	}
	return true
}

// handlerCtx is the context of one handler run: it ends at the sender's
// deadline, when the channel dies, or when the run is over (cancel), like the
// context.WithDeadline it replaces. It is built for the hot path: until
// someone asks for its Done channel, it is one small allocation and a clock
// read, with no timer and no registration with the channel's context; most
// handlers never ask. The first call to Done (deriving a context from it
// makes one) creates that context.WithDeadline, and from then on the
// handlerCtx is only a front for it.
//
// One difference remains, in a corner: context.Cause of a handlerCtx never
// asked for Done, which ended by its deadline (or by cancel) and whose parent
// ended afterwards, reports the parent's cause, where a context.WithDeadline
// would keep context.DeadlineExceeded (or context.Canceled); Err is the same.
//
// And one on purpose: a Channel's Send given a handlerCtx not armed yet waits
// for its deadline and its parent's end directly, without arming it (see
// Channel.send). Such a Send is therefore not cut short by cancel, that is
// by the handler's return; only a goroutine that outlives its handler and
// keeps using the handler's context could tell, and its Send still ends at
// the sender's deadline or with the channel.
type handlerCtx struct {
	parent   context.Context
	deadline time.Time // zero: none

	armed      atomic.Pointer[armedCtx] // the context.WithDeadline, once Done was asked for
	mu         sync.Mutex               // serialises arming and cancel
	cancelled  bool                     // cancel came before arming; guarded by mu
	ownedByRun bool                     // the handler's own context, cancelled by run: DetachInline may reparent it
}

// armedCtx is the standard context a handlerCtx delegates to once armed.
type armedCtx struct {
	context.Context
	cancel context.CancelFunc
}

var _ context.Context = (*handlerCtx)(nil)

// newHandlerCtx returns a context ending with parent or at d (if not zero),
// whichever comes first; call cancel once the handler has returned.
func newHandlerCtx(parent context.Context, d time.Time) *handlerCtx {
	hc := &handlerCtx{}
	hc.init(parent, d)
	return hc
}

// init makes hc, a zero handlerCtx, a context ending with parent or at d (if
// not zero), whichever comes first (newHandlerCtx in place).
func (c *handlerCtx) init(parent context.Context, d time.Time) {
	if pd, ok := parent.Deadline(); ok && (d.IsZero() || pd.Before(d)) {
		d = pd
	}
	c.parent, c.deadline = parent, d
}

// parentDone returns the Done channel of the context hc ends with, its
// deadline apart: the parent's (see Channel.send).
func (c *handlerCtx) parentDone() <-chan struct{} {
	c.mu.Lock()
	p := c.parent
	c.mu.Unlock()
	return p.Done()
}

// Deadline returns the earlier of the sender's deadline and the parent's.
func (c *handlerCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

// Done returns a channel closed when the context ends. The first call arms
// the context: a timer, and a link to the parent.
func (c *handlerCtx) Done() <-chan struct{} { return c.arm().Done() }

// Err returns nil while the context runs, then context.DeadlineExceeded,
// context.Canceled, or the parent's error.
func (c *handlerCtx) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.Err()
	}
	c.mu.Lock()
	cancelled := c.cancelled
	c.mu.Unlock()
	switch err := c.parent.Err(); {
	case cancelled:
		return context.Canceled
	case err != nil:
		return err
	case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
		return context.DeadlineExceeded
	}
	return nil
}

// Value returns the value for key: the parent's, or once armed, the armed
// context's (which makes context.Cause exact).
func (c *handlerCtx) Value(key any) any {
	if a := c.armed.Load(); a != nil {
		return a.Value(key)
	}
	return c.parent.Value(key)
}

// cancel ends the context with context.Canceled, if it has not ended yet,
// and releases its timer and its link to the parent.
func (c *handlerCtx) cancel() {
	if a := c.armed.Load(); a != nil {
		a.cancel()
		return
	}
	c.mu.Lock()
	a := c.armed.Load()
	if a == nil {
		c.cancelled = true
	}
	c.mu.Unlock()
	if a != nil {
		a.cancel()
	}
}

// arm returns the standard context the handlerCtx stands for, creating it
// on first use. A context that has already ended (by cancel, its deadline or
// its parent) is born ended, with the same error.
func (c *handlerCtx) arm() *armedCtx {
	if a := c.armed.Load(); a != nil {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a
	}
	a := &armedCtx{}
	if c.deadline.IsZero() {
		a.Context, a.cancel = context.WithCancel(c.parent)
	} else {
		a.Context, a.cancel = context.WithDeadline(c.parent, c.deadline)
	}
	if c.cancelled {
		a.cancel()
	}
	c.armed.Store(a)
	return a
}
