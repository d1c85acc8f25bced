package connector_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/connector"
)

// BenchmarkRefusedAttempt: what the connector itself spends on one connection
// attempt that its controller refuses at once (a handshake-limit refusal, the
// commonest event of a fleet's storm; docs/benchmarks.md, "Reconnect storms,
// seventh pass"): the state changes and their OnState callbacks, the
// attempt's context, the error, the log call and the backoff wait. The dialer
// refuses without any transport (it only yields, as a real Dial waits on the
// network), so the figures are the connector's alone; one op is one attempt.
// The backoff is 1 ns, so no op waits.
func BenchmarkRefusedAttempt(b *testing.B) {
	refusal := fmt.Errorf("grpcchannel: dial 127.0.0.1:7400: server unavailable: %w: handshakes in flight", channel.ErrLimitExceeded)
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	var n atomic.Int64
	d := channel.DialerFunc(func(context.Context) (channel.Conn, error) {
		if n.Add(1) > int64(b.N) {
			cancel()
		}
		runtime.Gosched() // a real Dial waits on the network: the notifier runs meanwhile
		return nil, refusal
	})
	cfg := connector.DefaultConfig()
	cfg.TargetID = "t"
	cfg.ConnectorID = "c"
	cfg.BackoffBase, cfg.BackoffMax = time.Nanosecond, time.Nanosecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	var states atomic.Int64
	cfg.OnState = func(connector.StateChange) { states.Add(1) }
	c, err := connector.New(cfg, nil, d)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := c.Run(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if states.Load() < 2*int64(b.N) {
		b.Fatalf("%d state changes for %d attempts", states.Load(), b.N)
	}
}
