package grpcchannel

import (
	"testing"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// The frames of bench/compare_test.go: a command with a ~100-byte payload
// and a UUID id, and its reply; and a batch of 16 such commands.
var (
	benchPayload = []byte(`{"op":"set","key":"device/42/config","value":"brightness=80;mode=auto;interval=30s;x=1"}`)
	benchCmd     = &channel.Frame{Command: &command.Command{ID: "4a1c2f7e-8b3d-4e2a-9c1f-0d5e6b7a8c9d", Type: "ECHO",
		Payload: benchPayload, Timeout: 5_000_000_000}}
	benchReply = &channel.Frame{Reply: &command.Reply{CommandID: "4a1c2f7e-8b3d-4e2a-9c1f-0d5e6b7a8c9d", Type: "ECHO",
		Status: command.StatusSucceeded, Payload: benchPayload}}
	benchBatch = func() []*channel.Frame {
		fs := make([]*channel.Frame, 16)
		for i := range fs {
			fs[i] = benchCmd
		}
		return fs
	}()
)

var stdCodec = encoding.GetCodecV2(protocodec.Name)

func benchCases() []struct {
	name  string
	frame *channel.Frame
	batch []*channel.Frame
} {
	return []struct {
		name  string
		frame *channel.Frame
		batch []*channel.Frame
	}{{"Command", benchCmd, nil}, {"Reply", benchReply, nil}, {"Batch16", nil, benchBatch}}
}

// BenchmarkEncode: the codec (size, one buffer, fill) against toProto and
// gRPC's proto codec, as conn.Send did before.
func BenchmarkEncode(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name+"/Codec", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out := outbound{frame: bc.frame}
				if bc.batch != nil {
					n := framesSize(bc.batch)
					out = outbound{batch: bc.batch, isBatch: true, framesLen: n, size: 1 + protowire.SizeBytes(n)}
				} else {
					out.size = frameSize(bc.frame)
				}
				data, err := codec.Marshal(&out)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
		b.Run(bc.name+"/ProtoConvert", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var m *pb.Frame
				var err error
				if bc.batch != nil {
					m, err = batchToProto(bc.batch)
				} else {
					m, err = toProto(bc.frame)
				}
				if err != nil {
					b.Fatal(err)
				}
				data, err := stdCodec.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}

// BenchmarkDecode: the codec against gRPC's proto codec and fromProto, as
// conn.Recv did before; both from a mem.BufferSlice, as gRPC hands it over.
func BenchmarkDecode(b *testing.B) {
	for _, bc := range benchCases() {
		var m *pb.Frame
		if bc.batch != nil {
			m, _ = batchToProto(bc.batch)
		} else {
			m, _ = toProto(bc.frame)
		}
		wire, err := stdCodec.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		data := mem.BufferSlice{mem.SliceBuffer(wire.Materialize())}
		wire.Free()
		b.Run(bc.name+"/Codec", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var in inbound
				if err := codec.Unmarshal(data, &in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/ProtoConvert", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var m pb.Frame
				if err := stdCodec.Unmarshal(data, &m); err != nil {
					b.Fatal(err)
				}
				if bt, ok := m.GetKind().(*pb.Frame_Batch); ok {
					fs := make([]*channel.Frame, 0, len(bt.Batch.GetFrames()))
					for _, f := range bt.Batch.GetFrames() {
						fs = append(fs, fromProto(f))
					}
					_ = fs
				} else {
					_ = fromProto(&m)
				}
			}
		})
	}
}
