package connector_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

// refusingDialer refuses its first n dials with err, then dials through d.
type refusingDialer struct {
	channel.Dialer
	n   atomic.Int32
	err error
}

func (r *refusingDialer) Dial(ctx context.Context) (channel.Conn, error) {
	if r.n.Add(-1) >= 0 {
		return nil, r.err
	}
	return r.Dialer.Dial(ctx)
}

// A refusal that carries the server's retry hint (a *channel.LimitError, as
// the gRPC twin makes of RESOURCE_EXHAUSTED with RetryInfo) is waited out for
// about the hint, jittered over [hint/2, 3·hint/2), and does not grow the
// backoff: the attempts after it start from the same failure count. A refusal
// without a hint backs off as any failure does (decision 0039).
func TestRetryHintHonoured(t *testing.T) {
	const hint = 200 * time.Millisecond
	for _, tc := range []struct {
		name   string
		err    error
		hinted bool
	}{
		{"Hinted", fmt.Errorf("grpcchannel: dial x: %w", &channel.LimitError{Detail: "3 handshakes in flight (limit 3)", RetryAfter: hint}), true},
		{"Unhinted", fmt.Errorf("grpcchannel: dial x: %w: 3 handshakes in flight", channel.ErrLimitExceeded), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fc := newFakeController(t)
			d := &refusingDialer{Dialer: fc.dialer(), err: tc.err}
			d.n.Store(3)
			cfg := testConfig(t) // backoff 1 ms, capped at 5 ms
			var mu sync.Mutex
			var states []connector.StateChange
			cfg.OnState = func(sc connector.StateChange) {
				mu.Lock()
				states = append(states, sc)
				mu.Unlock()
			}
			c := newConnector(t, cfg, command.NewMux(), d)
			start(t, c)
			fc.next(ctx)
			if err := c.WaitConnected(ctx); err != nil {
				t.Fatalf("WaitConnected() = %v", err)
			}
			c.Close()

			mu.Lock()
			defer mu.Unlock()
			var refusals, connecting int
			for _, sc := range states {
				switch sc.State {
				case connector.StateDisconnected:
					if !errors.Is(sc.Err, channel.ErrLimitExceeded) {
						continue
					}
					refusals++
					if tc.hinted && (sc.Delay < hint/2 || sc.Delay >= 3*hint/2) {
						t.Errorf("delay after a hinted refusal = %v, want in [%v, %v)", sc.Delay, hint/2, 3*hint/2)
					}
					if !tc.hinted && sc.Delay >= cfg.BackoffMax {
						t.Errorf("delay after an unhinted refusal = %v, want the backoff's (< %v)", sc.Delay, cfg.BackoffMax)
					}
				case connector.StateConnecting:
					if tc.hinted && sc.Attempt != 0 {
						t.Errorf("Connecting after hinted refusals: Attempt = %d, want 0 (the backoff does not grow)", sc.Attempt)
					}
					if !tc.hinted && sc.Attempt != connecting {
						t.Errorf("Connecting #%d: Attempt = %d, want %d (each refusal a failure)", connecting+1, sc.Attempt, connecting)
					}
					connecting++
				}
			}
			if refusals != 3 {
				t.Errorf("%d refusals reported, want 3: %+v", refusals, states)
			}
		})
	}
}
