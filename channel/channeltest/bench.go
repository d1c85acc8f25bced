package channeltest

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// benchInFlight is the number of concurrent senders of Send/InFlight64.
const benchInFlight = 64

// RunBenchmarks measures channel.Channel.Send over the Conns made by mp, with
// a handler that echoes a 100-byte payload:
//
//   - Send/Sequential: one command at a time (round-trip latency).
//   - Send/InFlight64: 64 goroutines sending concurrently on one channel
//     (throughput with pipelining).
//   - SendCoalesced/Sequential, SendCoalesced/InFlight64: the same with
//     channel.Config.Coalesce set on both channels (what a connector and a
//     controller that both announce the "batch" capability run).
//
// All report allocations. Each command gets a fresh id from Send, as
// commands built by command.NewCommand do, and the context has no deadline,
// so the channel's default timeout applies.
func RunBenchmarks(b *testing.B, mp MakePipe) {
	b.Helper()
	for _, v := range []struct {
		name string
		cfg  channel.Config
	}{{"Send", channel.Config{}}, {"SendCoalesced", channel.Config{Coalesce: true}}} {
		b.Run(v.name, func(b *testing.B) {
			b.Run("Sequential", func(b *testing.B) { benchSend(b, mp, 1, v.cfg) })
			b.Run("InFlight64", func(b *testing.B) { benchSend(b, mp, benchInFlight, v.cfg) })
		})
	}
}

// benchPayload is about 100 bytes of JSON.
var benchPayload = []byte(`{"text":"` + string(bytes.Repeat([]byte("x"), 88)) + `","n":1}`)

func benchSend(b *testing.B, mp MakePipe, senders int, cfg channel.Config) {
	a, p := mp(b)
	echo := command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{CommandID: c.ID, Type: c.Type, Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
	ca := channel.New(a, nil, cfg)
	cb := channel.New(p, echo, cfg)
	b.Cleanup(func() { _ = ca.Close(); _ = cb.Close() })
	ctx := b.Context()
	cmd := &command.Command{Type: "ECHO", Payload: benchPayload}

	send := func() bool {
		r, err := ca.Send(ctx, cmd)
		if err != nil {
			b.Errorf("Send() = %v", err)
			return false
		}
		if len(r.Payload) != len(benchPayload) {
			b.Errorf("Send() reply payload has %d bytes, want %d", len(r.Payload), len(benchPayload))
			return false
		}
		return true
	}
	if !send() { // warm up: connection set up, pools filled
		return
	}

	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	b.ResetTimer()
	if senders == 1 {
		for range b.N {
			if !send() {
				return
			}
		}
		return
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range senders {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if !send() {
					return
				}
			}
		})
	}
	wg.Wait()
}
