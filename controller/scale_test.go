package controller_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestScalePrimaryNotices connects EXCHANGE_SCALE connectors (two per
// target, in-process, 64 handshakes at a time) and logs how long after the
// first dial every channel is registered, and every connector believes the
// role and epoch the state gives it. It is a measurement, skipped unless
// EXCHANGE_SCALE is set (docs/benchmarks.md, "Scale: primary notices and
// scrapes").
func TestScalePrimaryNotices(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EXCHANGE_SCALE"))
	if n <= 0 {
		t.Skip("set EXCHANGE_SCALE=N to connect N connectors")
	}
	h := newHarness(t, fastConfig())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	conns := make([]*connector, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			conns[i], errs[i] = h.dial(ctx, connOpts{target: fmt.Sprintf("t-%06d", i/2)})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("connector %d: %v", i, err)
		}
		t.Cleanup(conns[i].close)
	}
	dialed := time.Since(start)

	poll := func(what string, cond func() bool) time.Duration {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %v", what, ctx.Err())
			case <-tick.C:
			}
		}
		return time.Since(start)
	}
	registered := poll("all registered", func() bool { return len(h.ctrl.Channels()) == n })
	told := poll("all told", func() bool {
		byID := map[string]bool{}
		epochs := map[string]uint64{}
		for _, info := range h.ctrl.Channels() {
			byID[info.ID] = info.Primary
			epochs[info.ID] = info.Epoch
		}
		for _, c := range conns {
			b, ok := c.belief()
			if !ok || b.Primary != byID[c.id()] || b.Epoch != epochs[c.id()] {
				return false
			}
		}
		return true
	})
	t.Logf("%d connectors: dialed in %v, all registered at %v, all told their role at %v (%v after registration)",
		n, dialed.Round(time.Millisecond), registered.Round(time.Millisecond), told.Round(time.Millisecond),
		(told - registered).Round(time.Millisecond))
}
