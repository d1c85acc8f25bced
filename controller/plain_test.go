package controller_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// TestSendErrorPlainMessage checks the words the batch runner stores as
// errorDetails for each way a send can fail, and that the Go error chain is
// kept for errors.Is/As.
func TestSendErrorPlainMessage(t *testing.T) {
	t.Parallel()
	cmd := &command.Command{ID: "c1", Type: "DEPLOY"}
	local := func(err error) *controller.SendError {
		return &controller.SendError{Command: cmd, TargetID: "t1", ChannelID: "ch-1", Err: err}
	}
	tests := []struct {
		name  string
		err   *controller.SendError
		plain string
		text  string // Error(), when checked
	}{
		{"closed", local(channel.ErrClosed), "the connector's channel closed before it replied",
			`controller: send DEPLOY[c1] to target "t1" on channel ch-1: channel: closed`},
		{"closed, wrapped", local(fmt.Errorf("deliver: %w", channel.ErrClosed)), "the connector's channel closed before it replied", ""},
		{"busy at the connector", local(&channel.BusyError{RetryAfter: 2 * time.Second, Remote: true}), "the connector is busy; retry after 2s", ""},
		{"busy here", local(&channel.BusyError{RetryAfter: 100 * time.Millisecond}),
			"too many commands are awaiting replies on the connector's channel; retry after 100ms", ""},
		{"handler failed", local(&channel.RemoteError{CommandID: "c1", Type: "DEPLOY", Message: "disk full"}), "the connector's handler failed: disk full", ""},
		{"no handler", local(&channel.UnknownCommandError{CommandID: "c1", Type: "DEPLOY", Message: "no handler"}),
			`the connector has no handler for commands of type "DEPLOY"`, ""},
		{"too large", local(fmt.Errorf("%w: 5000000 bytes > 4194304", channel.ErrFrameTooLarge)), "the command is larger than the channel's frame limit", ""},
		{"duplicate id", local(channel.ErrDuplicateID), "a command with the same id is already awaiting a reply on the channel", ""},
		{"timeout", local(context.DeadlineExceeded), "no reply in time", ""},
		{"cancelled", local(context.Canceled), "the send was cancelled", ""},
		{"controller closed", &controller.SendError{Command: cmd, TargetID: "t1", Err: controller.ErrClosed}, "the controller is shutting down",
			`controller: send DEPLOY[c1] to target "t1": controller: closed`},
		{"node unreachable", &controller.SendError{Command: cmd, TargetID: "t1", NodeID: "node-3", Err: fmt.Errorf("forward: %w", state.ErrNodeUnavailable)},
			"the controller node node-3, which holds the target's channel, cannot be reached", ""},
		{"anything else", &controller.SendError{Command: cmd, TargetID: "t1", NodeID: "node-3", Err: errors.New("grpc: something odd")},
			"grpc: something odd", `controller: send DEPLOY[c1] to target "t1" via node node-3: grpc: something odd`},
	}
	for _, tc := range tests {
		if got := tc.err.PlainMessage(); got != tc.plain {
			t.Errorf("%s: PlainMessage() = %q, want %q", tc.name, got, tc.plain)
		}
		if tc.text != "" && tc.err.Error() != tc.text {
			t.Errorf("%s: Error() = %q, want %q", tc.name, tc.err.Error(), tc.text)
		}
		if !errors.Is(tc.err, tc.err.Err) {
			t.Errorf("%s: errors.Is(err, its cause) = false", tc.name)
		}
		// What the batch runner stores.
		if _, msg, _ := batch.Outcome("t1", time.Minute, nil, fmt.Errorf("wrapped: %w", tc.err)); tc.name != "timeout" && msg != tc.plain {
			t.Errorf("%s: batch.Outcome message = %q, want %q", tc.name, msg, tc.plain)
		}
	}
}

// TestSendErrorsArePlain sends through a real controller and channel: the
// errors of Send carry plain words, which batch.Outcome stores.
func TestSendErrorsArePlain(t *testing.T) {
	h := newHarness(t, fastConfig())
	fail := command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) {
		return nil, errors.New("disk full")
	})
	c := h.connect(connOpts{target: "t1", handlers: map[command.Type]command.Handler{"FAIL": fail}})
	h.waitRegistered(c.id(), true)

	tests := []struct {
		typ  command.Type
		want string
	}{
		{"NOPE", `the connector has no handler for commands of type "NOPE"`},
		{"FAIL", "the connector's handler failed: disk full"},
	}
	for _, tc := range tests {
		_, err := h.ctrl.Send(t.Context(), "t1", command.MustCommand(tc.typ, nil))
		var se *controller.SendError
		if !errors.As(err, &se) {
			t.Fatalf("Send(%s) = %v, want a *controller.SendError", tc.typ, err)
		}
		if _, msg, _ := batch.Outcome("t1", time.Minute, nil, err); msg != tc.want {
			t.Errorf("Send(%s): stored message = %q, want %q (error %v)", tc.typ, msg, tc.want, err)
		}
	}
	if _, err := h.ctrl.Send(t.Context(), "t9", command.MustCommand("X", nil)); !errors.Is(err, batch.ErrNoChannel) {
		t.Errorf("Send(no channel) = %v, want batch.ErrNoChannel", err)
	}
}
