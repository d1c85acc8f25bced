package grpcchannel

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// The conversion between channel.Frame and the generated exchangepb messages
// that the twin used with gRPC's standard proto codec, before the
// hand-written codec (codec_wire.go). It stays as the reference the codec is
// proved equivalent to (codec_test.go): toProto + proto.Marshal, and
// proto.Unmarshal + fromProto.

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
		box.c.FreshId = c.FreshID
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
			FreshID:  c.FreshId,
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
