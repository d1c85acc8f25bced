package metrics

import (
	"context"
	"errors"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/controller"
)

// Outcome label values of exchange_commands_total.
const (
	OutcomeOK             = "ok"
	OutcomeTimeout        = "timeout"
	OutcomeClosed         = "closed"
	OutcomeNoChannel      = "no_channel"
	OutcomeUnknownCommand = "unknown_command"
	OutcomeRemoteError    = "remote_error"
	OutcomeBusy           = "busy"
	OutcomeError          = "error"
)

// Outcome classifies the error returned by a Send: nil is OutcomeOK, and each
// typed error of the channel and controller packages has its own value.
// Anything else (including a cancelled context) is OutcomeError.
func Outcome(err error) string {
	var remote *channel.RemoteError
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, controller.ErrNoChannel):
		return OutcomeNoChannel
	case errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimeout
	case errors.Is(err, channel.ErrBusy):
		return OutcomeBusy
	case errors.Is(err, channel.ErrUnknownCommand):
		return OutcomeUnknownCommand
	case errors.As(err, &remote):
		return OutcomeRemoteError
	case errors.Is(err, channel.ErrClosed), errors.Is(err, controller.ErrClosed):
		return OutcomeClosed
	default:
		return OutcomeError
	}
}
