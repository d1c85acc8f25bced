package management

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// The errors handlers return; httpError turns them (and the typed errors of
// the controller, channel and batch packages) into HTTP statuses.
var (
	errUnauthorized    = errors.New("missing or invalid bearer token")
	errBatchesDisabled = errors.New("batches are not enabled on this controller")
)

// notFoundError is a 404 with the reference's message.
type notFoundError struct{ message string }

func (e *notFoundError) Error() string { return e.message }

// badRequestError is a 400 naming the offending field or query parameter.
type badRequestError struct {
	field  string
	reason string
}

func (e *badRequestError) Error() string { return fmt.Sprintf("invalid %s: %s", e.field, e.reason) }

// notReadyError is a 503 from Config.Ready.
type notReadyError struct{ err error }

func (e *notReadyError) Error() string { return "not ready: " + e.err.Error() }
func (e *notReadyError) Unwrap() error { return e.err }

// sendError gives context to a failed Send.
type sendError struct {
	target string
	cmd    *command.Command
	err    error
}

func (e *sendError) Error() string {
	return fmt.Sprintf("send %s to target [%s]: %v", e.cmd, e.target, e.err)
}
func (e *sendError) Unwrap() error { return e.err }

// batchError gives context to a failed batch operation.
type batchError struct {
	id  string
	err error
}

func (e *batchError) Error() string { return fmt.Sprintf("batch [%s]: %v", e.id, e.err) }
func (e *batchError) Unwrap() error { return e.err }

// httpError maps an error to its HTTP status and message, and the Retry-After
// delay when there is one. It is the only place that decides statuses.
func httpError(err error) (code int, message string, retryAfter time.Duration) {
	var (
		notFound   *notFoundError
		badRequest *badRequestError
		notReady   *notReadyError
		tooLarge   *http.MaxBytesError
		he         *echo.HTTPError
		noChannel  *controller.NoChannelError
		remote     *channel.RemoteError
		unknown    *channel.UnknownCommandError
		busy       *channel.BusyError
		invalid    *batch.ValidationError
		send       *sendError
		batchErr   *batchError
		status     *statusError
	)
	what, batchID := "the request", ""
	if errors.As(err, &send) {
		what = fmt.Sprintf("command [%s, %s] sent to target [%s]", send.cmd.Type, send.cmd.ID, send.target)
	}
	if errors.As(err, &batchErr) {
		batchID = batchErr.id
	}
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large (limit %d bytes)", tooLarge.Limit), 0
	case errors.As(err, &status):
		return status.code, status.message, 0
	case errors.As(err, &badRequest):
		return http.StatusBadRequest, badRequest.Error(), 0
	case errors.As(err, &notFound):
		return http.StatusNotFound, notFound.message, 0
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, err.Error(), 0
	case errors.Is(err, errBatchesDisabled):
		return http.StatusNotImplemented, err.Error(), 0
	case errors.As(err, &notReady):
		return http.StatusServiceUnavailable, notReady.Error(), 0
	case errors.As(err, &he):
		msg, ok := he.Message.(string)
		if !ok {
			msg = http.StatusText(he.Code)
		}
		return he.Code, msg, 0
	case errors.As(err, &noChannel):
		return http.StatusNotFound, fmt.Sprintf("No channel available for the target [%s]", noChannel.TargetID), 0
	case errors.Is(err, controller.ErrNoChannel):
		return http.StatusNotFound, fmt.Sprintf("No channel available for %s", what), 0
	case errors.Is(err, batch.ErrNotFound):
		return http.StatusNotFound, fmt.Sprintf("No batch found for the given id [%s]", batchID), 0
	case errors.Is(err, batch.ErrTooMany):
		return http.StatusTooManyRequests, fmt.Sprintf("Too many unfinished batches for the target of batch [%s]: let them end, or cancel some", batchID), 0
	case errors.Is(err, batch.ErrExists):
		return http.StatusConflict, fmt.Sprintf("A batch already exists with the id [%s]", batchID), 0
	case errors.As(err, &invalid):
		return http.StatusBadRequest, (&badRequestError{"field " + requestField(invalid.Field), invalid.Reason}).Error(), 0
	case errors.Is(err, batch.ErrInvalid):
		return http.StatusBadRequest, fmt.Sprintf("invalid batch: %v", err), 0
	case errors.Is(err, batch.ErrClosed):
		return http.StatusServiceUnavailable, "The batch runner is shutting down", 0
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, fmt.Sprintf("No reply received in time for %s", what), 0
	case errors.As(err, &unknown):
		return http.StatusBadGateway, fmt.Sprintf("The connector has no handler for %s: %s", what, unknown.Message), 0
	case errors.As(err, &remote):
		return http.StatusBadGateway, fmt.Sprintf("The connector failed to handle %s: %s", what, remote.Message), 0
	case errors.As(err, &busy):
		return http.StatusServiceUnavailable, fmt.Sprintf("The channel is busy, retry %s after %s", what, busy.RetryAfter), busy.RetryAfter
	case errors.Is(err, channel.ErrFrameTooLarge):
		cause := err
		if send != nil {
			cause = send.err
		}
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("Too large for the channel: %s: %v", what, cause), 0
	case errors.Is(err, channel.ErrClosed):
		return http.StatusBadGateway, fmt.Sprintf("The channel closed before replying to %s", what), 0
	case errors.Is(err, controller.ErrClosed), errors.Is(err, state.ErrClosed):
		return http.StatusServiceUnavailable, "The controller is shutting down", 0
	case errors.Is(err, controller.ErrForwardingUnavailable):
		// The channel is on another node that cannot be reached (it died,
		// and the leader has not removed its channels yet): retry.
		return http.StatusServiceUnavailable, fmt.Sprintf("The node holding the channel for %s is unreachable: %v", what, err), 0
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, fmt.Sprintf("Canceled: %s", what), 0
	default:
		return http.StatusInternalServerError, "internal error: " + err.Error(), 0
	}
}

// requestField turns the path of a batch field ("commands[2].command.type")
// into its path in a BatchRequest body ("commands[2].type").
func requestField(f string) string {
	f = strings.Replace(f, "].command.", "].", 1)
	if strings.HasSuffix(f, "].command") {
		f = strings.TrimSuffix(f, ".command")
	}
	return f
}

// retryAfterSeconds renders a Retry-After header value: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return fmt.Sprint(max(1, int64(math.Ceil(d.Seconds()))))
}
