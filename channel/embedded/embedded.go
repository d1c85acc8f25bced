// Package embedded is the in-process twin of the channel transport: Conns,
// Listeners and Dialers that move frames between goroutines of one process,
// with no network. A controller and its connectors embedded in one program
// talk through it exactly as they would over gRPC, because both twins carry
// the same channel.Channel semantics and pass the same conformance suite
// (channel/channeltest).
//
// Every frame is deep-copied on Send, so the two sides never share memory (as
// they could not over a network), and frames larger than the limit fail with
// channel.ErrFrameTooLarge, as they would over gRPC.
//
// A Conn is a channel.InlineReceiver: while the receiving Channel's reader
// waits with nothing queued, a frame is handed to that Channel on the
// sending goroutine (a reply completes its call, a command goes to a handler
// goroutine), which saves a goroutine switch per frame (decision 0043).
//
// # Usage
//
//	lis := embedded.Listen()                          // controller side: a channel.Listener
//	conn, err := lis.Dial(ctx)                        // connector side: lis is a channel.Dialer too
//	a, b := embedded.Pipe()                           // or a bare connected pair
package embedded

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// queueLen is how many frames may wait in one direction before Send blocks
// (back-pressure, like a full TCP window).
const queueLen = 64

// Option configures a pipe or listener.
type Option interface{ apply(*options) }

type options struct {
	maxFrameBytes int
	noInline      bool // every frame goes to Recv: ReceiveInline registers nothing (withoutInline)
}

// withoutInline makes the pipe leave every frame to the receiver's Recv,
// as a network twin does: ReceiveInline registers nothing. Tests use it to
// keep the reader's path checked over the embedded twin, whose pipes
// otherwise hand frames over on the sending goroutine (decision 0043).
func withoutInline() Option { return optionFunc(func(o *options) { o.noInline = true }) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithMaxFrameBytes sets the largest frame Send accepts (default
// channel.DefaultMaxFrameBytes, as the gRPC twin; n <= 0 means the default).
// The size counted approximates an encoded frame: payload, ids, type, error
// text and metadata, plus a small fixed overhead.
func WithMaxFrameBytes(n int) Option { return optionFunc(func(o *options) { o.maxFrameBytes = n }) }

func buildOptions(opts []Option) options {
	o := options{maxFrameBytes: channel.DefaultMaxFrameBytes}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.maxFrameBytes <= 0 {
		o.maxFrameBytes = channel.DefaultMaxFrameBytes
	}
	return o
}

// end is the state of one end of a pipe, shared with the other end.
type end struct {
	once sync.Once
	done atomic.Bool // set by this end's Close
	in   *queue      // frames to this end
	out  *queue      // frames from this end
}

// close marks the end closed and wakes whoever waits on either direction:
// both look at the flags again.
func (e *end) close() {
	e.once.Do(func() {
		e.done.Store(true)
		e.in.wakeAll()
		e.out.wakeAll()
	})
}

// queue is one direction of a pipe: the frames sent and not yet received,
// at most queueLen of them. A receiver and a sender that have to wait do so
// on a sync.Cond of the queue, which either end's Close also wakes: a wait
// is one park and one wake-up, where a select over the frames and the two
// closed signals locks and queues on three channels (measured: a third of
// the twin's share of a round trip). The slice grows on demand, and is
// dropped when it drains after growing beyond keptQueue: an idle pipe holds
// no queue memory beyond that.
type queue struct {
	mu       sync.Mutex
	frames   []*channel.Frame // frames[head:] are queued, oldest first
	head     int
	readable sync.Cond // a frame was queued, or an end closed
	writable sync.Cond // a frame was taken, or an end closed
	readers  int       // receivers waiting on readable
	writers  int       // senders waiting on writable

	// take is the receiving Channel's frame path (channel.InlineReceiver),
	// nil until it registers: a frame sent while the receiver waits with
	// nothing queued is offered to it on the sending goroutine, under mu.
	take func(*channel.Frame) bool
}

// keptQueue is the most slots a drained queue keeps for reuse.
const keptQueue = 8

func newQueue() *queue {
	q := &queue{}
	q.readable.L = &q.mu
	q.writable.L = &q.mu
	return q
}

// wakeAll wakes every waiter of q, after an end closed.
func (q *queue) wakeAll() {
	q.mu.Lock()
	q.readable.Broadcast()
	q.writable.Broadcast()
	q.mu.Unlock()
}

// len returns how many frames are queued; q.mu must be held.
func (q *queue) len() int { return len(q.frames) - q.head }

// pop takes the oldest frame; q.mu must be held and q not empty.
func (q *queue) pop() *channel.Frame {
	f := q.frames[q.head]
	q.frames[q.head] = nil
	q.head++
	if q.head == len(q.frames) {
		q.head = 0
		if cap(q.frames) > keptQueue {
			q.frames = nil
		} else {
			q.frames = q.frames[:0]
		}
	}
	return f
}

// conn is one end of a pipe. Each direction is a bounded queue of frames;
// each end has its own closed flag, so that closing one end can fail its own
// calls at once while the other end still drains what was sent before (as a
// network peer reads the data that preceded an orderly close).
type conn struct {
	self   *end // this end
	peer   *end // the other end
	max    int  // frame size limit, see frameSize
	inline bool // ReceiveInline registers its take (unless withoutInline)
	name   string
}

var (
	_ channel.Conn           = (*conn)(nil)
	_ channel.PeerInfoer     = (*conn)(nil)
	_ channel.BatchSender    = (*conn)(nil)
	_ channel.InlineReceiver = (*conn)(nil)
)

// Pipe returns the two ends of an in-process connection. Closing either end
// closes the connection: the closed end's Send and Recv fail at once with
// channel.ErrClosed; the other end's Send fails with channel.ErrClosed, and
// its Recv returns the frames sent before the close and then fails with
// channel.ErrClosed, as when a network peer goes away.
func Pipe(opts ...Option) (a, b channel.Conn) {
	o := buildOptions(opts)
	ab, ba := newQueue(), newQueue()
	ea := &end{in: ba, out: ab}
	eb := &end{in: ab, out: ba}
	return &conn{self: ea, peer: eb, max: o.maxFrameBytes, inline: !o.noInline, name: "embedded:a"},
		&conn{self: eb, peer: ea, max: o.maxFrameBytes, inline: !o.noInline, name: "embedded:b"}
}

// Send queues a deep copy of f for the peer. It blocks while the peer's queue
// is full (back-pressure, like a full TCP window) until the peer reads or
// either end closes.
func (c *conn) Send(f *channel.Frame) error {
	if f == nil {
		return fmt.Errorf("embedded: send: %w: nil frame", channel.ErrMalformedFrame)
	}
	if err := c.closedErr(); err != nil {
		return err
	}
	if n := frameSize(f); n > c.max {
		return fmt.Errorf("embedded: send: %w: %d bytes, limit %d", channel.ErrFrameTooLarge, n, c.max)
	}
	return c.enqueue(f)
}

// SendBatch queues deep copies of fs for the peer, in order: the peer's Recv
// returns them one at a time, as if each had been sent by Send. Like the gRPC
// twin, it refuses the whole batch before queueing anything when its total
// size is over the limit (channel.ErrFrameTooLarge) or a frame is nil
// (channel.ErrMalformedFrame). The peer cannot tell a batch from single
// frames.
func (c *conn) SendBatch(fs []*channel.Frame) error {
	if err := c.closedErr(); err != nil {
		return err
	}
	n := batchOverhead
	for _, f := range fs {
		if f == nil {
			return fmt.Errorf("embedded: send: %w: nil frame in a batch", channel.ErrMalformedFrame)
		}
		n += frameSize(f)
	}
	if n > c.max {
		return fmt.Errorf("embedded: send: %w: batch of %d frames is %d bytes, limit %d", channel.ErrFrameTooLarge, len(fs), n, c.max)
	}
	return c.enqueue(fs...)
}

// closedErr fails a closed conn's Send even if the queue has room.
func (c *conn) closedErr() error {
	switch {
	case c.self.done.Load():
		return fmt.Errorf("embedded: send: %w", channel.ErrClosed)
	case c.peer.done.Load():
		return fmt.Errorf("embedded: send: peer closed: %w", channel.ErrClosed)
	}
	return nil
}

// enqueue queues copies of fs in order, waiting for room as needed; the
// receiver is woken once per call, not per frame. A frame the receiving
// Channel takes at once (see takeInline) is not queued.
func (c *conn) enqueue(fs ...*channel.Frame) error {
	q := c.self.out
	q.mu.Lock()
	for _, f := range fs {
		f = clone(f)
		for {
			if err := c.closedErr(); err != nil {
				q.mu.Unlock()
				return err
			}
			if q.takeInline(f) {
				f = nil
				break
			}
			if q.len() < queueLen {
				break
			}
			if q.readers > 0 { // wake the receiver before waiting for it to make room
				q.readable.Signal()
			}
			q.writers++
			q.writable.Wait()
			q.writers--
		}
		if f != nil {
			q.frames = append(q.frames, f)
		}
	}
	wake := q.readers > 0 && q.len() > 0
	q.mu.Unlock()
	if wake {
		q.readable.Signal()
	}
	return nil
}

// takeInline offers f to the receiving Channel's frame path when the
// receiver waits in Recv with nothing queued: everything sent before f has
// been received, and q.mu, held until take returns, keeps any other frame
// from being received meanwhile (channel.InlineReceiver). It reports
// whether f was taken. q.mu must be held.
func (q *queue) takeInline(f *channel.Frame) bool {
	return q.take != nil && q.readers > 0 && q.len() == 0 && q.take(f)
}

// ReceiveInline registers take as the frame path of this end's Channel (see
// channel.InlineReceiver): the peer's frames are offered to it while this
// end's reader waits with nothing queued. A pipe made withoutInline (tests)
// registers nothing: every frame goes to Recv, as the contract allows.
func (c *conn) ReceiveInline(take func(*channel.Frame) bool) {
	if !c.inline {
		return
	}
	q := c.self.in
	q.mu.Lock()
	q.take = take
	q.mu.Unlock()
}

// Recv returns the next frame from the peer. After the peer closed, it
// returns the frames still queued, then fails with channel.ErrClosed.
func (c *conn) Recv() (*channel.Frame, error) {
	q := c.self.in
	q.mu.Lock()
	for {
		if c.self.done.Load() {
			q.mu.Unlock()
			return nil, fmt.Errorf("embedded: recv: %w", channel.ErrClosed)
		}
		if q.len() > 0 {
			break
		}
		if c.peer.done.Load() { // the peer's sends happened before its close: drained
			q.mu.Unlock()
			return nil, fmt.Errorf("embedded: recv: peer closed: %w", channel.ErrClosed)
		}
		q.readers++
		q.readable.Wait()
		q.readers--
	}
	f := q.pop()
	wake := q.writers > 0
	q.mu.Unlock()
	if wake {
		q.writable.Signal()
	}
	return f, nil
}

// Close closes this end, and with it the connection. It is idempotent.
func (c *conn) Close() error {
	c.self.close()
	return nil
}

// PeerInfo names the end: "embedded:a" for the first end of Pipe (the dialing
// end of a Listener), "embedded:b" for the second.
func (c *conn) PeerInfo() channel.PeerInfo { return channel.PeerInfo{Addr: c.name} }

// clone deep-copies f, as marshalling would, so the two ends never share
// memory. A frame, its one command or reply and a small payload are
// allocated together (see newCommandFrame, newReplyFrame).
func clone(f *channel.Frame) *channel.Frame {
	switch {
	case f.Command != nil && f.Reply == nil:
		out, p := newCommandFrame(f.Command)
		copy(p, f.Command.Payload)
		out.Command.Metadata = maps.Clone(f.Command.Metadata)
		return out
	case f.Reply != nil && f.Command == nil:
		out, p := newReplyFrame(f.Reply)
		copy(p, f.Reply.Payload)
		return out
	}
	return f.Clone()
}

// inlinePayload is the largest payload allocated with its frame.
const inlinePayload = 512

// commandBox is a frame with its command. A payload of up to inlinePayload
// bytes is allocated with them, in the smallest of a few buffer sizes that
// holds it (32, 64, 96, 128, 256 or 512 bytes), so that a small frame costs
// one allocation close to its size.
type commandBox struct {
	f channel.Frame
	c command.Command
}

// newCommandFrame returns a frame holding a copy of c whose Payload, of c's
// length (nil if c's is nil), is to be filled by the caller.
func newCommandFrame(c *command.Command) (*channel.Frame, []byte) {
	b, p := boxed[commandBox](c.Payload)
	b.c = *c
	b.c.Payload = p
	b.f.Command = &b.c
	return &b.f, p
}

// replyBox is commandBox for replies.
type replyBox struct {
	f channel.Frame
	r command.Reply
}

// newReplyFrame is newCommandFrame for a reply.
func newReplyFrame(r *command.Reply) (*channel.Frame, []byte) {
	b, p := boxed[replyBox](r.Payload)
	b.r = *r
	b.r.Payload = p
	b.f.Reply = &b.r
	return &b.f, p
}

// boxed allocates a B (a commandBox or replyBox) and a buffer for a copy of
// payload: for a payload of up to inlinePayload bytes, in one allocation, in
// the smallest of the buffer sizes that holds it; a larger one apart. The
// buffer is nil for a nil payload.
func boxed[B any](payload []byte) (*B, []byte) {
	n := len(payload)
	switch {
	case payload == nil:
		return new(B), nil
	case n <= 32:
		x := new(struct {
			b   B
			buf [32]byte
		})
		return &x.b, x.buf[:n:n]
	case n <= 64:
		x := new(struct {
			b   B
			buf [64]byte
		})
		return &x.b, x.buf[:n:n]
	case n <= 96:
		x := new(struct {
			b   B
			buf [96]byte
		})
		return &x.b, x.buf[:n:n]
	case n <= 128:
		x := new(struct {
			b   B
			buf [128]byte
		})
		return &x.b, x.buf[:n:n]
	case n <= 256:
		x := new(struct {
			b   B
			buf [256]byte
		})
		return &x.b, x.buf[:n:n]
	case n <= inlinePayload:
		x := new(struct {
			b   B
			buf [inlinePayload]byte
		})
		return &x.b, x.buf[:n:n]
	}
	return new(B), make([]byte, n)
}

// batchOverhead approximates what a batch adds to the size of its frames.
const batchOverhead = 16

// frameSize approximates a frame's encoded size: what dominates it.
func frameSize(f *channel.Frame) int {
	n := 16
	if c := f.Command; c != nil {
		n += len(c.ID) + len(c.Type) + len(c.Payload)
		for k, v := range c.Metadata {
			n += len(k) + len(v) + 4
		}
	}
	if r := f.Reply; r != nil {
		n += len(r.CommandID) + len(r.Type) + len(r.Payload) + len(r.Error)
	}
	return n
}

// Listener is an in-process channel.Listener; it is also the matching
// channel.Dialer, so connectors dial the listener itself.
type Listener struct {
	opts  []Option
	conns chan channel.Conn
	once  sync.Once
	done  chan struct{}
}

var _ channel.Listener = (*Listener)(nil)
var _ channel.Dialer = (*Listener)(nil)

// Listen returns a new Listener. The options apply to every pipe it makes.
func Listen(opts ...Option) *Listener {
	return &Listener{opts: opts, conns: make(chan channel.Conn), done: make(chan struct{})}
}

// Dial connects to the listener: it waits until Accept takes the other end,
// ctx is done, or the listener closes.
func (l *Listener) Dial(ctx context.Context) (channel.Conn, error) {
	select {
	case <-l.done:
		return nil, fmt.Errorf("embedded: dial: %w", channel.ErrClosed)
	default:
	}
	a, b := Pipe(l.opts...)
	select {
	case l.conns <- b:
		return a, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("embedded: dial: %w", ctx.Err())
	case <-l.done:
		return nil, fmt.Errorf("embedded: dial: %w", channel.ErrClosed)
	}
}

// Accept waits for the next Dial, until ctx is done or the listener closes.
func (l *Listener) Accept(ctx context.Context) (channel.Conn, error) {
	// A closed listener fails even if a Dial is waiting.
	select {
	case <-l.done:
		return nil, fmt.Errorf("embedded: accept: %w", channel.ErrClosed)
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("embedded: accept: %w", ctx.Err())
	case <-l.done:
		return nil, fmt.Errorf("embedded: accept: %w", channel.ErrClosed)
	}
}

// Close stops the listener: pending and future Dial and Accept calls fail with
// channel.ErrClosed. Conns already made stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}
