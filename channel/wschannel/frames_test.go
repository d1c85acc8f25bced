package wschannel_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/wschannel"
	"github.com/exchangekit/exchange/command"
)

var frameCmp = cmpopts.EquateEmpty()

func cmdFrame(id string, t command.Type, payload string) *channel.Frame {
	var p []byte
	if payload != "" {
		p = []byte(payload)
	}
	return &channel.Frame{Command: &command.Command{ID: id, Type: t, Payload: p}}
}

func replyFrame(id string, t command.Type, s command.Status, errText, payload string) *channel.Frame {
	var p []byte
	if payload != "" {
		p = []byte(payload)
	}
	return &channel.Frame{Reply: &command.Reply{CommandID: id, Type: t, Status: s, Error: errText, Payload: p}}
}

// referenceFrames are the V1 frames of the reference's documentation
// (gravitee-exchange §3.2) and the exact JSON its DefaultExchangeSerDeTest
// pins (§9.1), with the frames they stand for. Each must encode to exactly
// this text and decode back to the frame.
var referenceFrames = []struct {
	name string
	f    *channel.Frame
	wire string
}{
	{"hello command", cmdFrame("3f0a", command.TypeHello, `{"targetId":"8b1c"}`),
		`t:COMMAND;;et:HELLO;;e:{"id":"3f0a","type":"HELLO","payload":{"targetId":"8b1c"}}`},
	{"hello reply", replyFrame("3f0a", command.TypeHello, command.StatusSucceeded, "", `{"targetId":"my-target"}`),
		`t:REPLY;;et:HELLO;;e:{"commandId":"3f0a","type":"HELLO","commandStatus":"SUCCEEDED","payload":{"targetId":"my-target"}}`},
	{"hello refused", replyFrame("3f0a", command.TypeHello, command.StatusError, "Invalid token", ""),
		`t:REPLY;;et:HELLO;;e:{"commandId":"3f0a","type":"HELLO","commandStatus":"ERROR","errorDetails":"Invalid token"}`},
	{"health check", cmdFrame("hc", command.TypeHealthCheck, `{}`),
		`t:COMMAND;;et:HEALTH_CHECK;;e:{"id":"hc","type":"HEALTH_CHECK","payload":{}}`},
	{"health check reply", replyFrame("hc", command.TypeHealthCheck, command.StatusSucceeded, "", `{"healthy":true}`),
		`t:REPLY;;et:HEALTH_CHECK;;e:{"commandId":"hc","type":"HEALTH_CHECK","commandStatus":"SUCCEEDED","payload":{"healthy":true}}`},
	{"primary", cmdFrame("p", command.TypePrimary, `{"primary":true}`),
		`t:COMMAND;;et:PRIMARY;;e:{"id":"p","type":"PRIMARY","payload":{"primary":true}}`},
	{"primary reply", replyFrame("p", command.TypePrimary, command.StatusSucceeded, "", `{}`),
		`t:REPLY;;et:PRIMARY;;e:{"commandId":"p","type":"PRIMARY","commandStatus":"SUCCEEDED","payload":{}}`},
	{"good bye", cmdFrame("g", command.TypeGoodBye, `{"targetId":"my-target","reconnect":true}`),
		`t:COMMAND;;et:GOOD_BYE;;e:{"id":"g","type":"GOOD_BYE","payload":{"targetId":"my-target","reconnect":true}}`},
	{"no reply", replyFrame("x", command.TypeNoReply, command.StatusError, "No handler found for command type 'X'. Ignoring", ""),
		`t:REPLY;;et:NO_REPLY;;e:{"commandId":"x","type":"NO_REPLY","commandStatus":"ERROR","errorDetails":"No handler found for command type 'X'. Ignoring","payload":{}}`},
	{"unknown reply", replyFrame("u", command.TypeUnknown, command.StatusError, "Command unknown", ""),
		`t:REPLY;;et:UNKNOWN;;e:{"commandId":"u","type":"UNKNOWN","commandStatus":"ERROR","errorDetails":"Command unknown","payload":{}}`},
	// DefaultExchangeSerDeTest's exact JSON.
	{"serde good bye", cmdFrame("%id%", command.TypeGoodBye, `{"targetId":"targetId","reconnect":false}`),
		`t:COMMAND;;et:GOOD_BYE;;e:{"id":"%id%","type":"GOOD_BYE","payload":{"targetId":"targetId","reconnect":false}}`},
	{"serde unknown command", cmdFrame("%id%", command.TypeUnknown, `{}`),
		`t:COMMAND;;et:UNKNOWN;;e:{"id":"%id%","type":"UNKNOWN","payload":{}}`},
	{"serde health check reply", replyFrame("commandId", command.TypeHealthCheck, command.StatusSucceeded, "", `{"healthy":true}`),
		`t:REPLY;;et:HEALTH_CHECK;;e:{"commandId":"commandId","type":"HEALTH_CHECK","commandStatus":"SUCCEEDED","payload":{"healthy":true}}`},
	{"serde unknown reply", replyFrame("commandId", command.TypeUnknown, command.StatusError, "error", ""),
		`t:REPLY;;et:UNKNOWN;;e:{"commandId":"commandId","type":"UNKNOWN","commandStatus":"ERROR","errorDetails":"error","payload":{}}`},
}

func TestReferenceFrames(t *testing.T) {
	for _, tc := range referenceFrames {
		t.Run(tc.name, func(t *testing.T) {
			b, err := wschannel.EncodeFrame(tc.f)
			if err != nil {
				t.Fatalf("EncodeFrame() = %v", err)
			}
			if string(b) != tc.wire {
				t.Errorf("EncodeFrame() =\n%s\nwant\n%s", b, tc.wire)
			}
			got, err := wschannel.DecodeFrame([]byte(tc.wire))
			if err != nil {
				t.Fatalf("DecodeFrame() = %v", err)
			}
			if diff := cmp.Diff(tc.f, got, frameCmp); diff != "" {
				t.Errorf("DecodeFrame() differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSeparatorInPayload pins the reference's V1ProtocolAdapterTest and
// AbstractWebSocketChannelTest cases: ";;" and look-alikes of the field
// prefixes inside the payload survive.
func TestSeparatorInPayload(t *testing.T) {
	for _, s := range []string{
		"case x in a) foo ;; b) bar ;; esac",
		"#!/bin/sh\ncase \"$1\" in\n  start) run ;;\n  stop) halt ;;\nesac\n",
		"; ;", "a;;b", "a;;b;;c", "a;;;;b", ";;leading", "trailing;;", "a;;e:b;;t:c", ";;", "e:", "t:REPLY;;et:X;;e:{}",
	} {
		for _, f := range []*channel.Frame{
			cmdFrame("id", "SCRIPT", `{"script":`+quote(s)+`}`),
			replyFrame("id", "SCRIPT", command.StatusSucceeded, s, `{"out":`+quote(s)+`}`),
			cmdFrame("id", "RAW", s), // not JSON: payloadText
		} {
			b, err := wschannel.EncodeFrame(f)
			if err != nil {
				t.Fatalf("EncodeFrame(%q) = %v", s, err)
			}
			got, err := wschannel.DecodeFrame(b)
			if err != nil {
				t.Fatalf("DecodeFrame(%s) = %v", b, err)
			}
			if diff := cmp.Diff(f, got, frameCmp); diff != "" {
				t.Errorf("%q: round trip differs (-want +got):\n%s", s, diff)
			}
		}
	}
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// TestDecodeReference checks frames as the reference may write them, beyond
// what our encoder produces.
func TestDecodeReference(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire string
		want *channel.Frame
	}{
		{"unknown status is ERROR",
			`t:REPLY;;et:HELLO;;e:{"commandId":"c","type":"HELLO","commandStatus":"FAILURE","payload":{"targetId":"t"}}`,
			replyFrame("c", command.TypeHello, command.StatusError, "", `{"targetId":"t"}`)},
		{"unknown properties ignored, any order",
			`t:REPLY;;et:HELLO;;e:{"payload":{"installationId":"i"},"message":"m","type":"HELLO","commandId":"c","commandStatus":"PENDING"}`,
			replyFrame("c", command.TypeHello, command.StatusPending, "", `{"installationId":"i"}`)},
		{"in progress", `t:REPLY;;et:X;;e:{"commandId":"c","type":"X","commandStatus":"IN_PROGRESS"}`,
			replyFrame("c", "X", command.StatusInProgress, "", "")},
		{"null payload", `t:COMMAND;;et:X;;e:{"id":"i","type":"X","payload":null}`, cmdFrame("i", "X", "")},
		{"type from the JSON, not et", `t:COMMAND;;et:OTHER;;e:{"id":"i","type":"X"}`, cmdFrame("i", "X", "")},
		{"values trimmed", "t: COMMAND ;;et: X ;;e: {\"id\":\"i\",\"type\":\"X\"} \n", cmdFrame("i", "X", "")},
		{"no et", `t:COMMAND;;e:{"id":"i","type":"X"}`, cmdFrame("i", "X", "")},
		{"payload whitespace kept inside", `t:COMMAND;;et:X;;e:{"id":"i","type":"X","payload":{ "a" : [1, 2] }}`,
			cmdFrame("i", "X", `{ "a" : [1, 2] }`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wschannel.DecodeFrame([]byte(tc.wire))
			if err != nil {
				t.Fatalf("DecodeFrame() = %v", err)
			}
			if diff := cmp.Diff(tc.want, got, frameCmp); diff != "" {
				t.Errorf("DecodeFrame() differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExtensions checks the fields V1 has no place for: they travel in extra
// envelope properties (which the reference ignores) and come back intact.
func TestExtensions(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *channel.Frame
		wire string
	}{
		{"command", &channel.Frame{Command: &command.Command{
			ID: "c", Type: "ECHO", Payload: []byte(`{"a":1}`), OneWay: true, Timeout: 1500 * time.Millisecond,
			Metadata: map[string]string{"z": "1", "a": "\"q\"\n"},
		}}, `t:COMMAND;;et:ECHO;;e:{"id":"c","type":"ECHO","payload":{"a":1},"oneWay":true,"timeoutMs":1500,"metadata":{"a":"\"q\"\n","z":"1"}}`},
		{"reply", &channel.Frame{Reply: &command.Reply{
			CommandID: "c", Type: "ECHO", Status: command.StatusError, Error: "busy", RetryAfter: 250 * time.Millisecond, Code: 429,
		}}, `t:REPLY;;et:ECHO;;e:{"commandId":"c","type":"ECHO","commandStatus":"ERROR","errorDetails":"busy","retryAfterMs":250,"code":429}`},
		{"unspecified status", replyFrame("c", "X", command.StatusUnspecified, "", ""), `t:REPLY;;et:X;;e:{"commandId":"c","type":"X"}`},
		{"text payload", cmdFrame("c", "X", "plain <text> & é"), `t:COMMAND;;et:X;;e:{"id":"c","type":"X","payloadText":"plain <text> & é"}`},
		{"null text", cmdFrame("c", "X", "null"), `t:COMMAND;;et:X;;e:{"id":"c","type":"X","payloadText":"null"}`},
		{"padded JSON", cmdFrame("c", "X", " {} "), `t:COMMAND;;et:X;;e:{"id":"c","type":"X","payloadText":" {} "}`},
		{"binary payload", cmdFrame("c", "X", "\x00\x01\xfe\xff"), `t:COMMAND;;et:X;;e:{"id":"c","type":"X","payloadBase64":"AAH+/w=="}`},
		{"semicolon in type", cmdFrame("c", "A;B", ""), `t:COMMAND;;et:A_B;;e:{"id":"c","type":"A;B"}`},
		{"control characters", replyFrame("c", "X", command.StatusError, "\x01\t\\", ""), `t:REPLY;;et:X;;e:{"commandId":"c","type":"X","commandStatus":"ERROR","errorDetails":"\u0001\t\\"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := wschannel.EncodeFrame(tc.f)
			if err != nil {
				t.Fatalf("EncodeFrame() = %v", err)
			}
			if string(b) != tc.wire {
				t.Errorf("EncodeFrame() =\n%s\nwant\n%s", b, tc.wire)
			}
			got, err := wschannel.DecodeFrame(b)
			if err != nil {
				t.Fatalf("DecodeFrame() = %v", err)
			}
			if diff := cmp.Diff(tc.f, got, frameCmp); diff != "" {
				t.Errorf("round trip differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, wire := range []string{
		``,
		`hello`,
		`command: {"id":"i","type":"HELLO_COMMAND"}`, // legacy: not in this step
		`primary: true`,
		`t:COMMAND;;et:X`,
		`t:OTHER;;et:X;;e:{"id":"i","type":"X"}`,
		`et:X;;e:{"id":"i","type":"X"}`,
		`t:COMMAND;;et:X;;e:{"id":"i","type":"X"`,
		`t:UNKNOWN;;e:{}`,
		`t:COMMAND;;et:X;;e:{"id":"i","type":"X","timeoutMs":"soon"}`,
		`t:COMMAND;;et:X;;e:[]`,
	} {
		if f, err := wschannel.DecodeFrame([]byte(wire)); !errors.Is(err, channel.ErrMalformedFrame) {
			t.Errorf("DecodeFrame(%q) = (%+v, %v), want an error wrapping ErrMalformedFrame", wire, f, err)
		}
	}
}

// TestDecodeInvalid checks that frames that parse but break the protocol
// reach the caller, for the Channel to answer or refuse them.
func TestDecodeInvalid(t *testing.T) {
	for _, tc := range []struct {
		wire string
		want *channel.Frame
	}{
		{`t:COMMAND;;et:X;;e:{"type":"X"}`, cmdFrame("", "X", "")},
		{`t:COMMAND;;et:X;;e:{"id":"i","payload":{}}`, cmdFrame("i", "", "{}")},
		{`t:REPLY;;et:X;;e:{"type":"X","commandStatus":"SUCCEEDED"}`, replyFrame("", "X", command.StatusSucceeded, "", "")},
	} {
		got, err := wschannel.DecodeFrame([]byte(tc.wire))
		if err != nil {
			t.Fatalf("DecodeFrame(%q) = %v", tc.wire, err)
		}
		if diff := cmp.Diff(tc.want, got, frameCmp); diff != "" {
			t.Errorf("DecodeFrame(%q) differs (-want +got):\n%s", tc.wire, diff)
		}
		if got.Validate() == nil {
			t.Errorf("DecodeFrame(%q).Validate() = nil, want an error", tc.wire)
		}
	}
	// A frame with neither kind goes out as an exchange of unknown kind.
	b, err := wschannel.EncodeFrame(&channel.Frame{})
	if err != nil || string(b) != `t:UNKNOWN;;e:{}` {
		t.Errorf("EncodeFrame(empty frame) = (%q, %v), want t:UNKNOWN;;e:{}", b, err)
	}
}

func TestEncodeMalformed(t *testing.T) {
	for _, f := range []*channel.Frame{
		nil,
		{Command: &command.Command{ID: "i", Type: "X"}, Reply: &command.Reply{CommandID: "i"}},
		cmdFrame("i\xff", "X", ""),
		replyFrame("i", "X", command.StatusError, "bad \xff", ""),
		{Command: &command.Command{ID: "i", Type: "X", Metadata: map[string]string{"k": "\xfe"}}},
	} {
		if b, err := wschannel.EncodeFrame(f); !errors.Is(err, channel.ErrMalformedFrame) {
			t.Errorf("EncodeFrame(%+v) = (%q, %v), want an error wrapping ErrMalformedFrame", f, b, err)
		}
	}
}
