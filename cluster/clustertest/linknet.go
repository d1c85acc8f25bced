package clustertest

import (
	"context"
	"fmt"
	"sync"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/state"
)

// WrapLinks wraps node self's link transport: a dial to a node across the
// partition fails (an error wrapping state.ErrNodeUnavailable and
// ErrPartitioned), and a link self dialed fails on its next Send or Recv
// once a partition cuts it (Partition closes it at once, which ends a Recv
// in progress), so its channel closes.
//
// Only the dialing side is filtered, and that cuts the path both ways: a
// node sends its applies and forwarded commands only on the links it dialed
// itself (what it receives on links others dialed are their commands, and
// the replies go back on the same link), so with every node's dialed links
// cut, no command crosses in either direction.
func (n *Network) WrapLinks(self string, inner cluster.LinkTransport) cluster.LinkTransport {
	return &linkTransport{net: n, self: self, inner: inner}
}

type linkTransport struct {
	net   *Network
	self  string
	inner cluster.LinkTransport
}

func (t *linkTransport) Listener() channel.Listener { return t.inner.Listener() }

func (t *linkTransport) Dialer(addr string) (channel.Dialer, error) {
	peer := t.net.idOf(addr)
	if err := t.check(peer); err != nil {
		return nil, err
	}
	d, err := t.inner.Dialer(addr)
	if err != nil {
		return nil, err
	}
	return &linkDialer{t: t, peer: peer, inner: d}, nil
}

func (t *linkTransport) check(peer string) error {
	if t.net.Cut(t.self, peer) {
		return fmt.Errorf("clustertest: link from %s to %s: %w: %w", t.self, peer, state.ErrNodeUnavailable, ErrPartitioned)
	}
	return nil
}

type linkDialer struct {
	t     *linkTransport
	peer  string
	inner channel.Dialer
}

func (d *linkDialer) Dial(ctx context.Context) (channel.Conn, error) {
	if err := d.t.check(d.peer); err != nil {
		return nil, err
	}
	c, err := d.inner.Dial(ctx)
	if err != nil {
		return nil, err
	}
	lc := &linkConn{t: d.t, peer: d.peer, inner: c}
	lc.untrack = d.t.net.track(d.t.self, d.peer, "", c)
	return lc, nil
}

// Close closes the wrapped dialer if it is an io.Closer (the Node closes
// its dialers).
func (d *linkDialer) Close() error {
	if c, ok := d.inner.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// linkConn is a link this node dialed: it fails once its nodes are cut
// apart.
type linkConn struct {
	t       *linkTransport
	peer    string
	inner   channel.Conn
	untrack func()
	once    sync.Once
}

var _ channel.BatchSender = (*linkConn)(nil)

func (c *linkConn) cut() error {
	if err := c.t.check(c.peer); err != nil {
		_ = c.inner.Close()
		return err
	}
	return nil
}

func (c *linkConn) Send(f *channel.Frame) error {
	if err := c.cut(); err != nil {
		return err
	}
	return c.inner.Send(f)
}

// SendBatch implements channel.BatchSender (frame by frame when the wrapped
// Conn has no batches).
func (c *linkConn) SendBatch(fs []*channel.Frame) error {
	if err := c.cut(); err != nil {
		return err
	}
	if bs, ok := c.inner.(channel.BatchSender); ok {
		return bs.SendBatch(fs)
	}
	for _, f := range fs {
		if err := c.inner.Send(f); err != nil {
			return err
		}
	}
	return nil
}

func (c *linkConn) Recv() (*channel.Frame, error) {
	if err := c.cut(); err != nil {
		return nil, err
	}
	f, err := c.inner.Recv()
	if err != nil {
		return nil, err
	}
	if err := c.cut(); err != nil { // arrived after the cut: lost
		return nil, err
	}
	return f, nil
}

func (c *linkConn) Close() error {
	c.once.Do(c.untrack)
	return c.inner.Close()
}

// PeerInfo implements channel.PeerInfoer.
func (c *linkConn) PeerInfo() channel.PeerInfo { return channel.Peer(c.inner) }
