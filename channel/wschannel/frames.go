package wschannel

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// The V1 frame of the reference system (gravitee-exchange §3.2): three fields
// joined by ";;", each a prefix and a value, the exchange JSON always last.
//
//	t:COMMAND;;et:HELLO;;e:{"id":"…","type":"HELLO","payload":{"targetId":"…"}}
//	t:REPLY;;et:HELLO;;e:{"commandId":"…","type":"HELLO","commandStatus":"SUCCEEDED","payload":{…}}
const (
	separator    = ";;"
	prefixType   = "t:"
	prefixExType = "et:"
	prefixEx     = "e:"
	kindCommand  = "COMMAND"
	kindReply    = "REPLY"
	kindUnknown  = "UNKNOWN" // written for a frame with neither kind
)

// AppendFrame appends the V1 encoding of f to dst.
//
// The JSON envelope is written field by field, in the reference's order (id,
// type, payload for a command; commandId, type, commandStatus, errorDetails,
// payload for a reply), so that frames compare byte for byte with the
// reference's. A payload that is JSON is embedded as it is. What V1 has no
// field for travels in extra envelope fields, which the reference ignores
// (unknown JSON properties are skipped by its SerDe):
//
//	command: oneWay (bool), timeoutMs (whole milliseconds, rounded up),
//	         metadata (object of strings)
//	reply:   retryAfterMs (whole milliseconds, rounded up), code (number)
//	both:    payloadText (a payload that is UTF-8 but not JSON, as a string),
//	         payloadBase64 (a payload that is not UTF-8, standard base64)
//
// An empty payload is omitted (the reference omits null fields), except on
// the channel's own UNKNOWN and NO_REPLY replies, which carry "payload":{} as
// the reference's do. A reply with StatusUnspecified has no commandStatus.
//
// Like the other transports, it does not check the frame's fields (the
// receiving Channel does: a command without type is answered with an error,
// see channel.Frame.Validate). A frame with neither a command nor a reply is
// written "t:UNKNOWN;;e:{}", which the peer reads as malformed. It fails
// with an error wrapping channel.ErrMalformedFrame when f is nil, carries
// both kinds, or holds a string that is not UTF-8 (JSON cannot carry it).
func AppendFrame(dst []byte, f *channel.Frame) ([]byte, error) {
	switch {
	case f == nil:
		return dst, fmt.Errorf("wschannel: encode: %w: nil frame", channel.ErrMalformedFrame)
	case f.Command != nil && f.Reply != nil:
		return dst, fmt.Errorf("wschannel: encode: %w: frame carries both a command and a reply", channel.ErrMalformedFrame)
	case f.Command == nil && f.Reply == nil:
		// V1 has no empty exchange; the reference closes with 1002 on a kind
		// it does not know, and DecodeFrame fails on it.
		return append(dst, prefixType+kindUnknown+separator+prefixEx+"{}"...), nil
	}
	e := encoder{b: dst}
	if c := f.Command; c != nil {
		e.header(kindCommand, c.Type)
		e.command(c)
	} else {
		e.header(kindReply, f.Reply.Type)
		e.reply(f.Reply)
	}
	if e.bad != "" {
		return dst, fmt.Errorf("wschannel: encode: %w: %s is not UTF-8", channel.ErrMalformedFrame, e.bad)
	}
	return e.b, nil
}

// EncodeFrame returns the V1 encoding of f (see AppendFrame).
func EncodeFrame(f *channel.Frame) ([]byte, error) { return AppendFrame(nil, f) }

// command writes c's JSON envelope: id, type, payload, then the fields V1
// has no place for (see AppendFrame).
func (e *encoder) command(c *command.Command) {
	e.b = append(e.b, '{')
	e.comma = false
	e.field("id", c.ID)
	e.field("type", string(c.Type))
	e.payload(c.Payload, false)
	if c.OneWay {
		e.b = append(e.b, `,"oneWay":true`...)
	}
	e.millis("timeoutMs", c.Timeout)
	if len(c.Metadata) > 0 {
		e.b = append(e.b, `,"metadata":{`...)
		for i, k := range slices.Sorted(maps.Keys(c.Metadata)) {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.str(k)
			e.b = append(e.b, ':')
			e.str(c.Metadata[k])
		}
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, '}')
}

// reply writes r's JSON envelope: commandId, type, commandStatus,
// errorDetails, payload, then the fields V1 has no place for.
func (e *encoder) reply(r *command.Reply) {
	e.b = append(e.b, '{')
	e.comma = false
	e.field("commandId", r.CommandID)
	e.field("type", string(r.Type))
	if r.Status != command.StatusUnspecified {
		e.field("commandStatus", r.Status.String())
	}
	if r.Error != "" {
		e.field("errorDetails", r.Error)
	}
	e.payload(r.Payload, r.Type == command.TypeUnknown || r.Type == command.TypeNoReply)
	e.millis("retryAfterMs", r.RetryAfter)
	if r.Code != 0 {
		e.b = append(e.b, `,"code":`...)
		e.b = strconv.AppendInt(e.b, int64(r.Code), 10)
	}
	e.b = append(e.b, '}')
}

// encoder writes one frame; bad names the first string that is not UTF-8.
type encoder struct {
	b     []byte
	comma bool
	bad   string
}

// header writes "t:KIND;;et:TYPE;;e:". The exchange type is informative (the
// reference reads the type from the JSON, and so does DecodeFrame); a ';' in
// it would move the field boundaries, so it is written as '_' there.
func (e *encoder) header(kind string, t command.Type) {
	e.b = append(e.b, prefixType...)
	e.b = append(e.b, kind...)
	e.b = append(e.b, separator+prefixExType...)
	for i := 0; i < len(t); i++ {
		if c := t[i]; c == ';' {
			e.b = append(e.b, '_')
		} else {
			e.b = append(e.b, c)
		}
	}
	e.b = append(e.b, separator+prefixEx...)
}

func (e *encoder) key(k string) {
	if e.comma {
		e.b = append(e.b, ',')
	}
	e.comma = true
	e.b = append(e.b, '"')
	e.b = append(e.b, k...)
	e.b = append(e.b, '"', ':')
}

func (e *encoder) field(k, v string) {
	e.key(k)
	e.str(v)
}

func (e *encoder) millis(k string, d time.Duration) {
	if d == 0 {
		return
	}
	e.key(k)
	e.b = strconv.AppendInt(e.b, durationToMillis(d), 10)
}

// payload writes the payload field: raw JSON when p is JSON (and would come
// back byte for byte), payloadText when it is other UTF-8 text, payloadBase64
// otherwise; nothing when p is empty, or {} when emptyObject.
func (e *encoder) payload(p []byte, emptyObject bool) {
	switch {
	case len(p) == 0:
		if emptyObject {
			e.key("payload")
			e.b = append(e.b, '{', '}')
		}
	case embeddable(p, emptyObject):
		e.key("payload")
		e.b = append(e.b, p...)
	case utf8.Valid(p):
		e.key("payloadText")
		e.str(string(p))
	default:
		e.key("payloadBase64")
		e.b = append(e.b, '"')
		e.b = base64.StdEncoding.AppendEncode(e.b, p)
		e.b = append(e.b, '"')
	}
}

// embeddable reports whether p can be the payload field's value and be read
// back unchanged: valid UTF-8 JSON, no surrounding white space (a JSON reader
// drops it), not null (read back as no payload), and not {} on the replies
// whose empty payload is written {} (read back as empty too).
func embeddable(p []byte, emptyObject bool) bool {
	if isSpace(p[0]) || isSpace(p[len(p)-1]) || string(p) == "null" || (emptyObject && string(p) == "{}") {
		return false
	}
	return utf8.Valid(p) && json.Valid(p)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

const hexDigits = "0123456789abcdef"

// str writes s as a JSON string, escaping only what JSON requires (as the
// reference's Jackson does: no HTML escaping, non-ASCII as it is).
func (e *encoder) str(s string) {
	if !utf8.ValidString(s) && e.bad == "" {
		e.bad = strconv.Quote(s)
	}
	e.b = append(e.b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		e.b = append(e.b, s[start:i]...)
		switch c {
		case '"', '\\':
			e.b = append(e.b, '\\', c)
		case '\n':
			e.b = append(e.b, '\\', 'n')
		case '\r':
			e.b = append(e.b, '\\', 'r')
		case '\t':
			e.b = append(e.b, '\\', 't')
		default:
			e.b = append(e.b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	e.b = append(e.b, s[start:]...)
	e.b = append(e.b, '"')
}

// envelope is the JSON exchange of either kind, as DecodeFrame reads it.
type envelope struct {
	ID            string            `json:"id"`
	CommandID     string            `json:"commandId"`
	Type          string            `json:"type"`
	CommandStatus *string           `json:"commandStatus"`
	ErrorDetails  string            `json:"errorDetails"`
	Payload       json.RawMessage   `json:"payload"`
	PayloadText   *string           `json:"payloadText"`
	PayloadBase64 []byte            `json:"payloadBase64"`
	OneWay        bool              `json:"oneWay"`
	TimeoutMs     int64             `json:"timeoutMs"`
	Metadata      map[string]string `json:"metadata"`
	RetryAfterMs  int64             `json:"retryAfterMs"`
	Code          int32             `json:"code"`
}

// DecodeFrame decodes a V1 frame. It reads the fields as the reference does:
// split on ";;", "t:" gives the kind, "et:" the exchange type, and the first
// field that starts with "e:" is the exchange JSON up to the end of the frame,
// ";;" included; unknown fields are skipped and values are trimmed. The type
// is the JSON's (like the reference's SerDe, the "et:" value is not used), and
// unknown JSON properties are ignored. A commandStatus that is not a known
// status is StatusError, as in the reference; a missing one is
// StatusUnspecified.
//
// It fails with an error wrapping channel.ErrMalformedFrame when the frame is
// not a V1 command or reply or its JSON does not parse. It does not check the
// fields: a command without id or type, a reply without command id, are
// returned for the Channel to judge (see channel.Frame.Validate).
func DecodeFrame(b []byte) (*channel.Frame, error) {
	kind, ex, ok := splitFrame(b)
	switch {
	case !ok:
		return nil, fmt.Errorf("wschannel: decode: %w: no %q field in %s", channel.ErrMalformedFrame, prefixEx, abbrev(b))
	case kind != kindCommand && kind != kindReply:
		return nil, fmt.Errorf("wschannel: decode: %w: exchange kind %q is neither %s nor %s", channel.ErrMalformedFrame, abbrev([]byte(kind)), kindCommand, kindReply)
	}
	var env envelope
	if err := json.Unmarshal(ex, &env); err != nil {
		return nil, fmt.Errorf("wschannel: decode: %w: %s exchange: %v", channel.ErrMalformedFrame, strings.ToLower(kind), err)
	}
	return env.frame(kind), nil
}

// frame builds the frame of kind (kindCommand or kindReply) the envelope
// holds.
func (env *envelope) frame(kind string) *channel.Frame {
	payload := []byte(env.Payload)
	switch {
	case string(payload) == "null":
		payload = nil
	case len(payload) == 0 && env.PayloadText != nil:
		payload = []byte(*env.PayloadText)
	case len(payload) == 0 && env.PayloadBase64 != nil:
		payload = env.PayloadBase64
	}
	var f channel.Frame
	if kind == kindCommand {
		f.Command = &command.Command{
			ID:       env.ID,
			Type:     command.Type(env.Type),
			Payload:  payload,
			Metadata: env.Metadata,
			OneWay:   env.OneWay,
			Timeout:  millisToDuration(env.TimeoutMs),
		}
	} else {
		t := command.Type(env.Type)
		if (t == command.TypeUnknown || t == command.TypeNoReply) && string(payload) == "{}" {
			payload = nil
		}
		r := &command.Reply{
			CommandID:  env.CommandID,
			Type:       t,
			Payload:    payload,
			Error:      env.ErrorDetails,
			RetryAfter: millisToDuration(env.RetryAfterMs),
			Code:       env.Code,
		}
		if env.CommandStatus != nil {
			r.Status, _ = command.ParseStatus(*env.CommandStatus)
		}
		f.Reply = r
	}
	return &f
}

// splitFrame finds the kind ("t:") and the exchange ("e:", to the end) of a
// V1 frame; ok is false when there is no exchange field.
func splitFrame(b []byte) (kind string, ex []byte, ok bool) {
	rest := b
	for {
		seg, tail, more := bytes.Cut(rest, []byte(separator))
		switch trimmed := bytes.TrimLeft(seg, " \t\r\n"); {
		case bytes.HasPrefix(trimmed, []byte(prefixEx)):
			start := len(b) - len(rest) + (len(seg) - len(trimmed)) + len(prefixEx)
			return kind, bytes.TrimSpace(b[start:]), true
		case bytes.HasPrefix(trimmed, []byte(prefixType)):
			kind = string(bytes.TrimSpace(trimmed[len(prefixType):]))
		}
		if !more {
			return kind, nil, false
		}
		rest = tail
	}
}

// abbrev quotes the start of b for error messages.
func abbrev(b []byte) string {
	const n = 64
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

// durationToMillis rounds d up to whole milliseconds, so that a short but
// positive duration never becomes 0 ("none") on the wire; negative durations
// keep their sign.
func durationToMillis(d time.Duration) int64 {
	ms := int64(d / time.Millisecond)
	if d > 0 && d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// millisToDuration converts a wire duration; absurdly large values are
// clamped instead of overflowing.
func millisToDuration(ms int64) time.Duration {
	switch {
	case ms > math.MaxInt64/int64(time.Millisecond):
		return math.MaxInt64
	case ms < math.MinInt64/int64(time.Millisecond):
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}
