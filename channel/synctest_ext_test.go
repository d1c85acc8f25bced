package channel_test

import (
	"context"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// sendOnce runs one Send over a fresh embedded pipe, through the pooled
// result channel and (no ctx deadline) the pooled timer.
func sendOnce(t *testing.T, ctx context.Context) {
	t.Helper()
	a, b := embedded.Pipe()
	ca := channel.New(a, nil, channel.Config{DefaultTimeout: time.Minute})
	cb := channel.New(b, command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, nil)
	}), channel.Config{})
	defer ca.Close()
	defer cb.Close()
	for range 3 {
		if _, err := ca.Send(ctx, &command.Command{Type: "PING"}); err != nil {
			t.Fatalf("Send() = %v", err)
		}
	}
}

// A Channel used inside a testing/synctest bubble must leave nothing behind
// that a Channel outside it picks up: a pooled channel or timer created in a
// bubble crashes the process when used outside ("select on synctest channel
// from outside bubble"). This test dies that way if the pools are global.
func TestSynctestBubbleDoesNotLeak(t *testing.T) {
	// sync.Pool caches per P: with one P, what the bubble put back is what
	// the code outside gets, so a process-wide pool fails deterministically.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	synctest.Test(t, func(t *testing.T) {
		sendOnce(t, context.Background()) // no deadline: the pooled timer path
	})
	sendOnce(t, context.Background())
}
