package channel_test

import (
	"context"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
)

// TestFreshID checks command.Command.FreshID as the peer's handler sees it:
// set on a command (or event) the channel gave an id of its own, and on one
// whose caller gave the id and said it is fresh; clear otherwise.
func TestFreshID(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	seen := make(chan command.Command, 8)
	mux := command.NewMux()
	record := func(_ context.Context, c *command.Command) (*command.Reply, error) {
		seen <- *c
		return nil, nil
	}
	mux.RegisterFunc("DO", record)
	mux.RegisterFunc("EVENT", record)
	a, b := embedded.Pipe()
	ca := channel.New(a, nil, channel.Config{})
	cb := channel.New(b, mux, channel.Config{})
	defer func() { _ = ca.Close(); _ = cb.Close() }()

	next := func() command.Command {
		t.Helper()
		select {
		case c := <-seen:
			return c
		case <-ctx.Done():
			t.Fatal("the handler saw no command in time")
			return command.Command{}
		}
	}
	for _, tc := range []struct {
		name      string
		cmd       command.Command
		wantFresh bool
	}{
		{"no id", command.Command{Type: "DO"}, true},
		{"no id, caller says not fresh", command.Command{Type: "DO", FreshID: false}, true},
		{"caller's id", command.Command{ID: "mine", Type: "DO"}, false},
		{"caller's id, caller says fresh", command.Command{ID: "mine-2", Type: "DO", FreshID: true}, true},
	} {
		cmd := tc.cmd
		r, err := ca.Send(ctx, &cmd)
		if err != nil {
			t.Fatalf("%s: Send() = %v", tc.name, err)
		}
		got := next()
		if got.FreshID != tc.wantFresh || got.ID == "" || got.ID != r.CommandID {
			t.Errorf("%s: handler saw id %q FreshID %v (reply to %q), want a non-empty id and FreshID %v", tc.name, got.ID, got.FreshID, r.CommandID, tc.wantFresh)
		}
		if cmd.ID != tc.cmd.ID || cmd.FreshID != tc.cmd.FreshID {
			t.Errorf("%s: Send changed the caller's command: %+v", tc.name, cmd)
		}
	}
	if err := ca.Notify(ctx, &command.Command{Type: "EVENT"}); err != nil {
		t.Fatalf("Notify() = %v", err)
	}
	if got := next(); !got.FreshID || !got.OneWay {
		t.Errorf("event without id: FreshID %v OneWay %v, want both", got.FreshID, got.OneWay)
	}
	if err := ca.Notify(ctx, &command.Command{ID: "ev", Type: "EVENT"}); err != nil {
		t.Fatalf("Notify() = %v", err)
	}
	if got := next(); got.FreshID {
		t.Errorf("event with the caller's id: FreshID set")
	}
}
