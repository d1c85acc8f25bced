package grpcchannel

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// FuzzDecodeFrame feeds arbitrary bytes to the receive path: protobuf
// decoding, batch unpacking and conversion to channel.Frame. It must never
// panic; every resulting frame is either valid, and then survives a round
// trip through the wire form unchanged (and frameSize is its encoded
// size), or reported malformed by Validate.
func FuzzDecodeFrame(f *testing.F) {
	seeds := []*channel.Frame{
		{Command: &command.Command{ID: "1", Type: "HELLO", Payload: []byte(`{"targetId":"t"}`), Timeout: time.Second}},
		{Command: &command.Command{ID: "2", Type: "EVENT", Metadata: map[string]string{"k": "v"}, OneWay: true}},
		{Reply: &command.Reply{CommandID: "1", Type: "HELLO", Status: command.StatusSucceeded, Payload: []byte(`{}`)}},
		{Reply: &command.Reply{CommandID: "3", Type: "X", Status: command.StatusError, Error: "busy", RetryAfter: 100 * time.Millisecond, Code: 429}},
	}
	batch := &pb.Frames{}
	for _, s := range seeds {
		m, err := toProto(s)
		if err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		batch.Frames = append(batch.Frames, m)
	}
	for _, m := range []*pb.Frame{
		{Kind: &pb.Frame_Batch{Batch: batch}},
		{Kind: &pb.Frame_Batch{Batch: &pb.Frames{Frames: []*pb.Frame{{Kind: &pb.Frame_Batch{Batch: batch}}}}}},
		{},
		{Kind: &pb.Frame_Command{Command: &pb.Command{}}},
		{Kind: &pb.Frame_Reply{Reply: &pb.Reply{CommandId: "4", Status: 99, RetryAfterMs: math.MaxInt64}}},
		{Kind: &pb.Frame_Command{Command: &pb.Command{Id: "5", Type: "T", TimeoutMs: -5}}},
		{Kind: &pb.Frame_Command{Command: &pb.Command{Id: "6", Type: "T", TimeoutMs: math.MaxInt64}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.Frame
		if err := proto.Unmarshal(b, &m); err != nil {
			return // gRPC reports this as an undecodable message
		}
		wire := []*pb.Frame{&m}
		if bt, ok := m.GetKind().(*pb.Frame_Batch); ok {
			wire = bt.Batch.GetFrames()
		}
		for _, w := range wire {
			got := fromProto(w)
			if got == nil {
				t.Fatal("fromProto() = nil")
			}
			if err := got.Validate(); err != nil {
				if !errors.Is(err, channel.ErrMalformedFrame) {
					t.Fatalf("Validate() = %v, want an error wrapping ErrMalformedFrame", err)
				}
				continue
			}
			back, err := toProto(got)
			if err != nil {
				t.Fatalf("toProto(valid frame) = %v", err)
			}
			enc, err := proto.Marshal(back)
			if err != nil {
				t.Fatalf("Marshal() = %v", err)
			}
			if n := frameSize(got); n != len(enc) {
				t.Fatalf("frameSize() = %d, the encoded size is %d", n, len(enc))
			}
			var again pb.Frame
			if err := proto.Unmarshal(enc, &again); err != nil {
				t.Fatalf("Unmarshal(Marshal()) = %v", err)
			}
			if diff := cmp.Diff(got, fromProto(&again), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("frame changed in a round trip (-first +second):\n%s", diff)
			}
		}
	})
}

// frameSize must be the encoded size: the conn checks its limit with it
// (a frame over the limit would reach gRPC, which fails the whole stream
// instead of the one frame), and the codec allocates exactly that much.
func TestFrameSize(t *testing.T) {
	big := make(map[string]string)
	for i := range 100 {
		big[string(rune('a'+i%26))+string(rune('0'+i%10))+string(make([]byte, i))] = string(make([]byte, 300-i))
	}
	for _, f := range []*channel.Frame{
		{Command: &command.Command{}},
		{Command: &command.Command{ID: "1", Type: "T", Payload: make([]byte, 1<<20), Metadata: big, OneWay: true, Timeout: math.MaxInt64}},
		{Command: &command.Command{ID: "2", Type: "T", Metadata: map[string]string{"": ""}, Timeout: time.Nanosecond}},
		{Reply: &command.Reply{}},
		{Reply: &command.Reply{CommandID: "3", Type: "T", Status: 99, Payload: make([]byte, 200), Error: "\xff\xfe\xfd bad", RetryAfter: -1, Code: -1}},
		{Reply: &command.Reply{CommandID: "4", Status: command.StatusError, Error: string(make([]byte, 5000)), RetryAfter: math.MaxInt64, Code: math.MaxInt32}},
	} {
		m, err := toProto(f)
		if err != nil {
			t.Fatalf("toProto(%+v) = %v", f, err)
		}
		if n, got := proto.Size(m), frameSize(f); got != n {
			t.Errorf("frameSize() = %d, the encoded size is %d, of %+v", got, n, f)
		}
	}
}
