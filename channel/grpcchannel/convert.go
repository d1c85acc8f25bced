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
// returns). The three messages of a frame are allocated together.
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
		box := &struct {
			f pb.Frame
			k pb.Frame_Command
			c pb.Command
		}{}
		box.c.Id = c.ID
		box.c.Type = string(c.Type)
		box.c.Payload = c.Payload
		box.c.Metadata = c.Metadata
		box.c.OneWay = c.OneWay
		box.c.TimeoutMs = durationToMillis(c.Timeout)
		box.k.Command = &box.c
		box.f.Kind = &box.k
		return &box.f, nil
	default:
		r := f.Reply
		if !utf8.ValidString(r.CommandID) || !utf8.ValidString(string(r.Type)) {
			return nil, fmt.Errorf("grpcchannel: send: %w: reply to %q: command id or type is not valid UTF-8", channel.ErrMalformedFrame, r.CommandID)
		}
		box := &struct {
			f pb.Frame
			k pb.Frame_Reply
			r pb.Reply
		}{}
		box.r.CommandId = r.CommandID
		box.r.Type = string(r.Type)
		box.r.Status = pb.Status(r.Status)
		box.r.Payload = r.Payload
		box.r.Error = strings.ToValidUTF8(r.Error, "\uFFFD") // human-readable: repair rather than refuse
		box.r.RetryAfterMs = durationToMillis(r.RetryAfter)
		box.r.Code = r.Code
		box.k.Reply = &box.r
		box.f.Kind = &box.k
		return &box.f, nil
	}
}

// batchToProto converts fs to one batch Frame, or fails as toProto does for
// the first frame that cannot be converted.
func batchToProto(fs []*channel.Frame) (*pb.Frame, error) {
	box := &struct {
		f pb.Frame
		k pb.Frame_Batch
		b pb.Frames
	}{}
	box.b.Frames = make([]*pb.Frame, len(fs))
	for i, f := range fs {
		m, err := toProto(f)
		if err != nil {
			return nil, err
		}
		box.b.Frames[i] = m
	}
	box.k.Batch = &box.b
	box.f.Kind = &box.k
	return &box.f, nil
}

// Upper bounds of the encoding of protobuf fields (convert.go's frames have
// no nested messages deeper than a batch): a tag takes at most 2 bytes here,
// a varint at most 10.
const (
	fieldBound   = 2 + 10 // tag, and a varint or a length
	messageBound = 2 + 10 // tag and length of an embedded message
)

// sizeBound returns an upper bound of the encoded size of toProto(f), cheap
// to compute (see conn.overLimit).
func sizeBound(f *channel.Frame) int {
	n := messageBound
	if c := f.Command; c != nil {
		n += 6*fieldBound + len(c.ID) + len(c.Type) + len(c.Payload)
		for k, v := range c.Metadata {
			n += messageBound + 2*fieldBound + len(k) + len(v)
		}
	}
	if r := f.Reply; r != nil {
		// An invalid UTF-8 byte of Error becomes U+FFFD, 3 bytes.
		n += 7*fieldBound + len(r.CommandID) + len(r.Type) + len(r.Payload) + 3*len(r.Error)
	}
	return n
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
// and metadata; a frame and its command or reply are allocated together.
func fromProto(m *pb.Frame) *channel.Frame {
	switch k := m.GetKind().(type) {
	case *pb.Frame_Command:
		c := k.Command
		if c == nil {
			return &channel.Frame{}
		}
		box := &struct {
			f channel.Frame
			c command.Command
		}{c: command.Command{
			ID:       c.Id,
			Type:     command.Type(c.Type),
			Payload:  c.Payload,
			Metadata: c.Metadata,
			OneWay:   c.OneWay,
			Timeout:  millisToDuration(c.TimeoutMs),
		}}
		box.f.Command = &box.c
		return &box.f
	case *pb.Frame_Reply:
		r := k.Reply
		if r == nil {
			return &channel.Frame{}
		}
		box := &struct {
			f channel.Frame
			r command.Reply
		}{r: command.Reply{
			CommandID:  r.CommandId,
			Type:       command.Type(r.Type),
			Status:     command.Status(r.Status),
			Payload:    r.Payload,
			Error:      r.Error,
			RetryAfter: millisToDuration(r.RetryAfterMs),
			Code:       r.Code,
		}}
		box.f.Reply = &box.r
		return &box.f
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
