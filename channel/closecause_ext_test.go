package channel_test

import (
	"errors"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
)

func TestCloseReason(t *testing.T) {
	t.Parallel()
	const wait = 10 * time.Second
	t.Run("cause", func(t *testing.T) {
		a, b := embedded.Pipe()
		ca, cb := channel.New(a, nil, channel.Config{}), channel.New(b, nil, channel.Config{})
		defer cb.Close()
		cause := &channel.CloseCause{Reason: "health check failed", Detail: "timeout: no reply within 1s", Abnormal: true}
		_ = ca.CloseWithCause(cause)
		err := ca.Err()
		if !errors.Is(err, channel.ErrClosed) {
			t.Errorf("Err() = %v, want it to wrap ErrClosed", err)
		}
		var got *channel.CloseCause
		if !errors.As(err, &got) || got != cause {
			t.Errorf("Err() = %v, want it to wrap the cause", err)
		}
		reason, abnormal := channel.CloseReason(err)
		if reason != "health check failed: timeout: no reply within 1s" || !abnormal {
			t.Errorf("CloseReason() = %q, %v; want the cause's words, abnormal", reason, abnormal)
		}
		// The peer sees its stream end.
		select {
		case <-cb.Done():
		case <-time.After(wait):
			t.Fatal("peer never saw the close")
		}
		if reason, abnormal := channel.CloseReason(cb.Err()); reason != "peer gone (stream ended)" || abnormal {
			t.Errorf("peer's CloseReason() = %q, %v; want peer gone, normal (Err %v)", reason, abnormal, cb.Err())
		}
	})
	t.Run("first cause wins", func(t *testing.T) {
		a, _ := embedded.Pipe()
		ca := channel.New(a, nil, channel.Config{})
		_ = ca.Close()
		_ = ca.CloseWithCause(&channel.CloseCause{Reason: "late"})
		if reason, abnormal := channel.CloseReason(ca.Err()); reason != "closed locally" || abnormal {
			t.Errorf("CloseReason() = %q, %v; want closed locally, normal", reason, abnormal)
		}
	})
	if reason, _ := channel.CloseReason(nil); reason != "" {
		t.Errorf("CloseReason(nil) = %q, want empty", reason)
	}
}
