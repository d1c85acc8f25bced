package wschannel_test

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/wschannel"
	"github.com/exchangekit/exchange/command"
)

// FuzzDecodeFrame feeds arbitrary bytes to DecodeFrame: it must not panic,
// must fail only with ErrMalformedFrame, and whatever it decodes must encode
// and decode again to the same frame.
func FuzzDecodeFrame(f *testing.F) {
	for _, tc := range referenceFrames {
		f.Add([]byte(tc.wire))
	}
	f.Add([]byte(`t:COMMAND;;et:X;;e:{"id":"i","type":"X","payloadText":"a;;b","oneWay":true,"timeoutMs":5,"metadata":{"k":"v"}}`))
	f.Add([]byte(`t:REPLY;;et:X;;e:{"commandId":"c","type":"X","payloadBase64":"AAH+/w==","retryAfterMs":-3,"code":7}`))
	f.Add([]byte(`t:REPLY;;e:{"commandId":"c","type":"UNKNOWN","payload":{}}`))
	f.Add([]byte(`command: {"id":"i"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := wschannel.DecodeFrame(b)
		if err != nil {
			if !errors.Is(err, channel.ErrMalformedFrame) {
				t.Fatalf("DecodeFrame(%q) = %v, want an error wrapping ErrMalformedFrame", b, err)
			}
			return
		}
		if !fits(fr) {
			return // e.g. a string the JSON decoder repaired, or a clamped duration
		}
		enc, err := wschannel.EncodeFrame(fr)
		if err != nil {
			t.Fatalf("EncodeFrame(DecodeFrame(%q)) = %v", b, err)
		}
		again, err := wschannel.DecodeFrame(enc)
		if err != nil {
			t.Fatalf("DecodeFrame(%q), re-encoded from %q: %v", enc, b, err)
		}
		if diff := cmp.Diff(fr, again, frameCmp); diff != "" {
			t.Fatalf("%q: decode(encode(decode)) differs (-first +second):\n%s", b, diff)
		}
	})
}

// FuzzRoundTrip builds frames from fuzzed fields: every frame that fits the
// format must come back from decode(encode(f)) equal to f.
func FuzzRoundTrip(f *testing.F) {
	f.Add(true, "3f0a", "HELLO", []byte(`{"targetId":"t"}`), "k", "v", false, int64(60000), uint8(1), "", int32(0))
	f.Add(false, "c", "NO_REPLY", []byte(nil), "", "", false, int64(0), uint8(2), "No handler", int32(0))
	f.Add(true, "a;;e:b", "t:c;;", []byte("case x in a) foo ;; esac"), "m;;", ";;", true, int64(-1), uint8(0), "", int32(-5))
	f.Add(false, "c", "X", []byte{0, 0xff, ';', ';'}, "", "", false, int64(250), uint8(4), "e:", int32(429))
	f.Fuzz(func(t *testing.T, isCommand bool, id, typ string, payload []byte, mk, mv string, oneWay bool, ms int64, status uint8, errText string, code int32) {
		var fr channel.Frame
		d := time.Duration(ms%(1<<40)) * time.Millisecond
		if isCommand {
			fr.Command = &command.Command{ID: id, Type: command.Type(typ), Payload: payload, OneWay: oneWay, Timeout: d}
			if mk != "" || mv != "" {
				fr.Command.Metadata = map[string]string{mk: mv}
			}
		} else {
			fr.Reply = &command.Reply{CommandID: id, Type: command.Type(typ), Status: command.Status(status % 5),
				Payload: payload, Error: errText, RetryAfter: d, Code: code}
		}
		enc, err := wschannel.EncodeFrame(&fr)
		if !fits(&fr) {
			if err == nil && !stringsValid(&fr) {
				t.Fatalf("EncodeFrame(%+v) = %q, want an error", fr, enc)
			}
			return
		}
		if err != nil {
			t.Fatalf("EncodeFrame(%+v) = %v", fr, err)
		}
		got, err := wschannel.DecodeFrame(enc)
		if err != nil {
			t.Fatalf("DecodeFrame(%q) = %v", enc, err)
		}
		if diff := cmp.Diff(&fr, got, frameCmp); diff != "" {
			t.Fatalf("%q: decode(encode(f)) differs (-f +decoded):\n%s", enc, diff)
		}
	})
}

// fits reports whether f is a frame the V1 format carries exactly: one kind,
// UTF-8 strings, a known status, durations in whole milliseconds, and not the
// one payload the format cannot tell from none ({} on UNKNOWN and NO_REPLY
// replies).
func fits(f *channel.Frame) bool {
	if (f.Command == nil) == (f.Reply == nil) || !stringsValid(f) {
		return false
	}
	if c := f.Command; c != nil {
		return c.Timeout%time.Millisecond == 0
	}
	r := f.Reply
	if (r.Type == command.TypeUnknown || r.Type == command.TypeNoReply) && string(r.Payload) == "{}" {
		return false
	}
	return r.Status >= command.StatusUnspecified && r.Status <= command.StatusInProgress && r.RetryAfter%time.Millisecond == 0
}

func stringsValid(f *channel.Frame) bool {
	if c := f.Command; c != nil {
		for k, v := range c.Metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return false
			}
		}
		return utf8.ValidString(c.ID) && utf8.ValidString(string(c.Type))
	}
	r := f.Reply
	return utf8.ValidString(r.CommandID) && utf8.ValidString(string(r.Type)) && utf8.ValidString(r.Error)
}

// FuzzDecodeLegacyFrame feeds arbitrary bytes to DecodeLegacyFrame: it must
// not panic, must fail only with ErrMalformedFrame, and what it decodes must
// encode again (except the GOOD_BYE that asks to reconnect, which a legacy
// peer cannot be sent).
func FuzzDecodeLegacyFrame(f *testing.F) {
	for _, tc := range legacyFrames {
		f.Add([]byte(tc.wire))
	}
	f.Add([]byte(`command: {"id":"g","type":"GOOD_BYE","payload":{"reconnect":true}}`))
	f.Add([]byte(`reply: {"commandId":"h","type":"HELLO_REPLY","commandStatus":"FAILURE","payload":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := wschannel.DecodeLegacyFrame(b)
		if err != nil {
			if !errors.Is(err, channel.ErrMalformedFrame) {
				t.Fatalf("DecodeLegacyFrame(%q) = %v, want an error wrapping ErrMalformedFrame", b, err)
			}
			return
		}
		if (fr.Command == nil) == (fr.Reply == nil) {
			t.Fatalf("DecodeLegacyFrame(%q) = %+v, want exactly one kind", b, fr)
		}
		if _, err := wschannel.AppendLegacyFrame(nil, fr); err != nil && !errors.Is(err, channel.ErrClosed) && !errors.Is(err, channel.ErrMalformedFrame) {
			t.Fatalf("AppendLegacyFrame(DecodeLegacyFrame(%q)) = %v", b, err)
		}
	})
}
