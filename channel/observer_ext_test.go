package channel_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// recordingObserver records what a Channel tells its Observer.
type recordingObserver struct {
	mu      sync.Mutex
	sent    []error
	handled []command.Status
	done    chan struct{} // receives a value per Handled call
}

func (o *recordingObserver) Sent(_ command.Type, d time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d < 0 {
		err = errors.New("negative duration")
	}
	o.sent = append(o.sent, err)
}

func (o *recordingObserver) Handled(_ command.Type, _ time.Duration, s command.Status) {
	o.mu.Lock()
	o.handled = append(o.handled, s)
	o.mu.Unlock()
	o.done <- struct{}{}
}

func TestObserver(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	a, b := embedded.Pipe()
	sender := &recordingObserver{done: make(chan struct{}, 8)}
	handler := &recordingObserver{done: make(chan struct{}, 8)}
	mux := command.NewMux()
	mux.RegisterFunc("OK", func(context.Context, *command.Command) (*command.Reply, error) { return nil, nil })
	mux.RegisterFunc("NO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Failed(c, "no"), nil
	})
	ca := channel.New(a, nil, channel.Config{Observer: sender})
	defer ca.Close()
	cb := channel.New(b, mux, channel.Config{Observer: handler})
	defer cb.Close()

	for _, typ := range []command.Type{"OK", "NO", "MISSING"} {
		_, _ = ca.Send(ctx, &command.Command{Type: typ})
	}
	_, _ = ca.Send(ctx, nil) // a refused Send is observed too
	for range 3 {
		select {
		case <-handler.done:
		case <-ctx.Done():
			t.Fatal("Handled not called for every command")
		}
	}

	sender.mu.Lock()
	defer sender.mu.Unlock()
	if len(sender.sent) != 4 || sender.sent[0] != nil || sender.sent[1] != nil || sender.sent[2] == nil || sender.sent[3] == nil {
		t.Errorf("Sent errors = %v, want [nil nil <unknown command> <malformed>]", sender.sent)
	}
	handler.mu.Lock()
	defer handler.mu.Unlock()
	want := []command.Status{command.StatusSucceeded, command.StatusError, command.StatusError}
	if len(handler.handled) != len(want) {
		t.Fatalf("Handled statuses = %v, want %v", handler.handled, want)
	}
	for i := range want {
		if handler.handled[i] != want[i] {
			t.Errorf("Handled statuses = %v, want %v", handler.handled, want)
			break
		}
	}
}
