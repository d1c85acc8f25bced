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
// # Usage
//
//	lis := embedded.Listen()                          // controller side: a channel.Listener
//	conn, err := lis.Dial(ctx)                        // connector side: lis is a channel.Dialer too
//	a, b := embedded.Pipe()                           // or a bare connected pair
package embedded

import (
	"context"
	"fmt"
	"sync"

	"github.com/exchangekit/exchange/channel"
)

// queueLen is how many frames may wait in one direction before Send blocks
// (back-pressure, like a full TCP window).
const queueLen = 64

// Option configures a pipe or listener.
type Option interface{ apply(*options) }

type options struct{ maxFrameBytes int }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithMaxFrameBytes sets the largest frame Send accepts (default
// channel.DefaultMaxFrameBytes, as the gRPC twin). The size counted is the
// payload, ids, type and metadata.
func WithMaxFrameBytes(n int) Option { return optionFunc(func(o *options) { o.maxFrameBytes = n }) }

func buildOptions(opts []Option) options {
	o := options{maxFrameBytes: channel.DefaultMaxFrameBytes}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// link is one shared connection: two queues and one done channel.
type link struct {
	once sync.Once
	done chan struct{}
}

func (l *link) close() { l.once.Do(func() { close(l.done) }) }

// conn is one end of a pipe.
type conn struct {
	l    *link
	in   <-chan *channel.Frame
	out  chan<- *channel.Frame
	max  int
	name string
}

var _ channel.Conn = (*conn)(nil)
var _ channel.PeerInfoer = (*conn)(nil)

// Pipe returns the two ends of an in-process connection. Closing either end
// closes both: the other end's Recv fails with channel.ErrClosed, as when a
// network peer goes away.
func Pipe(opts ...Option) (a, b channel.Conn) {
	o := buildOptions(opts)
	l := &link{done: make(chan struct{})}
	ab := make(chan *channel.Frame, queueLen)
	ba := make(chan *channel.Frame, queueLen)
	return &conn{l: l, in: ba, out: ab, max: o.maxFrameBytes, name: "embedded:a"},
		&conn{l: l, in: ab, out: ba, max: o.maxFrameBytes, name: "embedded:b"}
}

func (c *conn) Send(f *channel.Frame) error {
	if n := frameSize(f); n > c.max {
		return fmt.Errorf("embedded: %w: %d bytes, limit %d", channel.ErrFrameTooLarge, n, c.max)
	}
	// Check done first: a closed conn must fail even if the queue has room.
	select {
	case <-c.l.done:
		return fmt.Errorf("embedded: send: %w", channel.ErrClosed)
	default:
	}
	select {
	case c.out <- f.Clone():
		return nil
	case <-c.l.done:
		return fmt.Errorf("embedded: send: %w", channel.ErrClosed)
	}
}

func (c *conn) Recv() (*channel.Frame, error) {
	select {
	case <-c.l.done:
		return nil, fmt.Errorf("embedded: recv: %w", channel.ErrClosed)
	default:
	}
	select {
	case f := <-c.in:
		return f, nil
	case <-c.l.done:
		return nil, fmt.Errorf("embedded: recv: %w", channel.ErrClosed)
	}
}

func (c *conn) Close() error {
	c.l.close()
	return nil
}

func (c *conn) PeerInfo() channel.PeerInfo { return channel.PeerInfo{Addr: c.name} }

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

// Accept waits for the next Dial.
func (l *Listener) Accept(ctx context.Context) (channel.Conn, error) {
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
