package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Loopback hands out distinct ports in its range that a server can bind.
func TestLoopback(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		addr, err := Loopback()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if host != "127.0.0.1" || port < Low || port >= Low+Span {
			t.Fatalf("%s: not a loopback port in [%d, %d)", addr, Low, Low+Span)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		_ = l.Close()
	}
}
