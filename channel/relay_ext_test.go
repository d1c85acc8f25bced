package channel_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// A handler that relays its command on another channel with its own context
// (as a cluster node serves a forwarded command) has that Send end at the
// sender's deadline, or when the handler's channel dies, whichever comes
// first, like any Send with a context that ends then. (The Send waits on
// the handler's deadline and channel directly, without asking the handler's
// context for its Done channel.)
func TestRelayWithHandlerContext(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the sender's
		kill    bool          // close the relaying channel while the relay waits
		want    time.Duration // when the relay's Send returns
	}{
		{"SendersDeadline", 3 * time.Second, false, 3 * time.Second},
		{"ChannelDies", time.Minute, true, 0}, // at once: no time passes on the bubble's clock
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// The far end: a peer that never answers.
				y1, y2 := embedded.Pipe()
				far := channel.New(y2, command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				}), channel.Config{})
				next := channel.New(y1, nil, channel.Config{DefaultTimeout: time.Hour})
				defer far.Close()
				defer next.Close()

				type relayed struct {
					err  error
					took time.Duration
				}
				relays := make(chan relayed, 1)
				x1, x2 := embedded.Pipe()
				relay := channel.New(x2, command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
					start := time.Now()
					_, err := next.Send(ctx, &command.Command{Type: "RELAYED"})
					relays <- relayed{err, time.Since(start)}
					return nil, err
				}), channel.Config{})
				sender := channel.New(x1, nil, channel.Config{})
				defer sender.Close()
				defer relay.Close()

				go func() { _, _ = sender.SendTimeout(t.Context(), &command.Command{Type: "RELAY"}, tc.timeout) }()
				if tc.kill {
					synctest.Wait() // every goroutine blocked: the relay is waiting for its reply
					_ = relay.Close()
				}
				r := <-relays
				if r.took != tc.want {
					t.Errorf("the relay's Send returned after %v, want %v", r.took, tc.want)
				}
				switch {
				case !tc.kill && !errors.Is(r.err, context.DeadlineExceeded):
					t.Errorf("the relay's Send = %v, want DeadlineExceeded", r.err)
				case tc.kill && !errors.Is(r.err, context.Canceled):
					t.Errorf("the relay's Send = %v, want Canceled (its handler's context ended with its channel)", r.err)
				}
			})
		})
	}
}
