package grpcchannel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// checkFrame refuses a frame that cannot be sent, before anything is
// encoded, with an error wrapping channel.ErrMalformedFrame: a nil frame, a
// frame with both a command and a reply (not expressible on the wire), and
// string fields that are not valid UTF-8 (protobuf strings must be; the
// error text of a reply is repaired instead, see wireError). A frame with
// neither kind is sent as a Frame with no kind, which the peer rejects as
// malformed (as it would over the embedded twin).
func checkFrame(f *channel.Frame) error {
	switch {
	case f == nil:
		return fmt.Errorf("grpcchannel: send: %w: nil frame", channel.ErrMalformedFrame)
	case f.Command != nil && f.Reply != nil:
		return fmt.Errorf("grpcchannel: send: %w: frame carries both a command and a reply", channel.ErrMalformedFrame)
	case f.Command != nil:
		return commandUTF8(f.Command)
	case f.Reply != nil:
		if r := f.Reply; !utf8.ValidString(r.CommandID) || !utf8.ValidString(string(r.Type)) {
			return fmt.Errorf("grpcchannel: send: %w: reply to %q: command id or type is not valid UTF-8", channel.ErrMalformedFrame, r.CommandID)
		}
	}
	return nil
}

// commandUTF8 checks the string fields of c: protobuf strings must be valid
// UTF-8, and gRPC would otherwise fail the whole stream when it encodes the
// frame. The check lets Send refuse just this frame, with an error wrapping
// channel.ErrMalformedFrame, and keep the conn usable.
func commandUTF8(c *command.Command) error {
	bad := ""
	switch {
	case !utf8.ValidString(c.ID):
		bad = "id"
	case !utf8.ValidString(string(c.Type)):
		bad = "type"
	default:
		for k, v := range c.Metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				bad = "metadata"
				break
			}
		}
	}
	if bad != "" {
		return fmt.Errorf("grpcchannel: send: %w: command %q: %s is not valid UTF-8", channel.ErrMalformedFrame, c.ID, bad)
	}
	return nil
}

// durationToMillis rounds d up to whole milliseconds, so that a short but
// positive timeout never becomes 0 ("unknown") on the wire.
func durationToMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// millisToDuration converts a wire duration; negative values mean none and
// absurdly large ones are clamped instead of overflowing.
func millisToDuration(ms int64) time.Duration {
	switch {
	case ms <= 0:
		return 0
	case ms > math.MaxInt64/int64(time.Millisecond):
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// translate maps a gRPC stream error to the transport-neutral errors of the
// channel package, so callers see the same errors from both twins:
//
//	io.EOF, CANCELLED, UNAVAILABLE and any other end of stream → channel.ErrClosed
//	INVALID_ARGUMENT (the peer's protocol complaint)           → channel.ErrMalformedFrame
//	INTERNAL "failed to unmarshal" (undecodable message)       → channel.ErrMalformedFrame
//	RESOURCE_EXHAUSTED (a limit of the server refused us)      → channel.ErrLimitExceeded
//	RESOURCE_EXHAUSTED (a message over a size limit)           → channel.ErrFrameTooLarge
//
// The status message is kept in the text; the gRPC status itself is not
// wrapped (codes stay at this edge).
func translate(op string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("grpcchannel: %s: stream ended by peer: %w", op, channel.ErrClosed)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("grpcchannel: %s: %w: %w", op, channel.ErrClosed, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("grpcchannel: %s: %w: %w", op, channel.ErrClosed, err)
	}
	switch msg := st.Message(); st.Code() {
	case codes.InvalidArgument:
		return fmt.Errorf("grpcchannel: %s: %w: peer says: %s", op, channel.ErrMalformedFrame, msg)
	case codes.Internal:
		if strings.Contains(msg, "unmarshal") {
			return fmt.Errorf("grpcchannel: %s: %w: %s", op, channel.ErrMalformedFrame, msg)
		}
	case codes.ResourceExhausted:
		if detail, ok := limitDetail(msg); ok {
			return fmt.Errorf("grpcchannel: %s: %w: %s", op, channel.ErrLimitExceeded, detail)
		}
		return fmt.Errorf("grpcchannel: %s: %w: %s", op, channel.ErrFrameTooLarge, msg)
	}
	return fmt.Errorf("grpcchannel: %s: %w: %s: %s", op, channel.ErrClosed, st.Code(), st.Message())
}

// limitDetail reports whether a RESOURCE_EXHAUSTED message is a refusal by
// one of the peer's limits (its text carries channel.ErrLimitExceeded's),
// rather than a message over a size limit, and returns what follows that
// text: the limit and its value.
func limitDetail(msg string) (string, bool) {
	marker := channel.ErrLimitExceeded.Error() + ": "
	i := strings.Index(msg, marker)
	if i < 0 {
		return "", false
	}
	return msg[i+len(marker):], true
}

// errSilent ends a stream that sent nothing within the HandshakeTimeout.
var errSilent = errors.New("stream silent")

// closeStatus is the status a server-side stream ends with when its Conn is
// closed with err (see conn.CloseWithError).
func closeStatus(err error) error {
	switch {
	case err == nil || errors.Is(err, channel.ErrClosed):
		return nil
	case errors.Is(err, channel.ErrLimitExceeded):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, errSilent):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, channel.ErrMalformedFrame):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, channel.ErrFrameTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	default:
		return status.Error(codes.Aborted, err.Error())
	}
}
