package connector_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/internal/backoff"
)

// These tests run in synctest bubbles: time is fake, so the production
// backoff (500 ms, 1 s, 2 s …) is measured exactly and costs nothing.

// advance lets d of fake time pass in the bubble.
func advance(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// dialTimes wraps d and records the fake time of every Dial.
func dialTimes(d channel.Dialer) (channel.Dialer, <-chan time.Time) {
	at := make(chan time.Time, 100)
	return channel.DialerFunc(func(ctx context.Context) (channel.Conn, error) {
		select {
		case at <- time.Now():
		default: // the test has what it needs
		}
		if d == nil {
			return nil, errUnreachable
		}
		return d.Dial(ctx)
	}), at
}

func gaps(at []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(at); i++ {
		out = append(out, at[i].Sub(at[i-1]))
	}
	return out
}

func timingConfig(t *testing.T) connector.Config {
	cfg := testConfig(t)
	cfg.BackoffBase = 500 * time.Millisecond
	cfg.BackoffMax = 4 * time.Second
	cfg.StableAfter = 10 * time.Second
	return cfg
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBackoffGrowsExponentiallyToTheCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, dials := dialTimes(nil)
		cfg := timingConfig(t)
		rec := newRecorder(&cfg)
		c := newConnector(t, cfg, nil, d)
		connector.SetBackoffRand(c, func(m int64) int64 { return m - 1 }) // the top of every range
		start(t, c)
		var at []time.Time
		for range 8 {
			at = append(at, <-dials)
		}
		_ = c.Close()

		const ns = time.Nanosecond
		want := []time.Duration{500*time.Millisecond - ns, time.Second - ns, 2*time.Second - ns,
			4*time.Second - ns, 4*time.Second - ns, 4*time.Second - ns, 4*time.Second - ns}
		if got := gaps(at); !equalDurations(got, want) {
			t.Errorf("waits between attempts = %v, want %v", got, want)
		}
		var attempts []int
		for _, sc := range rec.stateList() {
			if sc.State == connector.StateConnecting {
				attempts = append(attempts, sc.Attempt)
			}
		}
		if len(attempts) < 8 || attempts[0] != 0 || attempts[7] != 7 {
			t.Errorf("Connecting.Attempt = %v, want 0, 1, 2 …", attempts)
		}
	})
}

func TestBackoffIsFullyJittered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, dials := dialTimes(nil)
		cfg := timingConfig(t)
		rec := newRecorder(&cfg)
		c := newConnector(t, cfg, nil, d)
		connector.SetBackoffRand(c, rand.New(rand.NewPCG(1, 2)).Int64N)
		start(t, c)
		var at []time.Time
		for range 10 {
			at = append(at, <-dials)
		}
		_ = c.Close()

		// The same seed drawn through the pure policy gives the same waits,
		// each uniform in [0, min(Max, Base·2^n)).
		p := backoff.Policy{Base: cfg.BackoffBase, Max: cfg.BackoffMax}
		r := rand.New(rand.NewPCG(1, 2))
		got := gaps(at)
		var reported []time.Duration
		for _, sc := range rec.stateList() {
			if sc.State == connector.StateDisconnected {
				reported = append(reported, sc.Delay)
			}
		}
		for n, g := range got {
			if want := p.Delay(n, r.Int64N); g != want || g >= p.Ceiling(n) {
				t.Errorf("wait %d = %v, want %v (below %v)", n, g, want, p.Ceiling(n))
			}
			if n < len(reported) && reported[n] != g {
				t.Errorf("Disconnected.Delay %d = %v, but the connector waited %v", n, reported[n], g)
			}
		}
	})
}

func TestBackoffZeroJitterRetriesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, dials := dialTimes(nil)
		c := newConnector(t, timingConfig(t), nil, d)
		connector.SetBackoffRand(c, func(int64) int64 { return 0 }) // the bottom of every range
		start(t, c)
		first := <-dials
		for range 5 {
			if at := <-dials; !at.Equal(first) {
				t.Fatalf("retry after %v, want at once (full jitter reaches 0)", at.Sub(first))
			}
		}
		_ = c.Close()
	})
}

// Connect-then-die does not reset the backoff (KubeEdge PR #6967): only a
// connection that stayed up for StableAfter does.
func TestBackoffResetsOnlyAfterStableAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fc := newFakeController(t, withRaw())
		d, dials := dialTimes(fc.dialer())
		cfg := timingConfig(t)
		cfg.BackoffMax = time.Minute
		c := newConnector(t, cfg, nil, d)
		connector.SetBackoffRand(c, func(m int64) int64 { return m - 1 })
		start(t, c)

		holds := []time.Duration{0, 0, 0, 10 * time.Second, 0, 9 * time.Second, 0}
		var at []time.Time
		for _, hold := range holds {
			at = append(at, <-dials)
			p := fc.next(ctx)
			advance(hold)
			p.close() // the controller drops it
		}
		at = append(at, <-dials)
		_ = c.Close()

		const ns = time.Nanosecond
		want := []time.Duration{
			0 + 500*time.Millisecond - ns,              // first failure
			0 + time.Second - ns,                       // handshake success did not reset
			0 + 2*time.Second - ns,                     //
			10*time.Second + 500*time.Millisecond - ns, // stable for StableAfter: reset
			0 + time.Second - ns,                       //
			9*time.Second + 2*time.Second - ns,         // 9 s < StableAfter: no reset
			0 + 4*time.Second - ns,
		}
		if got := gaps(at); !equalDurations(got, want) {
			t.Errorf("time between dials = %v, want %v", got, want)
		}
	})
}

func TestHeartbeatMissedReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fc := newFakeController(t, withRaw(), withHeartbeat(time.Second))
		cfg := timingConfig(t)
		rec := newRecorder(&cfg)
		c := newConnector(t, cfg, nil, fc.dialer())
		connector.SetBackoffRand(c, func(int64) int64 { return 0 })
		start(t, c)
		fc.next(ctx) // …and the controller goes silent (a half-open link)
		t0 := time.Now()
		fc.next(ctx)
		if got := time.Since(t0); got != 3*time.Second {
			t.Errorf("reconnected after %v, want 3 s (3 missed heartbeats of 1 s)", got)
		}
		synctest.Wait() // the callbacks have run
		if d := firstState(rec.stateList(), connector.StateDisconnected); !errors.Is(d.Err, connector.ErrHeartbeatMissed) {
			t.Errorf("Disconnected.Err = %v, want ErrHeartbeatMissed", d.Err)
		}
		_ = c.Close()
	})
}

func TestHeartbeatKeptAliveByCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fc := newFakeController(t, withRaw(), withHeartbeat(time.Second))
		c := newConnector(t, timingConfig(t), nil, fc.dialer())
		start(t, c)
		p := fc.next(ctx)
		for range 10 { // 25 s of health checks every 2.5 s, within the 3 s window
			advance(2500 * time.Millisecond)
			p.rawSend(t, command.MustCommand(command.TypeHealthCheck, command.HealthCheckPayload{}))
			if r := p.rawReply(t); !r.Succeeded() {
				t.Fatalf("HEALTH_CHECK reply = %+v", r)
			}
		}
		if n := fc.hellos.Load(); n != 1 || c.State() != connector.StateConnected {
			t.Errorf("HELLOs = %d, state %v; want 1 and Connected", n, c.State())
		}
		_ = c.Close()
	})
}

func TestHeartbeatWatchdogDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fc := newFakeController(t, withRaw(), withHeartbeat(time.Second))
		cfg := timingConfig(t)
		cfg.MissedHeartbeats = -1
		c := newConnector(t, cfg, nil, fc.dialer())
		start(t, c)
		fc.next(ctx)
		fc.expectNoConnection(time.Minute)
		_ = c.Close()
	})
}

// A controller that answers nothing after GOOD_BYE: the connector lets its
// SUCCEEDED reply out, waits a bounded time for the controller to close, then
// closes itself and reconnects at once (first backoff step).
func TestGoodByeLingerIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fc := newFakeController(t, withRaw())
		c := newConnector(t, timingConfig(t), nil, fc.dialer())
		connector.SetBackoffRand(c, func(int64) int64 { return 0 })
		start(t, c)
		p := fc.next(ctx)
		p.rawSend(t, command.MustCommand(command.TypeGoodBye, command.GoodByePayload{TargetID: "target-a", Reconnect: true}))
		t0 := time.Now()
		if r := p.rawReply(t); !r.Succeeded() {
			t.Fatalf("GOOD_BYE reply = %+v, want SUCCEEDED", r)
		}
		synctest.Wait() // the connector has acted on it
		if c.IsPrimary() || c.ChannelID() != "" {
			t.Errorf("after GOOD_BYE: IsPrimary %v, ChannelID %q; want false and none", c.IsPrimary(), c.ChannelID())
		}
		if _, err := p.conn.Recv(); !errors.Is(err, channel.ErrClosed) {
			t.Fatalf("Recv() after the reply = %v, want the connector to close", err)
		}
		if got := time.Since(t0); got != connector.GoodByeLinger {
			t.Errorf("connector closed after %v, want %v", got, connector.GoodByeLinger)
		}
		fc.next(ctx)
		if got := time.Since(t0); got != connector.GoodByeLinger {
			t.Errorf("reconnected after %v, want at once after closing", got)
		}
		_ = c.Close()
	})
}
