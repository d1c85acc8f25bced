package channeltest

import (
	"fmt"
	"sync"

	"github.com/exchangekit/exchange/channel"
)

// Direction selects the calls of a FaultConn that Stall affects.
type Direction uint8

const (
	// DirSend stalls Send: frames stop leaving, as with a peer that stopped
	// reading or a dead network path.
	DirSend Direction = 1 << iota
	// DirRecv stalls Recv: frames stop arriving, as with a silent peer. While
	// Recv is stalled the FaultConn does not read from the wrapped Conn, so
	// the peer's sends eventually block too (back-pressure).
	DirRecv
	// DirBoth stalls Send and Recv: a hung peer or a black-holed link.
	DirBoth = DirSend | DirRecv
)

// FaultConn is a channel.Conn decorator that injects faults into a wrapped
// Conn, for tests of what sits above a channel: controller health checks of
// silent channels, timeouts against stalled peers, behaviour on write errors.
// Wrap either end of a pipe:
//
//	a, b := embedded.Pipe()
//	fa := channeltest.NewFaultConn(a)
//	ch := channel.New(fa, handler, cfg)
//	fa.Stall(channeltest.DirBoth) // the peer now looks alive but silent
//
// With no fault set, a FaultConn is transparent: it passes the TestConn suite
// exactly when the wrapped Conn does. Faults can be changed at any time, from
// any goroutine, while Send and Recv are running. Close always works: it
// closes the wrapped Conn and releases every stalled call with an error
// wrapping channel.ErrClosed.
type FaultConn struct {
	inner  channel.Conn
	closed chan struct{} // closed by Close

	mu        sync.Mutex    // protects the fields below
	sendGate  chan struct{} // non-nil while Send is stalled; closed by Unstall
	recvGate  chan struct{} // non-nil while Recv is stalled; closed by Unstall
	drop      int           // outgoing frames still to drop
	dropped   int           // outgoing frames dropped so far
	failSends error         // if set, Send fails with it
	batches   int           // SendBatch calls that sent their frames
	batched   int           // frames those calls sent
	closeOnce sync.Once
}

var (
	_ channel.Conn             = (*FaultConn)(nil)
	_ channel.BatchSender      = (*FaultConn)(nil)
	_ channel.PeerInfoer       = (*FaultConn)(nil)
	_ channel.CloseWithErrorer = (*FaultConn)(nil)
)

// NewFaultConn returns a FaultConn over c that injects no fault until told
// to. The FaultConn owns c: closing it closes c.
func NewFaultConn(c channel.Conn) *FaultConn {
	return &FaultConn{inner: c, closed: make(chan struct{})}
}

// Send sends f through the wrapped Conn, unless a fault applies. In order:
// a stalled Send blocks until Unstall (and then proceeds) or Close (and then
// fails with channel.ErrClosed); with FailSends set it fails with that error;
// while DropNext has frames to drop it returns nil without sending.
func (c *FaultConn) Send(f *channel.Frame) error {
	if err := c.wait(DirSend); err != nil {
		return fmt.Errorf("channeltest: send: %w", err)
	}
	c.mu.Lock()
	switch {
	case c.failSends != nil:
		err := c.failSends
		c.mu.Unlock()
		return err
	case c.drop > 0:
		c.drop--
		c.dropped++
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.inner.Send(f)
}

// SendBatch sends fs through the wrapped Conn's SendBatch (or, if the wrapped
// Conn is not a channel.BatchSender, with one Send per frame, stopping at the
// first error: then a batch is not all or nothing), with the faults of Send:
// a stall holds the whole batch, FailSends fails it, and DropNext drops its
// first frames. Batches counts the calls that sent their frames.
func (c *FaultConn) SendBatch(fs []*channel.Frame) error {
	if err := c.wait(DirSend); err != nil {
		return fmt.Errorf("channeltest: send: %w", err)
	}
	c.mu.Lock()
	if c.failSends != nil {
		err := c.failSends
		c.mu.Unlock()
		return err
	}
	n := min(c.drop, len(fs))
	c.drop -= n
	c.dropped += n
	c.mu.Unlock()
	fs = fs[n:]
	if len(fs) == 0 {
		return nil
	}
	if bs, ok := c.inner.(channel.BatchSender); ok {
		if err := bs.SendBatch(fs); err != nil {
			return err
		}
	} else {
		for _, f := range fs {
			if err := c.inner.Send(f); err != nil {
				return err
			}
		}
	}
	c.mu.Lock()
	c.batches++
	c.batched += len(fs)
	c.mu.Unlock()
	return nil
}

// Batches returns how many SendBatch calls have sent their frames, and how
// many frames they sent: how well the Channel above coalesces.
func (c *FaultConn) Batches() (batches, frames int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.batches, c.batched
}

// Recv receives the next frame from the wrapped Conn. A stalled Recv blocks
// until Unstall or Close, both before reading from the wrapped Conn and after
// (a frame that arrives while Recv is stalled is held back until Unstall).
func (c *FaultConn) Recv() (*channel.Frame, error) {
	if err := c.wait(DirRecv); err != nil {
		return nil, fmt.Errorf("channeltest: recv: %w", err)
	}
	f, err := c.inner.Recv()
	if err != nil {
		return nil, err
	}
	if err := c.wait(DirRecv); err != nil {
		return nil, fmt.Errorf("channeltest: recv: %w", err)
	}
	return f, nil
}

// Close closes the wrapped Conn and fails every stalled call with an error
// wrapping channel.ErrClosed. It is idempotent.
func (c *FaultConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.inner.Close()
}

// CloseWithError closes like Close, passing err to the wrapped Conn if it
// implements channel.CloseWithErrorer.
func (c *FaultConn) CloseWithError(err error) error {
	c.closeOnce.Do(func() { close(c.closed) })
	if cw, ok := c.inner.(channel.CloseWithErrorer); ok {
		return cw.CloseWithError(err)
	}
	return c.inner.Close()
}

// PeerInfo returns the wrapped Conn's PeerInfo.
func (c *FaultConn) PeerInfo() channel.PeerInfo { return channel.Peer(c.inner) }

// Unwrap returns the wrapped Conn.
func (c *FaultConn) Unwrap() channel.Conn { return c.inner }

// Stall makes the calls in direction d block until Unstall or Close. Calls
// already blocked inside the wrapped Conn are not interrupted, but a frame a
// stalled Recv gets is held back until Unstall. Stalling a direction that is
// already stalled does nothing.
func (c *FaultConn) Stall(d Direction) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d&DirSend != 0 && c.sendGate == nil {
		c.sendGate = make(chan struct{})
	}
	if d&DirRecv != 0 && c.recvGate == nil {
		c.recvGate = make(chan struct{})
	}
}

// Unstall releases every stalled call, in both directions, and lets later
// calls through.
func (c *FaultConn) Unstall() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range []*chan struct{}{&c.sendGate, &c.recvGate} {
		if *g != nil {
			close(*g)
			*g = nil
		}
	}
}

// DropNext makes the next n Sends return nil without sending their frames,
// as a lossy link would (a transport with delivery guarantees never does
// this: use it to simulate a peer that lost a frame, such as a reply that
// never comes). n replaces any count still pending; 0 stops dropping.
func (c *FaultConn) DropNext(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop = max(n, 0)
}

// Dropped returns how many outgoing frames DropNext has dropped so far.
func (c *FaultConn) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// FailSends makes every later Send fail with err, without sending, as a
// broken write path would; nil makes Sends work again. A Channel treats a
// failed Send as the end of the connection (unless err wraps
// channel.ErrFrameTooLarge), so this is how a test breaks a channel from
// below.
func (c *FaultConn) FailSends(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failSends = err
}

// wait blocks while direction d is stalled, until Unstall or Close.
func (c *FaultConn) wait(d Direction) error {
	for {
		c.mu.Lock()
		gate := c.sendGate
		if d == DirRecv {
			gate = c.recvGate
		}
		c.mu.Unlock()
		select {
		case <-c.closed:
			return channel.ErrClosed
		default:
		}
		if gate == nil {
			return nil
		}
		select {
		case <-gate: // unstalled; it may have been stalled again since
		case <-c.closed:
			return channel.ErrClosed
		}
	}
}
