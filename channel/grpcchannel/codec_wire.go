package grpcchannel

import (
	"errors"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// The hand-written protobuf encoding of exchange.v1.Frame
// (proto/exchange/v1/exchange.proto) from and to channel.Frame. It encodes
// what toProto + proto.Marshal encode, and accepts and refuses exactly what
// proto.Unmarshal accepts and refuses, with the same result as fromProto
// (FuzzCodecDecode and FuzzCodecEncode prove both, against toProto and
// fromProto, kept in convert_ref_test.go); the comments name the
// google.golang.org/protobuf behaviour each rule mirrors.

// Wire types of the protobuf encoding (protowire.VarintType, BytesType): a
// field's tag is its number shifted left by 3, ored with its wire type.
const (
	wtVarint = 0
	wtBytes  = 2
)

// Field tags, with their wire types.
const (
	tagFrameCommand = 1<<3 | wtBytes
	tagFrameReply   = 2<<3 | wtBytes
	tagFrameBatch   = 3<<3 | wtBytes
	tagFramesFrame  = 1<<3 | wtBytes

	tagCommandID       = 1<<3 | wtBytes
	tagCommandType     = 2<<3 | wtBytes
	tagCommandPayload  = 3<<3 | wtBytes
	tagCommandMetadata = 4<<3 | wtBytes
	tagCommandOneWay   = 5<<3 | wtVarint
	tagCommandTimeout  = 6<<3 | wtVarint
	tagCommandFreshID  = 7<<3 | wtVarint

	tagEntryKey   = 1<<3 | wtBytes
	tagEntryValue = 2<<3 | wtBytes

	tagReplyCommandID  = 1<<3 | wtBytes
	tagReplyType       = 2<<3 | wtBytes
	tagReplyStatus     = 3<<3 | wtVarint
	tagReplyPayload    = 4<<3 | wtBytes
	tagReplyError      = 5<<3 | wtBytes
	tagReplyRetryAfter = 6<<3 | wtVarint
	tagReplyCode       = 7<<3 | wtVarint
)

// ---- Encoding ----
//
// Proto3 rules: a zero scalar (empty string or bytes, 0, false) is not
// written; a set message field is, even when empty; a map entry always
// carries its key and its value (as google.golang.org/protobuf writes them).
// Fields are written in field-number order, map entries in map order.

// sizeString is the encoded size of a string or bytes field of length n.
func sizeString(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(n)
}

// sizeVarint is the encoded size of a varint field of value v.
func sizeVarint(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func sizeEntry(k, v string) int { return 2 + protowire.SizeBytes(len(k)) + protowire.SizeBytes(len(v)) }

// commandSize is the encoded size of the Command message of c.
func commandSize(c *command.Command) int {
	n := sizeString(len(c.ID)) + sizeString(len(c.Type)) + sizeString(len(c.Payload))
	for k, v := range c.Metadata {
		n += 1 + protowire.SizeBytes(sizeEntry(k, v))
	}
	if c.OneWay {
		n += 2
	}
	if c.FreshID {
		n += 2
	}
	return n + sizeVarint(uint64(durationToMillis(c.Timeout)))
}

// replySize is the encoded size of the Reply message of r.
func replySize(r *command.Reply) int {
	return sizeString(len(r.CommandID)) + sizeString(len(r.Type)) +
		sizeVarint(uint64(int64(r.Status))) + sizeString(len(r.Payload)) +
		sizeString(len(wireError(r.Error))) + sizeVarint(uint64(durationToMillis(r.RetryAfter))) +
		sizeVarint(uint64(int64(r.Code)))
}

// frameSize is the encoded size of the Frame message of f: its command, else
// its reply, else nothing (a Frame with no kind).
func frameSize(f *channel.Frame) int {
	switch {
	case f.Command != nil:
		return 1 + protowire.SizeBytes(commandSize(f.Command))
	case f.Reply != nil:
		return 1 + protowire.SizeBytes(replySize(f.Reply))
	}
	return 0
}

// framesSize is the encoded size of the Frames message of fs.
func framesSize(fs []*channel.Frame) int {
	n := 0
	for _, f := range fs {
		n += 1 + protowire.SizeBytes(frameSize(f))
	}
	return n
}

// wireError is the error text of a reply as sent: invalid UTF-8 is repaired
// rather than refused, because the text is only for humans.
func wireError(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func appendString(b []byte, tag byte, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(append(b, tag), s)
}

func appendBytes(b []byte, tag byte, p []byte) []byte {
	if len(p) == 0 {
		return b
	}
	return protowire.AppendBytes(append(b, tag), p)
}

func appendVarint(b []byte, tag byte, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(append(b, tag), v)
}

func appendCommand(b []byte, c *command.Command) []byte {
	b = appendString(b, tagCommandID, c.ID)
	b = appendString(b, tagCommandType, string(c.Type))
	b = appendBytes(b, tagCommandPayload, c.Payload)
	for k, v := range c.Metadata {
		b = append(b, tagCommandMetadata)
		b = protowire.AppendVarint(b, uint64(sizeEntry(k, v)))
		b = protowire.AppendString(append(b, tagEntryKey), k)
		b = protowire.AppendString(append(b, tagEntryValue), v)
	}
	if c.OneWay {
		b = append(b, tagCommandOneWay, 1)
	}
	b = appendVarint(b, tagCommandTimeout, uint64(durationToMillis(c.Timeout)))
	if c.FreshID {
		b = append(b, tagCommandFreshID, 1)
	}
	return b
}

func appendReply(b []byte, r *command.Reply) []byte {
	b = appendString(b, tagReplyCommandID, r.CommandID)
	b = appendString(b, tagReplyType, string(r.Type))
	b = appendVarint(b, tagReplyStatus, uint64(int64(r.Status)))
	b = appendBytes(b, tagReplyPayload, r.Payload)
	b = appendString(b, tagReplyError, wireError(r.Error))
	b = appendVarint(b, tagReplyRetryAfter, uint64(durationToMillis(r.RetryAfter)))
	return appendVarint(b, tagReplyCode, uint64(int64(r.Code)))
}

// appendFrame appends the Frame message of f (see frameSize).
func appendFrame(b []byte, f *channel.Frame) []byte {
	switch {
	case f.Command != nil:
		b = protowire.AppendVarint(append(b, tagFrameCommand), uint64(commandSize(f.Command)))
		return appendCommand(b, f.Command)
	case f.Reply != nil:
		b = protowire.AppendVarint(append(b, tagFrameReply), uint64(replySize(f.Reply)))
		return appendReply(b, f.Reply)
	}
	return b
}

// appendBatch appends a Frame whose kind is the batch fs; framesLen is
// framesSize(fs).
func appendBatch(b []byte, fs []*channel.Frame, framesLen int) []byte {
	b = protowire.AppendVarint(append(b, tagFrameBatch), uint64(framesLen))
	for _, f := range fs {
		b = append(b, tagFramesFrame)
		switch {
		case f.Command != nil:
			n := commandSize(f.Command)
			b = protowire.AppendVarint(b, uint64(1+protowire.SizeBytes(n)))
			b = protowire.AppendVarint(append(b, tagFrameCommand), uint64(n))
			b = appendCommand(b, f.Command)
		case f.Reply != nil:
			n := replySize(f.Reply)
			b = protowire.AppendVarint(b, uint64(1+protowire.SizeBytes(n)))
			b = protowire.AppendVarint(append(b, tagFrameReply), uint64(n))
			b = appendReply(b, f.Reply)
		default:
			b = append(b, 0)
		}
	}
	return b
}

// ---- Decoding ----
//
// The rules of google.golang.org/protobuf (internal/impl/decode.go,
// codec_field.go, codec_map.go), for the fields of this schema:
//   - a tag is a varint; its field number must be in [1, 2^29-1]; an
//     END_GROUP tag outside a group is an error;
//   - a known field with another wire type than its own is an unknown field;
//     unknown fields are skipped with protowire.ConsumeFieldValue (groups
//     included, and wire types 6 and 7 refused);
//   - scalars: the last occurrence wins; a string must be valid UTF-8 (map
//     keys and values included); empty bytes decode as nil;
//   - a message field seen again is merged into the first; a oneof field
//     of another case than the current one replaces it, of the same case
//     merges; each occurrence of a repeated message field is a new element;
//   - a map field creates the map even when the entry is skipped for its
//     wire type; an entry lacking its key or value has "" for it; the last
//     entry of a key wins;
//   - every message, and every map entry, takes one level of a depth of
//     protowire.DefaultRecursionLimit (10,000).

var (
	errWire    = errors.New("grpcchannel: cannot parse invalid wire-format data")
	errUTF8    = errors.New("grpcchannel: string field contains invalid UTF-8")
	errTooDeep = errors.New("grpcchannel: exceeded maximum recursion depth")
)

// aliasStrings makes decoded strings share the received message's buffer
// (unsafe.String) instead of copying them. That buffer is allocated for the
// one message by Unmarshal and never written after decoding, so the strings
// are immutable; the cost is that any string kept alive (a command id held
// in a map, say) keeps the whole message alive, as a kept payload does.
const aliasStrings = true

// wireString returns the string of the bytes v of the received buffer.
func wireString(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	if aliasStrings {
		return unsafe.String(unsafe.SliceData(v), len(v))
	}
	return string(v)
}

// wireBytes returns the bytes field v: nil when empty (as
// google.golang.org/protobuf decodes proto3 bytes), else v itself with its
// capacity cut, so that appending to it never writes into the buffer.
func wireBytes(v []byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return v[:len(v):len(v)]
}

// consumeTag reads a tag: its field number and wire type, and its length,
// or an error for a bad varint or field number.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, 0, errWire
	}
	num := v >> 3
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return 0, 0, 0, errWire
	}
	return protowire.Number(num), protowire.Type(v & 7), n, nil
}

// skipField skips the value of an unknown field (or of a known field with
// another wire type), as google.golang.org/protobuf does.
func skipField(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
	n := protowire.ConsumeFieldValue(num, typ, b)
	if n < 0 {
		return 0, errWire
	}
	return n, nil
}

func consumeString(b []byte) (string, int, error) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return "", 0, errWire
	}
	if !utf8.Valid(v) {
		return "", 0, errUTF8
	}
	return wireString(v), n, nil
}

func consumeVarint(b []byte) (uint64, int, error) {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, errWire
	}
	return v, n, nil
}

// decode decodes buf, one exchange.v1.Frame, into in: a batch, or one frame
// as fromProto converts it.
func (in *inbound) decode(buf []byte) error {
	fr, err := decodeFrame(buf, protowire.DefaultRecursionLimit, nil)
	switch {
	case err != nil:
		*in = inbound{}
		return err
	case fr.kind == kindBatch:
		*in = inbound{batch: fr.batch, isBatch: true}
	default:
		*in = inbound{frame: fr.frame()}
	}
	return nil
}

type frameKind uint8

const (
	kindNone frameKind = iota
	kindCommand
	kindReply
	kindBatch
)

// A frame and its command or reply are allocated together, as fromProto
// allocates them.
type (
	commandBox struct {
		f channel.Frame
		c command.Command
	}
	replyBox struct {
		f channel.Frame
		r command.Reply
	}
)

// slab holds the boxes of the frames of one batch, allocated together; when
// they run out (its counts are only a guess, see countFrames), boxes are
// allocated one by one.
type slab struct {
	cmds    []commandBox
	replies []replyBox
}

func (s *slab) command() *commandBox {
	var b *commandBox
	if s != nil && len(s.cmds) > 0 {
		b, s.cmds = &s.cmds[0], s.cmds[1:]
	} else {
		b = &commandBox{}
	}
	b.f.Command = &b.c
	return b
}

func (s *slab) reply() *replyBox {
	var b *replyBox
	if s != nil && len(s.replies) > 0 {
		b, s.replies = &s.replies[0], s.replies[1:]
	} else {
		b = &replyBox{}
	}
	b.f.Reply = &b.r
	return b
}

// frameResult is what a Frame message decoded to.
type frameResult struct {
	kind  frameKind
	cmd   *commandBox
	reply *replyBox
	batch []*channel.Frame
}

// frame is the decoded frame as fromProto converts it: an empty
// channel.Frame for a frame with no kind, or with a batch (a batch inside a
// batch; the top-level batch is inbound.batch).
func (fr *frameResult) frame() *channel.Frame {
	switch fr.kind {
	case kindCommand:
		return &fr.cmd.f
	case kindReply:
		return &fr.reply.f
	}
	return &channel.Frame{}
}

// decodeFrame decodes a Frame message, taking the boxes of its command or
// reply from s (which may be nil).
func decodeFrame(b []byte, depth int, s *slab) (fr frameResult, err error) {
	if depth--; depth < 0 {
		return fr, errTooDeep
	}
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return fr, err
		}
		b = b[n:]
		if typ != protowire.BytesType || num > 3 {
			if n, err = skipField(num, typ, b); err != nil {
				return fr, err
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fr, errWire
		}
		b = b[n:]
		switch num {
		case 1:
			if fr.kind != kindCommand {
				fr.kind, fr.cmd = kindCommand, s.command()
			}
			err = decodeCommand(v, depth, &fr.cmd.c)
		case 2:
			if fr.kind != kindReply {
				fr.kind, fr.reply = kindReply, s.reply()
			}
			err = decodeReply(v, depth, &fr.reply.r)
		case 3:
			if fr.kind != kindBatch {
				fr.kind, fr.batch = kindBatch, nil
			}
			fr.batch, err = decodeFrames(v, depth, fr.batch)
		}
		if err != nil {
			return fr, err
		}
	}
	return fr, nil
}

// decodeFrames decodes a Frames message, appending its frames to fs.
func decodeFrames(b []byte, depth int, fs []*channel.Frame) ([]*channel.Frame, error) {
	if depth--; depth < 0 {
		return fs, errTooDeep
	}
	n, cmds, replies := countFrames(b)
	fs = slices.Grow(fs, n)
	s := &slab{cmds: make([]commandBox, cmds), replies: make([]replyBox, replies)}
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return fs, err
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n, err = skipField(num, typ, b); err != nil {
				return fs, err
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fs, errWire
		}
		b = b[n:]
		fr, err := decodeFrame(v, depth, s)
		if err != nil {
			return fs, err
		}
		fs = append(fs, fr.frame())
	}
	return fs, nil
}

// countFrames guesses, for the allocations of decodeFrames, how many frames
// a Frames message holds, and how many of them are commands and replies by
// their first field. It stops at the first malformed field (decodeFrames
// reports it).
func countFrames(b []byte) (frames, cmds, replies int) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return
			}
			frames++
			if len(v) > 0 {
				switch v[0] {
				case tagFrameCommand:
					cmds++
				case tagFrameReply:
					replies++
				}
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return
		}
		b = b[n:]
	}
	return
}

func decodeCommand(b []byte, depth int, c *command.Command) error {
	if depth--; depth < 0 {
		return errTooDeep
	}
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			c.ID, n, err = consumeString(b)
		case num == 2 && typ == protowire.BytesType:
			var s string
			s, n, err = consumeString(b)
			c.Type = command.Type(s)
		case num == 3 && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				return errWire
			}
			c.Payload = wireBytes(v)
		case num == 4:
			// The map entry takes a level, and the map is created, before
			// the wire type is looked at.
			if depth-1 < 0 {
				return errTooDeep
			}
			if c.Metadata == nil {
				c.Metadata = make(map[string]string)
			}
			if typ != protowire.BytesType {
				n, err = skipField(num, typ, b)
				break
			}
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				return errWire
			}
			var k, val string
			if k, val, err = decodeEntry(v); err == nil {
				c.Metadata[k] = val
			}
		case num == 5 && typ == protowire.VarintType:
			var v uint64
			v, n, err = consumeVarint(b)
			c.OneWay = v != 0
		case num == 6 && typ == protowire.VarintType:
			var v uint64
			v, n, err = consumeVarint(b)
			c.Timeout = millisToDuration(int64(v))
		case num == 7 && typ == protowire.VarintType:
			var v uint64
			v, n, err = consumeVarint(b)
			c.FreshID = v != 0
		default:
			n, err = skipField(num, typ, b)
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// decodeEntry decodes a map<string, string> entry.
func decodeEntry(b []byte) (k, v string, err error) {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return "", "", err
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			k, n, err = consumeString(b)
		case num == 2 && typ == protowire.BytesType:
			v, n, err = consumeString(b)
		default:
			n, err = skipField(num, typ, b)
		}
		if err != nil {
			return "", "", err
		}
		b = b[n:]
	}
	return k, v, nil
}

func decodeReply(b []byte, depth int, r *command.Reply) error {
	if depth--; depth < 0 {
		return errTooDeep
	}
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		var v uint64
		switch {
		case num == 1 && typ == protowire.BytesType:
			r.CommandID, n, err = consumeString(b)
		case num == 2 && typ == protowire.BytesType:
			var s string
			s, n, err = consumeString(b)
			r.Type = command.Type(s)
		case num == 3 && typ == protowire.VarintType:
			v, n, err = consumeVarint(b)
			r.Status = command.Status(int32(v))
		case num == 4 && typ == protowire.BytesType:
			var p []byte
			if p, n = protowire.ConsumeBytes(b); n < 0 {
				return errWire
			}
			r.Payload = wireBytes(p)
		case num == 5 && typ == protowire.BytesType:
			r.Error, n, err = consumeString(b)
		case num == 6 && typ == protowire.VarintType:
			v, n, err = consumeVarint(b)
			r.RetryAfter = millisToDuration(int64(v))
		case num == 7 && typ == protowire.VarintType:
			v, n, err = consumeVarint(b)
			r.Code = int32(v)
		default:
			n, err = skipField(num, typ, b)
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
