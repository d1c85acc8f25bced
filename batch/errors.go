package batch

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound is returned for a batch id that is not in the store.
	ErrNotFound = errors.New("batch: not found")
	// ErrTooMany is returned when creating a batch for a target that already
	// has Config.MaxUnfinishedPerTarget unfinished batches.
	ErrTooMany = errors.New("batch: too many unfinished batches for the target")
	// ErrExists is returned when creating a batch whose id is taken.
	ErrExists = errors.New("batch: already exists")
	// ErrInvalid is wrapped by every validation failure (see ValidationError)
	// and returned for malformed ops.
	ErrInvalid = errors.New("batch: invalid")
	// ErrConflict is returned for an op that does not match the batch's
	// current state: starting a batch that is not due or not the oldest open
	// batch of its target, or recording a result for an attempt or command
	// that is no longer the current one (for example one sent by a deposed
	// leader). Ops failing with it change nothing.
	ErrConflict = errors.New("batch: conflicting operation")
	// ErrNoChannel must be wrapped by a Sender's error when the target has no
	// channel to send to. The runner then records the attempt as "offline":
	// it does not count against MaxRetry, and the batch is retried as soon as
	// a channel of the target registers.
	ErrNoChannel = errors.New("batch: no channel for target")
	// ErrClosed is returned by Run and the blocking calls of a closed Runner.
	ErrClosed = errors.New("batch: runner closed")
	// ErrRunning is returned by Run when another Run of the same Runner is
	// still executing.
	ErrRunning = errors.New("batch: runner already running")
)

// PlainError is implemented by the errors of a Sender that can say what went
// wrong in plain words, for the operator reading errorDetails: "the
// connector's channel closed before it replied" rather than
// "controller: send X to target Y on channel Z: channel: closed". Outcome
// finds it anywhere in the chain (errors.As) and stores PlainMessage; an
// empty PlainMessage, or an error without one, is stored as err.Error().
// controller.SendError implements it; the batch package does not know the
// channel's errors (it must not import the channel package).
type PlainError interface {
	error
	PlainMessage() string
}

// ValidationError reports a batch that cannot be created, naming the
// offending field by its JSON path (for example "targetId" or
// "commands[2].command.type") so an API can point at it. It wraps ErrInvalid.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("batch: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
