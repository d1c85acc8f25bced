package clustertest

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// WrapGossip returns a cluster.ClusterConfig.WrapGossipTransport hook for
// node self: packets to or from a node across the partition are dropped
// (as a lossy network does: the send succeeds), dials to it fail with
// ErrPartitioned, and streams from it are closed.
//
// A stream's sender is known only when its dialer's wrapper recorded the
// connection (it does, for every stream it dials), so streams from nodes
// outside this Network are never refused. Partition closes the streams
// open across the cut.
func (n *Network) WrapGossip(self string) func(memberlist.Transport) memberlist.Transport {
	return func(inner memberlist.Transport) memberlist.Transport { return newGossipTransport(n, self, inner) }
}

// gossipTransport is a memberlist.NodeAwareTransport that consults a
// Network. It runs two goroutines from creation until Shutdown, pumping
// inner's packets and streams to memberlist. They keep draining inner until
// its Shutdown returns: memberlist's NetTransport sends on its channels
// unconditionally, and its Shutdown waits for those sends.
type gossipTransport struct {
	net   *Network
	self  string
	inner memberlist.NodeAwareTransport

	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{} // closed by Shutdown: deliver nothing more
	drained chan struct{} // closed once inner's Shutdown returned
	once    sync.Once
	err     error
	pumping sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)

func newGossipTransport(nw *Network, self string, inner memberlist.Transport) *gossipTransport {
	na, ok := inner.(memberlist.NodeAwareTransport)
	if !ok {
		na = nodeAware{inner}
	}
	t := &gossipTransport{net: nw, self: self, inner: na,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		stop: make(chan struct{}), drained: make(chan struct{})}
	t.pumping.Go(t.pumpPackets)
	t.pumping.Go(t.pumpStreams)
	return t
}

func (t *gossipTransport) pumpPackets() {
	in := t.inner.PacketCh()
	for {
		select {
		case <-t.drained:
			return
		case p := <-in:
			if p.From != nil && t.net.Cut(t.self, t.net.idOf(p.From.String())) {
				continue // lost on the way
			}
			select {
			case t.packets <- p:
			case <-t.stop: // shutting down: dropped
			}
		}
	}
}

func (t *gossipTransport) pumpStreams() {
	in := t.inner.StreamCh()
	for {
		select {
		case <-t.drained:
			return
		case c := <-in:
			if t.net.Cut(t.self, t.net.dialerOf(c.RemoteAddr().String())) {
				_ = c.Close()
				continue
			}
			select {
			case t.streams <- c:
			case <-t.stop:
				_ = c.Close()
			}
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *gossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.net.Cut(t.self, t.peer(a)) {
		return time.Now(), nil // dropped on the way
	}
	return t.inner.WriteToAddress(b, a)
}

// DialTimeout implements memberlist.Transport.
func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	peer := t.peer(a)
	if t.net.Cut(t.self, peer) {
		return nil, fmt.Errorf("clustertest: gossip dial from %s to %s at %s: %w", t.self, peer, a.Addr, ErrPartitioned)
	}
	c, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	tc := &trackedNetConn{Conn: c}
	tc.untrack = t.net.track(t.self, peer, c.LocalAddr().String(), c)
	return tc, nil
}

// peer returns the node at a ("" when unknown).
func (t *gossipTransport) peer(a memberlist.Address) string {
	if id := t.net.idOf(a.Addr); id != "" {
		return id
	}
	return a.Name
}

// PacketCh implements memberlist.Transport.
func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// StreamCh implements memberlist.Transport.
func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: it shuts inner down (the pumps
// drain it meanwhile, delivering nothing more), then waits for the pumps. It
// is idempotent.
func (t *gossipTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.stop)
		t.err = t.inner.Shutdown()
		close(t.drained)
		t.pumping.Wait()
	})
	return t.err
}

// trackedNetConn forgets its Network record when closed.
type trackedNetConn struct {
	net.Conn
	untrack func()
	once    sync.Once
}

func (c *trackedNetConn) Close() error {
	c.once.Do(c.untrack)
	return c.Conn.Close()
}

// nodeAware adapts a plain memberlist.Transport (memberlist's own shim is
// unexported).
type nodeAware struct{ memberlist.Transport }

func (n nodeAware) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return n.WriteTo(b, a.Addr)
}

func (n nodeAware) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return n.DialTimeout(a.Addr, timeout)
}
