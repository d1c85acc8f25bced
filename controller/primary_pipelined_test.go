package controller_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/command"
)

// TestPrimaryNoticesPipelined: PRIMARY notices are not held to the health
// checks' concurrency (issue 8, point 6). Every connector's PRIMARY handler
// waits until all n connectors have received theirs, which can only happen
// with n notices in flight at once; with HealthConcurrency (2 here) as their
// bound, as before, no notice would ever be answered.
func TestPrimaryNoticesPipelined(t *testing.T) {
	const n = 24
	cfg := fastConfig()
	cfg.HealthConcurrency = 2
	h := newHarness(t, cfg)

	var arrived atomic.Int32 // connectors that received a PRIMARY (each counted once)
	all := make(chan struct{})
	for i := range n {
		var first sync.Once
		block := command.HandlerFunc(func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
			first.Do(func() {
				if arrived.Add(1) == n {
					close(all)
				}
			})
			select {
			case <-all:
			case <-ctx.Done(): // the notice's own deadline (HealthTimeout)
				return nil, ctx.Err()
			}
			return command.Succeeded(cmd, command.PrimaryReplyPayload{})
		})
		h.connect(connOpts{target: fmt.Sprintf("t-%d", i), handlers: map[command.Type]command.Handler{command.TypePrimary: block}})
	}
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-all:
	case <-timer.C:
		t.Fatalf("%d of %d PRIMARY notices in flight at once after %v; want all", arrived.Load(), n, testTimeout)
	}
	// Every notice answered and taken as told: nothing left pending.
	h.waitFor("no PRIMARY notice pending", func() bool { return h.metrics.count("pending") == 0 })
}
