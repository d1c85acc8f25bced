package channel

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/exchangekit/exchange/command"
)

var (
	// ErrClosed is returned by operations on a closed Channel, Conn or
	// Listener, and by calls pending when the channel closed.
	ErrClosed = errors.New("channel: closed")
	// ErrUnknownCommand is wrapped by UnknownCommandError: the peer has no
	// handler for the command's type.
	ErrUnknownCommand = errors.New("channel: unknown command")
	// ErrBusy is wrapped by BusyError: too many commands are in flight.
	ErrBusy = errors.New("channel: busy")
	// ErrMalformedFrame reports a frame that breaks the protocol.
	ErrMalformedFrame = errors.New("channel: malformed frame")
	// ErrFrameTooLarge reports a frame over the size limit.
	ErrFrameTooLarge = errors.New("channel: frame too large")
	// ErrDuplicateID reports a Send whose command id is already in flight on
	// the channel.
	ErrDuplicateID = errors.New("channel: command id already in flight")
	// ErrHelloRejected is wrapped by HelloRejectedError.
	ErrHelloRejected = errors.New("channel: hello rejected")
	// ErrLimitExceeded reports a channel refused by a limit of the peer
	// (connections, handshakes in flight, failed HELLOs from one source)
	// rather than by a decision about this connector: retrying later, with
	// backoff, is expected to succeed. The gRPC twin carries it as
	// RESOURCE_EXHAUSTED.
	ErrLimitExceeded = errors.New("channel: limit exceeded")
	// ErrProtocol reports a handshake that broke the protocol (for example a
	// first frame that is not HELLO).
	ErrProtocol = errors.New("channel: protocol violation")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedFrame, fmt.Sprintf(format, args...))
}

// RemoteError is returned by Send when the peer's handler failed (returned an
// error or panicked) instead of answering, or when its answer could not be
// sent (larger than the frame limit). It is distinct from local errors, like
// net/rpc's ServerError; the channel stays up.
type RemoteError struct {
	CommandID string
	Type      command.Type
	Message   string
	// Reply is the NO_REPLY reply as received.
	Reply *command.Reply
}

// Error describes the remote failure.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("channel: remote handler for %s[%s] failed: %s", e.Type, e.CommandID, e.Message)
}

// UnknownCommandError is returned by Send when the peer has no handler for the
// command's type.
type UnknownCommandError struct {
	CommandID string
	Type      command.Type
	// Message is the error text of the peer's UNKNOWN reply.
	Message string
}

// Error names the unknown type. (The peer's own words are in Message.)
func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("channel: peer has no handler for command type %q", e.Type)
}

// Unwrap returns ErrUnknownCommand.
func (e *UnknownCommandError) Unwrap() error { return ErrUnknownCommand }

// BusyError is returned by Send when the command could not be accepted because
// too many are in flight, locally or at the peer. RetryAfter says when to try
// again.
type BusyError struct {
	RetryAfter time.Duration
	// Remote is true when the peer rejected the command, false when the local
	// in-flight bound did.
	Remote bool
}

// Error says which limit was hit and when to retry.
func (e *BusyError) Error() string {
	why := "local in-flight limit reached"
	if e.Remote {
		why = "peer's handler limit reached"
	}
	return fmt.Sprintf("channel: busy (%s), retry after %s", why, e.RetryAfter)
}

// Unwrap returns ErrBusy.
func (e *BusyError) Unwrap() error { return ErrBusy }

// HelloRejectedError is returned to a connector whose HELLO the controller
// refused (bad token, unknown target, …). Retrying will not help.
type HelloRejectedError struct {
	Reason string
	// Code is the reply's code: 400 for a malformed HELLO (one over the
	// identity limits of package command included), 401 for one refused
	// by authentication; 0 when the controller gave none.
	Code int32
}

// Error gives the controller's reason.
func (e *HelloRejectedError) Error() string { return "channel: hello rejected: " + e.Reason }

// Unwrap returns ErrHelloRejected.
func (e *HelloRejectedError) Unwrap() error { return ErrHelloRejected }

// CloseCause says why a channel was closed on purpose. Pass one to
// Channel.CloseWithCause; Channel.Err then wraps it (and ErrClosed), and
// CloseReason reads it back.
type CloseCause struct {
	// Reason says why in plain words: "health check failed", "shutdown
	// (controller closing)", "evicted by take-over", ….
	Reason string
	// Detail adds specifics, such as why the health check failed; it may be
	// empty.
	Detail string
	// Abnormal marks closes worth a warning (a health check failed, for
	// example), as opposed to those that happen in normal operation.
	Abnormal bool
}

// Error gives the reason and, if any, the detail.
func (e *CloseCause) Error() string {
	if e.Detail == "" {
		return e.Reason
	}
	return e.Reason + ": " + e.Detail
}

// CloseReason describes in plain words why a channel died, given its Err, and
// reports whether that was abnormal. A CloseCause gives its own words; a
// connection that ended gives "peer gone (stream ended)"; a plain Close gives
// "closed locally"; anything else (a broken connection, a protocol error) is
// abnormal and described by the error itself. It returns "" for a nil err.
func CloseReason(err error) (reason string, abnormal bool) {
	var cc *CloseCause
	var cerr *connError
	switch {
	case err == nil:
		return "", false
	case errors.As(err, &cc):
		return cc.Error(), cc.Abnormal
	case errors.As(err, &cerr):
		if errors.Is(cerr.err, io.EOF) || errors.Is(cerr.err, ErrClosed) {
			return "peer gone (stream ended)", false
		}
		return "connection lost: " + cerr.Error(), true
	case errors.Is(err, ErrMalformedFrame), errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrProtocol):
		return "protocol error: " + err.Error(), true
	case errors.Is(err, ErrClosed):
		return "closed locally", false
	}
	return err.Error(), true
}

// connError is why the channel died under its reader or writer: Conn.Recv
// or Conn.Send failed (op is "read" or "write").
type connError struct {
	op  string
	err error
}

func (e *connError) Error() string { return e.op + ": " + e.err.Error() }
func (e *connError) Unwrap() error { return e.err }
