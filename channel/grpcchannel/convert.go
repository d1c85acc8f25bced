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
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// toProto converts f to its wire form. A frame with neither Command nor Reply
// becomes a Frame with no kind, which the peer rejects as malformed (as it
// would over the embedded twin); a frame with both cannot be expressed on the
// wire and is refused with an error wrapping channel.ErrMalformedFrame. The
// result shares f's payload and metadata (gRPC encodes it before Send
// returns).
func toProto(f *channel.Frame) (*pb.Frame, error) {
	switch {
	case f == nil:
		return nil, fmt.Errorf("grpcchannel: send: %w: nil frame", channel.ErrMalformedFrame)
	case f.Command == nil && f.Reply == nil:
		return &pb.Frame{}, nil
	case f.Command != nil && f.Reply != nil:
		return nil, fmt.Errorf("grpcchannel: send: %w: frame carries both a command and a reply", channel.ErrMalformedFrame)
	case f.Command != nil:
		c := f.Command
		if err := commandUTF8(c); err != nil {
			return nil, err
		}
		return &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{
			Id:        c.ID,
			Type:      string(c.Type),
			Payload:   c.Payload,
			Metadata:  c.Metadata,
			OneWay:    c.OneWay,
			TimeoutMs: durationToMillis(c.Timeout),
		}}}, nil
	default:
		r := f.Reply
		if !utf8.ValidString(r.CommandID) || !utf8.ValidString(string(r.Type)) {
			return nil, fmt.Errorf("grpcchannel: send: %w: reply to %q: command id or type is not valid UTF-8", channel.ErrMalformedFrame, r.CommandID)
		}
		return &pb.Frame{Kind: &pb.Frame_Reply{Reply: &pb.Reply{
			CommandId:    r.CommandID,
			Type:         string(r.Type),
			Status:       pb.Status(r.Status),
			Payload:      r.Payload,
			Error:        strings.ToValidUTF8(r.Error, "\uFFFD"), // human-readable: repair rather than refuse
			RetryAfterMs: durationToMillis(r.RetryAfter),
			Code:         r.Code,
		}}}, nil
	}
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

// fromProto converts one received, non-batch frame. A frame with no kind (or
// a batch nested in a batch) becomes an empty channel.Frame, which
// channel.Frame.Validate reports as malformed, so the Channel closes the
// connection with a clear reason. The result takes ownership of m's payload
// and metadata.
func fromProto(m *pb.Frame) *channel.Frame {
	switch k := m.GetKind().(type) {
	case *pb.Frame_Command:
		c := k.Command
		if c == nil {
			return &channel.Frame{}
		}
		return &channel.Frame{Command: &command.Command{
			ID:       c.Id,
			Type:     command.Type(c.Type),
			Payload:  c.Payload,
			Metadata: c.Metadata,
			OneWay:   c.OneWay,
			Timeout:  millisToDuration(c.TimeoutMs),
		}}
	case *pb.Frame_Reply:
		r := k.Reply
		if r == nil {
			return &channel.Frame{}
		}
		return &channel.Frame{Reply: &command.Reply{
			CommandID:  r.CommandId,
			Type:       command.Type(r.Type),
			Status:     command.Status(r.Status),
			Payload:    r.Payload,
			Error:      r.Error,
			RetryAfter: millisToDuration(r.RetryAfterMs),
			Code:       r.Code,
		}}
	default: // no kind, or a batch where a single frame is required
		return &channel.Frame{}
	}
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
		return fmt.Errorf("grpcchannel: %s: %w: %s", op, channel.ErrFrameTooLarge, msg)
	}
	return fmt.Errorf("grpcchannel: %s: %w: %s: %s", op, channel.ErrClosed, st.Code(), st.Message())
}

// closeStatus is the status a server-side stream ends with when its Conn is
// closed with err (see conn.CloseWithError).
func closeStatus(err error) error {
	switch {
	case err == nil || errors.Is(err, channel.ErrClosed):
		return nil
	case errors.Is(err, channel.ErrMalformedFrame):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, channel.ErrFrameTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	default:
		return status.Error(codes.Aborted, err.Error())
	}
}
