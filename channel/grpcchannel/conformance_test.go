package grpcchannel_test

import (
	"testing"

	"github.com/exchangekit/exchange/channel/channeltest"
)

// The gRPC twin must behave exactly like the embedded one: the same suite runs
// over an in-memory connection (bufconn) and over real TCP on loopback.

func TestConformanceBufconn(t *testing.T) {
	channeltest.TestConn(t, bufconnPipe)
	channeltest.TestChannel(t, bufconnPipe)
}

func TestConformanceTCP(t *testing.T) {
	channeltest.TestConn(t, tcpPipe)
	channeltest.TestChannel(t, tcpPipe)
}

func BenchmarkGRPC(b *testing.B) {
	b.Run("bufconn", func(b *testing.B) { channeltest.RunBenchmarks(b, bufconnPipe) })
	b.Run("tcp", func(b *testing.B) { channeltest.RunBenchmarks(b, tcpPipe) })
}
