package controller_test

import (
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/controller"
)

// Close is bounded as a whole by Config.ShutdownTimeout, however many
// connectors ignore GOOD_BYE: before, it took ceil(N/HealthConcurrency) ×
// GoodByeTimeout (5 rounds of 2 s here). The test runs in a synctest bubble,
// so the bound is checked exactly on the fake clock, without flakiness.
func TestCloseBoundedWithSilentConnectors(t *testing.T) {
	const n = 300
	synctest.Test(t, func(t *testing.T) {
		cfg := fastConfig()
		cfg.GoodByeTimeout = 2 * time.Second
		cfg.HealthConcurrency = 64
		cfg.ShutdownTimeout = time.Second
		cfg.Logger = slog.New(slog.DiscardHandler) // 300 registrations
		h := newHarness(t, cfg)
		conns := make([]*connector, n)
		for i := range conns {
			conns[i] = h.connect(connOpts{target: "t1", silentGoodBye: true})
		}
		synctest.Wait()
		if got := len(h.ctrl.Channels()); got != n {
			t.Fatalf("%d channels registered, want %d", got, n)
		}

		start := time.Now()
		if err := h.ctrl.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		if took := time.Since(start); took > cfg.ShutdownTimeout {
			t.Errorf("Close took %v (fake clock), want at most ShutdownTimeout %v", took, cfg.ShutdownTimeout)
		}
		// Every channel was closed by Close, none left to its connector.
		synctest.Wait()
		asked := 0
		for i, c := range conns {
			select {
			case <-c.ch.Done():
			default:
				t.Fatalf("connector %d: channel still open after Close", i)
			}
			if len(c.goodbyeList()) > 0 {
				asked++
			}
		}
		if asked < cfg.HealthConcurrency {
			t.Errorf("%d connectors were sent GOOD_BYE, want at least the first %d", asked, cfg.HealthConcurrency)
		}
		if got := len(h.ctrl.Channels()); got != 0 {
			t.Errorf("%d channels still registered after Close", got)
		}
	})
}

func TestConfigShutdownTimeout(t *testing.T) {
	if got := controller.DefaultConfig().ShutdownTimeout; got != controller.DefaultShutdownTimeout || got <= 0 {
		t.Errorf("DefaultConfig().ShutdownTimeout = %v, want DefaultShutdownTimeout", got)
	}
	if (controller.Config{ShutdownTimeout: -1}).Validate() == nil {
		t.Errorf("Validate() accepted a negative ShutdownTimeout")
	}
}
