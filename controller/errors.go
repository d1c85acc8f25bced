package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

var (
	// ErrNoChannel is returned by Send when the target has no registered
	// channel anywhere (or, for SendPrimary, no primary).
	ErrNoChannel = errors.New("controller: no channel for target")
	// ErrClosed is returned by operations on a closed Controller.
	ErrClosed = errors.New("controller: closed")
	// ErrUnauthenticated is returned by authenticators to refuse a HELLO.
	ErrUnauthenticated = errors.New("controller: unauthenticated")
	// ErrForwardingUnavailable is wrapped by Send's error when the channel
	// chosen is held by a node that cannot be reached. It is
	// state.ErrNodeUnavailable, the error of Cluster.Forward.
	ErrForwardingUnavailable = state.ErrNodeUnavailable
)

// NoChannelError is returned by Send when there is no channel to send to. It
// wraps ErrNoChannel.
type NoChannelError struct {
	TargetID string
	Primary  bool // SendPrimary: the target has channels but no primary, or none at all
}

func (e *NoChannelError) Error() string {
	if e.Primary {
		return fmt.Sprintf("controller: no primary channel for target %q", e.TargetID)
	}
	return fmt.Sprintf("controller: no channel for target %q", e.TargetID)
}

// Unwrap returns ErrNoChannel.
func (e *NoChannelError) Unwrap() error { return ErrNoChannel }

// Is reports that a NoChannelError is also batch.ErrNoChannel, so the batch
// runner treats an offline target as "wait for a channel" (no retry used up),
// not as a failed attempt.
func (e *NoChannelError) Is(target error) bool { return target == batch.ErrNoChannel }

// SendError is the error of Send and SendPrimary for a command that could
// not be delivered or answered (all but *NoChannelError): it names the
// command, the target and the channel (or the node it was forwarded to),
// wraps the cause for errors.Is and errors.As, and says what went wrong in
// plain words with PlainMessage, which the batch runner stores as a batch's
// errorDetails (it implements batch.PlainError).
type SendError struct {
	Command  *command.Command
	TargetID string
	// ChannelID is the local channel the command was sent on, if any.
	ChannelID string
	// NodeID is the node the command was forwarded to, if any.
	NodeID string
	// Err is the cause: a channel error, context.DeadlineExceeded,
	// ErrForwardingUnavailable, ErrClosed, ...
	Err error
}

func (e *SendError) Error() string {
	switch {
	case e.ChannelID != "":
		return fmt.Sprintf("controller: send %s to target %q on channel %s: %v", e.Command, e.TargetID, e.ChannelID, e.Err)
	case e.NodeID != "":
		return fmt.Sprintf("controller: send %s to target %q via node %s: %v", e.Command, e.TargetID, e.NodeID, e.Err)
	}
	return fmt.Sprintf("controller: send %s to target %q: %v", e.Command, e.TargetID, e.Err)
}

// Unwrap returns the cause.
func (e *SendError) Unwrap() error { return e.Err }

// PlainMessage says what went wrong in words for an operator, from the
// channel's typed errors: "the connector's channel closed before it
// replied", "the connector is busy; retry after 2s", "the connector's
// handler failed: <its message>", ... A cause it does not know is given as
// its own text, without the controller's prefix.
func (e *SendError) PlainMessage() string {
	var (
		remote  *channel.RemoteError
		unknown *channel.UnknownCommandError
		busy    *channel.BusyError
	)
	switch err := e.Err; {
	case errors.As(err, &remote):
		return "the connector's handler failed: " + remote.Message
	case errors.As(err, &unknown):
		return fmt.Sprintf("the connector has no handler for commands of type %q", unknown.Type)
	case errors.As(err, &busy) && busy.Remote:
		return fmt.Sprintf("the connector is busy; retry after %s", busy.RetryAfter)
	case errors.As(err, &busy):
		return fmt.Sprintf("too many commands are awaiting replies on the connector's channel; retry after %s", busy.RetryAfter)
	case errors.Is(err, channel.ErrFrameTooLarge):
		return "the command is larger than the channel's frame limit"
	case errors.Is(err, channel.ErrDuplicateID):
		return "a command with the same id is already awaiting a reply on the channel"
	case errors.Is(err, channel.ErrClosed):
		return "the connector's channel closed before it replied"
	case errors.Is(err, ErrForwardingUnavailable):
		return fmt.Sprintf("the controller node %s, which holds the target's channel, cannot be reached", e.NodeID)
	case errors.Is(err, ErrClosed):
		return "the controller is shutting down"
	case errors.Is(err, context.DeadlineExceeded):
		return "no reply in time"
	case errors.Is(err, context.Canceled):
		return "the send was cancelled"
	case err == nil:
		return ""
	}
	return e.Err.Error()
}

var _ batch.PlainError = (*SendError)(nil)
