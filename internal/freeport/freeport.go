// Package freeport hands tests loopback addresses for servers that must keep
// their address across restarts (raft, gossip, gRPC of a cluster node), and so
// cannot listen on ":0" themselves.
//
// A port is drawn below the usual ephemeral range (Linux: 32768-60999) and
// checked free for TCP and UDP (gossip binds both). A port the kernel hands
// out for a ":0" listener or an outgoing connection, in this process or in a
// test binary running beside it, could be taken by someone else between the
// check and the server's bind, or while the server is stopped; a port outside
// that range is only ever taken by an explicit bind. Ports are never handed
// out twice in one process.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Range is where ports are drawn: [Low, Low+Span).
const (
	Low  = 20000
	Span = 12000
)

var used = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// ErrNone is returned when no free port was found.
var ErrNone = errors.New("freeport: no free port found below the ephemeral range")

// Loopback returns "127.0.0.1:port" for a port that is free right now for
// TCP and UDP and was not returned before by this process.
func Loopback() (string, error) {
	used.Lock()
	defer used.Unlock()
	for range 1000 {
		port := Low + rand.IntN(Span)
		if used.m[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = u.Close()
		used.m[port] = true
		return addr, nil
	}
	return "", ErrNone
}
