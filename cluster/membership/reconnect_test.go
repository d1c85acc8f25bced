package membership_test

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/exchangekit/exchange/cluster/membership"
)

// unplug cuts one node off the gossip: every node's transport is wrapped,
// and drops the packets and fails the dials it sends to or from the
// unplugged address (so both directions are cut at their sender).
type unplug struct {
	mu  sync.Mutex
	off string // the unplugged node's address; "" when none
}

func (u *unplug) set(addr string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.off = addr
}

func (u *unplug) cut(from, to string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.off != "" && (from == u.off || to == u.off)
}

func (u *unplug) wrap(inner memberlist.Transport) memberlist.Transport {
	nt := inner.(*memberlist.NetTransport)
	return &unplugged{NetTransport: nt, u: u, self: net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))}
}

type unplugged struct {
	*memberlist.NetTransport
	u    *unplug
	self string
}

func (t *unplugged) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *unplugged) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.u.cut(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *unplugged) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *unplugged) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.u.cut(t.self, a.Addr) {
		return nil, errors.New("unplugged")
	}
	return t.NetTransport.DialAddressTimeout(a, timeout)
}

// A node cut off long enough to be declared dead is seen alive again, on
// both sides, soon after the partition heals: the reconnect loop exchanges
// state with failed members (memberlist alone never would: it neither
// probes nor pushes/pulls with dead members). It also runs Start's
// WrapTransport path with a port 0 bind.
func TestReconnectAfterPartition(t *testing.T) {
	leakCheck(t)
	u := &unplug{}
	nodes := cluster(t, 3, func(c *membership.Config) { c.WrapTransport = u.wrap })
	ctx := testCtx(t)
	u.set(nodes[2].LocalNode().Addr)
	for _, nd := range nodes[:2] {
		nd.waitFor(t, ctx, "node-3 dead", stateIs("node-3", membership.StateDead))
	}
	nodes[2].waitFor(t, ctx, "node-1 and node-2 dead", func(last map[string]membership.Event) bool {
		return stateIs("node-1", membership.StateDead)(last) && stateIs("node-2", membership.StateDead)(last)
	})
	healed := time.Now()
	u.set("")
	for _, nd := range nodes {
		nd.waitFor(t, ctx, "3 nodes alive again", func(last map[string]membership.Event) bool {
			return countState(last, membership.StateAlive) == 3
		})
	}
	t.Logf("every node sees every other alive %v after the heal", time.Since(healed))
}
