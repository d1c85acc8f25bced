package grpcchannel

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/exchangekit/exchange/channel"
)

// frameCodec is the gRPC codec of the twin (docs/decisions/0040). It encodes
// an *outbound straight from channel.Frames and decodes into an *inbound
// straight to channel.Frames, with the hand-written protobuf code of
// codec_wire.go: no reflection and no exchangepb messages in between. Every
// other message (exchangepb types used directly, the health service, other
// services registered on the same gRPC server) goes to gRPC's standard proto
// codec.
//
// The bytes on the wire are standard protobuf (exchange.v1.Frame): a peer
// with a generated stub, or gRPC's own codec, reads and writes them
// unchanged. Its name is "proto", so a client announces the standard
// content-subtype (application/grpc+proto).
type frameCodec struct {
	std encoding.CodecV2 // gRPC's proto codec
}

var _ encoding.CodecV2 = frameCodec{}

// codec is the frameCodec that Server and Dialer force on their streams.
var codec = frameCodec{std: encoding.GetCodecV2(protocodec.Name)}

// serverCodec and callCodec install codec on a gRPC server and on a
// client's calls.
func serverCodec() grpc.ServerOption { return grpc.ForceServerCodecV2(codec) }
func callCodec() grpc.CallOption     { return grpc.ForceCodecV2(codec) }

// outbound is a message to send: one frame, or a batch of frames (the
// batch kind of exchange.v1.Frame). size is its exact encoded size
// (frameSize, or 1 + the varint size + framesSize for a batch), computed by
// the conn to check its frame limit and reused by Marshal.
type outbound struct {
	frame     *channel.Frame
	batch     []*channel.Frame
	isBatch   bool
	size      int // the whole message
	framesLen int // a batch: the size of its Frames message
}

// inbound is a received message: one frame (a frame with no kind, or a
// batch inside a batch, becomes an empty channel.Frame, as fromProto made
// it), or the frames of a batch.
type inbound struct {
	frame   *channel.Frame
	batch   []*channel.Frame
	isBatch bool
}

// Name returns "proto": the content-subtype stays the standard one.
func (frameCodec) Name() string { return protocodec.Name }

// Marshal encodes an *outbound into one buffer, from gRPC's buffer pool when
// it is large enough to be pooled; anything else goes to the proto codec.
func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	out, ok := v.(*outbound)
	if !ok {
		return c.std.Marshal(v)
	}
	size := out.size
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := out.appendTo(make([]byte, 0, size))
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	b, err := out.appendTo((*buf)[:0])
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// appendTo appends the encoding of out to b, which has room for out.size
// more bytes.
func (out *outbound) appendTo(b []byte) ([]byte, error) {
	start := len(b)
	if out.isBatch {
		b = appendBatch(b, out.batch, out.framesLen)
	} else {
		b = appendFrame(b, out.frame)
	}
	if n := len(b) - start; n != out.size {
		// Only a frame changed while it was being sent (which the
		// channel.Conn contract forbids) gets here.
		return nil, fmt.Errorf("grpcchannel: encoded %d bytes, %d expected: frame changed during Send", n, out.size)
	}
	return b, nil
}

// Unmarshal decodes into an *inbound; anything else goes to the proto codec.
// The message is copied once into a buffer of its size, which the decoded
// frames' payloads (and, with aliasStrings, strings) refer to; it is never
// written again.
func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*inbound)
	if !ok {
		return c.std.Unmarshal(data, v)
	}
	return in.decode(data.Materialize())
}
