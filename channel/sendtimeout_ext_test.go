package channel_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// SendTimeout's timeout replaces Config.DefaultTimeout for a ctx without a
// deadline, an earlier ctx deadline wins, and the peer's handler is given
// what is left: the same errors and command timeouts as Send with a context
// of that deadline.
func TestSendTimeout(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ctxTimeout time.Duration // 0: no deadline
		timeout    time.Duration
		want       time.Duration
	}{
		{"timeout, no ctx deadline", 0, 5 * time.Second, 5 * time.Second},
		{"no timeout: DefaultTimeout", 0, 0, time.Minute},
		{"ctx deadline earlier", 2 * time.Second, 5 * time.Second, 2 * time.Second},
		{"ctx deadline later", 10 * time.Second, 5 * time.Second, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca, seen, ctx := silentPair(t, tc.ctxTimeout)
				start := time.Now()
				_, err := ca.SendTimeout(ctx, &command.Command{Type: command.TypeHealthCheck}, tc.timeout)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("SendTimeout() = %v, want DeadlineExceeded", err)
				}
				if got := time.Since(start); got != tc.want {
					t.Errorf("SendTimeout() gave up after %v, want %v", got, tc.want)
				}
				if got := time.Duration(seen.Load()); got != tc.want {
					t.Errorf("the peer got timeout %v, want %v", got, tc.want)
				}
			})
		})
	}
}

// silentPair is a Channel (DefaultTimeout a minute) whose peer is a
// silentPeer, both closed when the test ends, and the context to send with:
// the test's, with a deadline ctxTimeout from now when positive.
func silentPair(t *testing.T, ctxTimeout time.Duration) (ca *channel.Channel, seen *atomic.Int64, ctx context.Context) {
	a, b := embedded.Pipe()
	ca = channel.New(a, nil, channel.Config{DefaultTimeout: time.Minute})
	cb, seen := silentPeer(b)
	t.Cleanup(func() { _ = cb.Close() })
	t.Cleanup(func() { _ = ca.Close() }) // before the peer's
	ctx = t.Context()
	if ctxTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ctxTimeout)
		t.Cleanup(cancel)
	}
	return ca, seen, ctx
}

// silentPeer is a Channel over b that never answers a command; seen holds
// the Timeout of the last command it got, as it got it.
func silentPeer(b channel.Conn) (cb *channel.Channel, seen *atomic.Int64) {
	seen = new(atomic.Int64)
	cb = channel.New(b, command.HandlerFunc(func(ctx context.Context, c *command.Command) (*command.Reply, error) {
		seen.Store(int64(c.Timeout))
		<-ctx.Done()
		return nil, ctx.Err()
	}), channel.Config{})
	return cb, seen
}

// stuckConn is a Conn whose peer reads nothing: Send of a command blocks
// until the Conn is closed (a transport whose flow-control window is full).
type stuckConn struct {
	channel.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (s *stuckConn) Send(f *channel.Frame) error {
	if f.Command != nil {
		<-s.closed
		return channel.ErrClosed
	}
	return s.Conn.Send(f)
}

func (s *stuckConn) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return s.Conn.Close()
}

// A control command alone in flight is written by its caller (no writer
// goroutine on an idle channel), yet its deadline holds when the write never
// completes: at the deadline the channel dies, which ends the write, and the
// health check fails in time (decision 0021's amendment).
func TestControlWriteStalledAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := embedded.Pipe()
		defer b.Close()
		ca := channel.New(&stuckConn{Conn: a, closed: make(chan struct{})}, nil, channel.Config{})
		defer ca.Close()
		start := time.Now()
		_, err := ca.SendTimeout(t.Context(), &command.Command{Type: command.TypeHealthCheck}, 3*time.Second)
		if err == nil {
			t.Fatal("SendTimeout() on a stuck Conn succeeded")
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("SendTimeout() returned after %v, want the 3s deadline (%v)", got, err)
		}
		if cause := ca.Err(); !errors.Is(cause, channel.ErrClosed) || !strings.Contains(cause.Error(), "blocked past its deadline") {
			t.Errorf("Err() = %v, want the channel closed because its write stalled", cause)
		}
	})
}

// A Send waiting for room in a full write queue still gives up at its
// deadline (its waiter's timer delivers the timeout while it waits), and
// leaves nothing pending.
func TestSendDeadlineWhileWaitingForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := embedded.Pipe()
		stuck := &stuckConn{Conn: a, closed: make(chan struct{})}
		ca := channel.New(stuck, nil, channel.Config{SendQueue: 1})
		cb := channel.New(b, nil, channel.Config{})
		defer cb.Close()
		ctx := t.Context()
		errs := make(chan error, 2)
		for range 2 { // the first is written inline and blocks; the second fills the queue
			go func() {
				_, err := ca.SendTimeout(ctx, &command.Command{Type: "T"}, time.Hour)
				errs <- err
			}()
			synctest.Wait()
		}
		start := time.Now()
		_, err := ca.SendTimeout(ctx, &command.Command{Type: "T"}, 3*time.Second)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SendTimeout() with the queue full = %v, want DeadlineExceeded", err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("SendTimeout() gave up after %v, want 3s", got)
		}
		if n := ca.InFlight(); n != 2 {
			t.Errorf("InFlight() = %d after the timeout, want the 2 others", n)
		}
		_ = ca.Close()
		for range 2 {
			if err := <-errs; !errors.Is(err, channel.ErrClosed) {
				t.Errorf("a Send cut by Close = %v, want ErrClosed", err)
			}
		}
	})
}
