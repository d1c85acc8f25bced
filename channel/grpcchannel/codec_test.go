package grpcchannel

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	pb "github.com/exchangekit/exchange/internal/exchangepb"
)

// stdDecode is the reference receive path: proto.Unmarshal into a
// pb.Frame, then fromProto (of each frame of a batch).
func stdDecode(b []byte) (in inbound, err error) {
	var m pb.Frame
	if err := proto.Unmarshal(b, &m); err != nil {
		return inbound{}, err
	}
	if bt, ok := m.GetKind().(*pb.Frame_Batch); ok {
		in.isBatch = true
		for _, f := range bt.Batch.GetFrames() {
			in.batch = append(in.batch, fromProto(f))
		}
		return in, nil
	}
	return inbound{frame: fromProto(&m)}, nil
}

// ourDecode is the codec's receive path, on a copy of b (the decoded frames
// alias the buffer they are decoded from).
func ourDecode(b []byte) (inbound, error) {
	var in inbound
	err := in.decode(bytes.Clone(b))
	return in, err
}

// diffInbound compares two decoded messages exactly: nil and empty differ.
func diffInbound(want, got inbound) string {
	return cmp.Diff(want, got, cmp.AllowUnexported(inbound{}))
}

// checkDecodeEquivalent fails t unless both decoders refuse b, or both
// accept it with the same result.
func checkDecodeEquivalent(t *testing.T, b []byte) (accepted bool) {
	t.Helper()
	want, stdErr := stdDecode(b)
	got, ourErr := ourDecode(b)
	switch {
	case stdErr != nil && ourErr != nil:
		return false
	case stdErr != nil:
		t.Fatalf("proto.Unmarshal refuses %x (%v), the codec accepts it: %+v", b, stdErr, got)
	case ourErr != nil:
		t.Fatalf("the codec refuses %x (%v), proto.Unmarshal accepts it: %+v", b, ourErr, want)
	}
	if d := diffInbound(want, got); d != "" {
		t.Fatalf("decoding %x: codec differs from proto.Unmarshal + fromProto (-want +got):\n%s", b, d)
	}
	return true
}

// ourEncode encodes one frame or a batch as conn.Send and conn.SendBatch do
// (sizes included), through the codec's Marshal.
func ourEncode(t testing.TB, f *channel.Frame, batch []*channel.Frame, isBatch bool) []byte {
	t.Helper()
	out := &outbound{frame: f, size: 0}
	if isBatch {
		n := framesSize(batch)
		out = &outbound{batch: batch, isBatch: true, framesLen: n, size: 1 + protowire.SizeBytes(n)}
	} else {
		out.size = frameSize(f)
	}
	data, err := codec.Marshal(out)
	if err != nil {
		t.Fatalf("Marshal() = %v", err)
	}
	defer data.Free()
	b := data.Materialize()
	if len(b) != out.size {
		t.Fatalf("Marshal() wrote %d bytes, size %d", len(b), out.size)
	}
	return b
}

// checkEncodeEquivalent checks the codec's encoding of a frame (or batch)
// against toProto (batchToProto): the same refusal, or bytes that
// proto.Unmarshal reads as the message toProto builds, of the size
// proto.Size gives, and that the codec decodes as the standard path does.
func checkEncodeEquivalent(t *testing.T, f *channel.Frame, batch []*channel.Frame, isBatch bool) {
	t.Helper()
	var want *pb.Frame
	var stdErr, ourErr error
	if isBatch {
		want, stdErr = batchToProto(batch)
		for _, g := range batch {
			if ourErr = checkFrame(g); ourErr != nil {
				break
			}
		}
	} else {
		want, stdErr = toProto(f)
		ourErr = checkFrame(f)
	}
	if stdErr != nil || ourErr != nil {
		if stdErr == nil || ourErr == nil || stdErr.Error() != ourErr.Error() || !errors.Is(ourErr, channel.ErrMalformedFrame) {
			t.Fatalf("refusal: toProto says %v, checkFrame says %v", stdErr, ourErr)
		}
		return
	}
	enc := ourEncode(t, f, batch, isBatch)
	if n := proto.Size(want); n != len(enc) {
		t.Fatalf("encoded %d bytes, proto.Size(toProto()) = %d", len(enc), n)
	}
	var got pb.Frame
	if err := proto.Unmarshal(enc, &got); err != nil {
		t.Fatalf("proto.Unmarshal(codec's encoding) = %v", err)
	}
	if !proto.Equal(want, &got) {
		t.Fatalf("proto.Unmarshal(codec's encoding) = %v, toProto() = %v", &got, want)
	}
	if !checkDecodeEquivalent(t, enc) {
		t.Fatalf("the codec's encoding %x is refused by both decoders", enc)
	}
}

// Frames for the seeds and the tables.
var codecFrames = []*channel.Frame{
	{Command: &command.Command{ID: "1", Type: "HELLO", Payload: []byte(`{"targetId":"t"}`), Timeout: time.Second}},
	{Command: &command.Command{ID: "2", Type: "EVENT", Metadata: map[string]string{"k": "v", "": "", "trace": ""}, OneWay: true}},
	{Command: &command.Command{ID: "3", Type: "T", Payload: make([]byte, 3000), Timeout: time.Nanosecond, FreshID: true}},
	{Command: &command.Command{ID: "6", Type: "T", OneWay: true, FreshID: true}},
	{Command: &command.Command{ID: "4", Type: "T", Timeout: -time.Second, Metadata: map[string]string{}}},
	{Command: &command.Command{ID: "5", Type: "T", Timeout: math.MaxInt64}},
	{Command: &command.Command{}},
	{Reply: &command.Reply{CommandID: "1", Type: "HELLO", Status: command.StatusSucceeded, Payload: []byte(`{}`)}},
	{Reply: &command.Reply{CommandID: "3", Type: "X", Status: command.StatusError, Error: "busy", RetryAfter: 100 * time.Millisecond, Code: 429}},
	{Reply: &command.Reply{CommandID: "4", Status: -7, Error: "\xff\xfe bad \xc3", Code: -1, RetryAfter: time.Microsecond}},
	{Reply: &command.Reply{CommandID: "5", Status: 99, Code: math.MaxInt32, RetryAfter: math.MaxInt64, Payload: make([]byte, 200)}},
	{Reply: &command.Reply{}},
	{},
}

// Frames the sender refuses, with the same error as toProto.
var refusedFrames = []*channel.Frame{
	nil,
	{Command: &command.Command{ID: "1"}, Reply: &command.Reply{CommandID: "1"}},
	{Command: &command.Command{ID: "\xff", Type: "T"}},
	{Command: &command.Command{ID: "1", Type: "\xc3"}},
	{Command: &command.Command{ID: "1", Type: "T", Metadata: map[string]string{"\xff": "v"}}},
	{Command: &command.Command{ID: "1", Type: "T", Metadata: map[string]string{"k": "\xff"}}},
	{Reply: &command.Reply{CommandID: "\xff"}},
	{Reply: &command.Reply{CommandID: "1", Type: "\xff"}},
}

func TestCodecEncodeEquivalent(t *testing.T) {
	for _, f := range append(append([]*channel.Frame{}, codecFrames...), refusedFrames...) {
		checkEncodeEquivalent(t, f, nil, false)
	}
	checkEncodeEquivalent(t, nil, codecFrames, true)
	checkEncodeEquivalent(t, nil, nil, true)
	checkEncodeEquivalent(t, nil, []*channel.Frame{codecFrames[0], nil}, true)
	checkEncodeEquivalent(t, nil, append([]*channel.Frame{codecFrames[0]}, refusedFrames[2]), true)
}

// A message large enough for gRPC's buffer pool is encoded into a pooled
// buffer; the codec hands other types to gRPC's proto codec.
func TestCodecMarshalPooledAndFallback(t *testing.T) {
	big := []*channel.Frame{codecFrames[2], codecFrames[2], codecFrames[0]}
	if mem.IsBelowBufferPoolingThreshold(framesSize(big)) {
		t.Fatal("test batch too small to be pooled")
	}
	checkEncodeEquivalent(t, nil, big, true)

	m := &pb.Frame{Kind: &pb.Frame_Command{Command: &pb.Command{Id: "1", Type: "T"}}}
	data, err := codec.Marshal(m)
	if err != nil {
		t.Fatalf("Marshal(*pb.Frame) = %v", err)
	}
	var back pb.Frame
	err = codec.Unmarshal(data, &back)
	data.Free()
	if err != nil || !proto.Equal(m, &back) {
		t.Fatalf("Unmarshal(Marshal(*pb.Frame)) = %v, %v; want %v", &back, err, m)
	}
	if codec.Name() != "proto" {
		t.Errorf("Name() = %q, want proto (the standard content-subtype)", codec.Name())
	}
	if _, err := codec.Marshal("not a message"); err == nil {
		t.Error("Marshal(string) = nil error, want the proto codec's refusal")
	}
}

// wire builds protobuf bytes from parts: tags, varints and length-prefixed
// fields.
type wire []byte

func (w wire) tag(num protowire.Number, typ protowire.Type) wire {
	return protowire.AppendTag(w, num, typ)
}
func (w wire) varint(num protowire.Number, v uint64) wire {
	return protowire.AppendVarint(w.tag(num, protowire.VarintType), v)
}
func (w wire) bytes(num protowire.Number, v []byte) wire {
	return protowire.AppendBytes(w.tag(num, protowire.BytesType), v)
}
func (w wire) str(num protowire.Number, s string) wire { return w.bytes(num, []byte(s)) }
func (w wire) raw(b ...byte) wire                      { return append(w, b...) }

func cmdMsg(inner wire) wire   { return wire{}.bytes(1, inner) }
func replyMsg(inner wire) wire { return wire{}.bytes(2, inner) }
func batchMsg(frames ...wire) wire {
	var fs wire
	for _, f := range frames {
		fs = fs.bytes(1, f)
	}
	return wire{}.bytes(3, fs)
}
func entry(inner wire) wire { return wire{}.bytes(4, inner) }

// Inputs that proto.Unmarshal refuses: the codec must refuse each.
var refusedWire = map[string]wire{
	"truncated tag":                       wire{}.raw(0x80),
	"truncated varint value":              wire{}.tag(1, protowire.VarintType).raw(0xff),
	"varint over 10 bytes":                wire{}.varint(9, 0).raw(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01),
	"varint overflowing 64 bits":          wire{}.tag(9, protowire.VarintType).raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02),
	"field number 0":                      wire{}.raw(0x02, 0x00),
	"field number too large":              protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3|2),
	"length past the end":                 wire{}.tag(1, protowire.BytesType).raw(0x05, 0x0a),
	"command length past the end":         cmdMsg(wire{}.tag(1, protowire.BytesType).raw(0x09, 'a')),
	"payload length past the end":         cmdMsg(wire{}.tag(3, protowire.BytesType).raw(0x7f)),
	"wire type 6":                         wire{}.raw(1<<3 | 6),
	"wire type 7 in a command":            cmdMsg(wire{}.raw(2<<3 | 7)),
	"end group at top level":              wire{}.tag(5, protowire.EndGroupType),
	"unterminated group":                  wire{}.tag(5, protowire.StartGroupType).varint(1, 1),
	"mismatched end group":                wire{}.tag(5, protowire.StartGroupType).tag(6, protowire.EndGroupType),
	"fixed32 truncated":                   wire{}.tag(9, protowire.Fixed32Type).raw(1, 2, 3),
	"fixed64 truncated":                   wire{}.tag(9, protowire.Fixed64Type).raw(1, 2, 3, 4, 5, 6, 7),
	"invalid UTF-8 command id":            cmdMsg(wire{}.str(1, "\xff")),
	"invalid UTF-8 command type":          cmdMsg(wire{}.str(1, "1").str(2, "a\xc3")),
	"invalid UTF-8 metadata key":          cmdMsg(wire{}.str(1, "1").raw(entry(wire{}.str(1, "\xed\xa0\x80"))...)),
	"invalid UTF-8 metadata value":        cmdMsg(wire{}.str(1, "1").raw(entry(wire{}.str(1, "k").str(2, "\xff"))...)),
	"invalid UTF-8 reply command id":      replyMsg(wire{}.str(1, "\xc0\x80")),
	"invalid UTF-8 reply type":            replyMsg(wire{}.str(1, "1").str(2, "\xfe")),
	"invalid UTF-8 reply error":           replyMsg(wire{}.str(1, "1").str(5, "oops \xff")),
	"invalid UTF-8 in a batched frame":    batchMsg(cmdMsg(wire{}.str(1, "ok")), cmdMsg(wire{}.str(2, "\xff"))),
	"invalid UTF-8 in a nested batch":     batchMsg(batchMsg(replyMsg(wire{}.str(2, "\xff")))),
	"invalid UTF-8 in a replaced command": append(cmdMsg(wire{}.str(1, "\xff")), replyMsg(wire{}.str(1, "1"))...),
	"truncated map entry":                 cmdMsg(wire{}.tag(4, protowire.BytesType).raw(0x04, 0x0a, 0x01)),
	"bad tag in a map entry":              cmdMsg(entry(wire{}.raw(0x00))),
	"end group in a map entry":            cmdMsg(entry(wire{}.tag(1, protowire.EndGroupType))),
	"truncated one_way":                   cmdMsg(wire{}.tag(5, protowire.VarintType)),
	"truncated status":                    replyMsg(wire{}.tag(3, protowire.VarintType).raw(0x80)),
	"truncated frame in a batch":          wire{}.bytes(3, wire{}.tag(1, protowire.BytesType).raw(0x03, 0x0a)),
	"too deep":                            nestedBatches(5000, cmdMsg(wire{}.str(1, "1"))),
	"map entry too deep":                  nestedBatches(4999, cmdMsg(wire{}.tag(4, protowire.VarintType).raw(0))),
}

// Inputs that proto.Unmarshal accepts: the codec must accept each, with the
// same frames.
var acceptedWire = map[string]wire{
	"empty":                          {},
	"unknown fields of every type":   wire{}.varint(9, 1).str(10, "x").tag(11, protowire.Fixed32Type).raw(1, 2, 3, 4).tag(12, protowire.Fixed64Type).raw(1, 2, 3, 4, 5, 6, 7, 8).raw(cmdMsg(wire{}.str(1, "1").str(2, "T").varint(99, 5).str(100, "\xff"))...),
	"unknown group":                  wire{}.tag(20, protowire.StartGroupType).varint(1, 1).str(2, "\xff").tag(3, protowire.StartGroupType).tag(3, protowire.EndGroupType).tag(20, protowire.EndGroupType).raw(cmdMsg(wire{}.str(1, "1"))...),
	"known field, wrong wire type":   wire{}.varint(1, 7).raw(cmdMsg(wire{}.varint(1, 3).str(2, "T").str(5, "x").varint(3, 1).tag(6, protowire.Fixed64Type).raw(0, 0, 0, 0, 0, 0, 0, 0).str(1, "id"))...),
	"command field as varint only":   wire{}.varint(1, 1),
	"reply, wrong wire types":        replyMsg(wire{}.str(3, "x").str(6, "y").str(7, "z").varint(4, 1).varint(5, 1).str(1, "1")),
	"repeated scalars: last wins":    cmdMsg(wire{}.str(1, "a").str(1, "b").varint(6, 5).varint(6, 9).varint(5, 1).varint(5, 0).str(3, "p").bytes(3, nil)),
	"repeated command merges":        append(cmdMsg(wire{}.str(1, "a").str(3, "payload").raw(entry(wire{}.str(1, "k").str(2, "v"))...)), cmdMsg(wire{}.str(2, "T").raw(entry(wire{}.str(1, "k2").str(2, "v2"))...))...),
	"oneof: last kind wins":          append(append(cmdMsg(wire{}.str(1, "a")), replyMsg(wire{}.str(1, "r"))...), cmdMsg(wire{}.str(2, "T"))...),
	"oneof: batch then command":      append(batchMsg(cmdMsg(wire{}.str(1, "1"))), cmdMsg(wire{}.str(1, "2"))...),
	"batches merge":                  append(batchMsg(cmdMsg(wire{}.str(1, "1"))), batchMsg(replyMsg(wire{}.str(1, "2")), wire{})...),
	"batch, kind replaced and back":  append(append(batchMsg(cmdMsg(wire{}.str(1, "1"))), cmdMsg(nil)...), batchMsg(cmdMsg(wire{}.str(1, "2")))...),
	"empty batch":                    batchMsg(),
	"nested batch":                   batchMsg(batchMsg(cmdMsg(wire{}.str(1, "1"))), cmdMsg(wire{}.str(1, "2"))),
	"frames: unknown fields":         wire{}.bytes(3, wire{}.varint(2, 1).varint(1, 1).bytes(1, cmdMsg(wire{}.str(1, "1")))),
	"map entry without key or value": cmdMsg(wire{}.raw(entry(wire{}.str(2, "v"))...).raw(entry(wire{}.str(1, "k"))...).raw(entry(nil)...)),
	"map: duplicate keys":            cmdMsg(wire{}.raw(entry(wire{}.str(1, "k").str(2, "1"))...).raw(entry(wire{}.str(2, "2").str(1, "k"))...)),
	"map entry: repeated, unknown":   cmdMsg(wire{}.raw(entry(wire{}.str(1, "a").str(1, "k").varint(1, 5).str(3, "\xff").str(2, "x").str(2, "v"))...)),
	"map field, wrong wire type":     cmdMsg(wire{}.str(1, "1").varint(4, 1)),
	"empty payload is nil":           cmdMsg(wire{}.str(1, "1").bytes(3, nil)),
	"reply payload, empty after":     replyMsg(wire{}.str(4, "x").bytes(4, nil)),
	"negative and huge varints":      replyMsg(wire{}.varint(3, math.MaxUint64).varint(7, 1<<40|5).varint(6, math.MaxUint64).str(1, "1")),
	"huge timeout":                   cmdMsg(wire{}.varint(6, math.MaxInt64).str(1, "1")),
	"negative timeout":               cmdMsg(wire{}.varint(6, math.MaxUint64-4).str(1, "1")),
	"one_way as large varint":        cmdMsg(wire{}.varint(5, 1<<63)),
	"non-minimal varints":            wire{}.raw(0x8a, 0x00, 0x80, 0x00).raw(cmdMsg(wire{}.raw(0xa8, 0x80, 0x00, 0x81, 0x80, 0x00).raw(0x0a, 0x81, 0x00, 'a'))...),
	"valid multibyte UTF-8":          cmdMsg(wire{}.str(1, "é€𝄞").str(2, "ü").raw(entry(wire{}.str(1, "ключ").str(2, "値"))...)),
	"deep but not too deep":          nestedBatches(4999, cmdMsg(wire{}.str(1, "1"))),
	"map entry just deep enough":     nestedBatches(4998, cmdMsg(wire{}.tag(4, protowire.VarintType).raw(0))),
}

// nestedBatches wraps inner (a Frame) in n batches of one frame each: every
// level takes two levels of depth (Frame and Frames), inner's message one
// more and its map entries another.
func nestedBatches(n int, inner wire) wire {
	b := inner
	for range n {
		b = batchMsg(b)
	}
	return b
}

func TestCodecRefuses(t *testing.T) {
	for name, b := range refusedWire {
		t.Run(name, func(t *testing.T) {
			if _, err := stdDecode(b); err == nil {
				t.Fatalf("proto.Unmarshal accepts %x: not a refusal case", b)
			}
			if got, err := ourDecode(b); err == nil {
				t.Fatalf("codec accepts %x: %+v", b, got)
			}
		})
	}
}

func TestCodecAccepts(t *testing.T) {
	for name, b := range acceptedWire {
		t.Run(name, func(t *testing.T) {
			if !checkDecodeEquivalent(t, b) {
				t.Fatalf("both decoders refuse %x", b)
			}
		})
	}
}

// Decoded payloads alias the received buffer, with their capacity cut so
// that an append copies instead of writing over the next field.
func TestCodecPayloadAppendDoesNotOverwrite(t *testing.T) {
	b := cmdMsg(wire{}.str(1, "1").str(3, "pay").str(2, "TYPE"))
	in, err := ourDecode(b)
	if err != nil {
		t.Fatal(err)
	}
	c := in.frame.Command
	_ = append(c.Payload, "XXXX"...)
	if c.Type != "TYPE" || string(c.Payload) != "pay" {
		t.Fatalf("after an append to the payload: %+v", c)
	}
}

// FuzzCodecDecode: for arbitrary bytes, proto.Unmarshal + fromProto and the
// codec both refuse them, or give the same frames (exactly: nil and empty
// differ); the frames the codec accepted encode back to the same frames.
func FuzzCodecDecode(f *testing.F) {
	for _, fr := range codecFrames {
		m, _ := toProto(fr)
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	m, _ := batchToProto(codecFrames)
	b, _ := proto.Marshal(m)
	f.Add(b)
	for _, b := range refusedWire {
		if len(b) < 1000 {
			f.Add([]byte(b))
		}
	}
	for _, b := range acceptedWire {
		if len(b) < 1000 {
			f.Add([]byte(b))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !checkDecodeEquivalent(t, b) {
			return
		}
		in, _ := ourDecode(b)
		frames := []*channel.Frame{in.frame}
		if in.isBatch {
			frames = in.batch
			checkEncodeEquivalent(t, nil, frames, true)
		}
		for _, fr := range frames {
			checkEncodeEquivalent(t, fr, nil, false)
		}
	})
}

// FuzzCodecEncode: for arbitrary frames (one built from the fuzzed fields,
// alone and in a batch), the codec refuses what toProto refuses, with the
// same error, and otherwise writes bytes that proto.Unmarshal reads as the
// message toProto builds, and that decode back as the standard path does.
func FuzzCodecEncode(f *testing.F) {
	f.Add(false, "1", "HELLO", []byte(`{}`), "k", "v", true, int64(time.Second), int32(0), "", int32(0), uint8(0))
	f.Add(true, "1", "HELLO", []byte(nil), "", "", false, int64(-1), int32(2), "bad \xff", int32(-429), uint8(3))
	f.Add(false, "\xff", "T", []byte("x"), "\xfe", "v", false, int64(math.MaxInt64), int32(-1), "", int32(7), uint8(2))
	f.Add(true, "", "", []byte{}, "", "\xc3", false, int64(1), int32(math.MinInt32), "é", int32(math.MaxInt32), uint8(1))
	f.Fuzz(func(t *testing.T, isReply bool, id, typ string, payload []byte, mk, mv string, oneWay bool,
		d int64, status int32, errText string, code int32, shape uint8) {
		var fr *channel.Frame
		if isReply {
			fr = &channel.Frame{Reply: &command.Reply{CommandID: id, Type: command.Type(typ), Status: command.Status(status),
				Payload: payload, Error: errText, RetryAfter: time.Duration(d), Code: code}}
		} else {
			c := &command.Command{ID: id, Type: command.Type(typ), Payload: payload, OneWay: oneWay, Timeout: time.Duration(d), FreshID: code%2 != 0}
			if mk != "" || mv != "" {
				c.Metadata = map[string]string{mk: mv, strings.ToUpper(mk) + "2": mv + mv}
			}
			fr = &channel.Frame{Command: c}
		}
		switch shape % 4 {
		case 1:
			fr.Reply = &command.Reply{CommandID: id} // both kinds: refused
		case 2:
			fr = &channel.Frame{} // no kind
		}
		checkEncodeEquivalent(t, fr, nil, false)
		checkEncodeEquivalent(t, nil, []*channel.Frame{fr, codecFrames[int(shape)%len(codecFrames)], fr}, true)
	})
}
