package clusterbench

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/command"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A node delivers the commands other nodes forward to its connectors
// without a goroutine waiting for each (channel.AsyncHandler on its links,
// SendAsync on the connector's channel): with n commands held by a
// connector's handler, sending them through another node's controller runs
// about as many goroutines in the process as sending them through the
// local one. Delivering each on a goroutine of the link, as a plain
// handler does, would add n.
func TestForwardedCommandsHoldNoGoroutineEach(t *testing.T) {
	const n = 200
	h := clustertest.NewHarness(t, 3, discard)
	a := h.Leader()
	other := h.Followers()[0]
	ctrlA, _ := startController(t, a)
	ctrlB, _ := startController(t, other)

	var release atomic.Pointer[chan struct{}]
	held := make(chan struct{}, n)
	mux := command.NewMux()
	mux.RegisterFunc("HOLD", func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		r := *release.Load()
		held <- struct{}{}
		select {
		case <-r:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &command.Reply{Status: command.StatusSucceeded}, nil
	})
	startConnectorMux(t, a, "conn-a", mux)
	waitFor(t, "the channel in B's state", func() bool { return len(channelsOn(other)) == 1 })

	// goroutines sends n HOLD commands at once through send, and returns
	// the process's goroutines once the connector holds them all.
	goroutines := func(what string, send func(context.Context) error) int {
		ch := make(chan struct{})
		release.Store(&ch)
		ctx, cancel := context.WithTimeout(t.Context(), setupTimeout)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				if err := send(ctx); err != nil {
					errs <- err
				}
			})
		}
		for range n {
			select {
			case <-held:
			case err := <-errs:
				t.Fatalf("%s: %v", what, err)
			case <-ctx.Done():
				t.Fatalf("%s: the connector did not get %d commands", what, n)
			}
		}
		g := runtime.NumGoroutine()
		close(ch)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", what, err)
		}
		return g
	}
	hold := func(ctrl interface {
		Send(context.Context, string, *command.Command) (*command.Reply, error)
	}) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := ctrl.Send(ctx, target, &command.Command{Type: "HOLD"})
			return err
		}
	}
	local := goroutines("local", hold(ctrlA))
	forwarded := goroutines("forwarded", hold(ctrlB))
	t.Logf("goroutines with %d commands held: %d sent locally, %d forwarded", n, local, forwarded)
	if forwarded-local >= n/2 {
		t.Errorf("forwarding %d held commands ran %d goroutines more than sending them locally; want far fewer than one each", n, forwarded-local)
	}
}
