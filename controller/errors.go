package controller

import (
	"errors"
	"fmt"

	"github.com/exchangekit/exchange/batch"
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
