package controller

import (
	"testing"

	"github.com/exchangekit/exchange/command"
)

// BenchmarkSendSpanOff is the cost tracing adds to a send when it is off
// (the global tracer provider is the default no-op). Run it alone
// (-run '^$'): the tests of this binary install a recording provider.
func BenchmarkSendSpanOff(b *testing.B) {
	ctx := b.Context()
	cmd := &command.Command{ID: "c1", Type: "ECHO"}
	r := &command.Reply{Status: command.StatusSucceeded}
	b.ReportAllocs()
	for b.Loop() {
		_, span := startSendSpan(ctx, "t1", cmd, false)
		endSendSpan(span, Route{ChannelID: "ch", NodeID: "n"}, true, r, nil)
	}
}
