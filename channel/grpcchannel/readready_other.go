//go:build !unix

package grpcchannel

import "net"

// withReadOnReady returns c: outside Unix, a wrapped connection pins its
// read buffer.
func withReadOnReady(c, _ net.Conn) net.Conn { return c }
