package command_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/exchangekit/exchange/command"
)

// roundTrip decodes payload as a T, the way a receiver does; when that
// succeeds, the value must encode, and decode again to the same value, and
// the encoding must be no larger than a fixed function of the input (JSON
// escapes grow a byte to at most 6, "\u00XX"; an invalid byte becomes
// "\ufffd").
func roundTrip[T any](t *testing.T, payload []byte) {
	t.Helper()
	v, err := command.Decode[T](payload)
	if err != nil {
		return
	}
	enc, err := command.Encode(v)
	if err != nil {
		t.Fatalf("Encode(%T decoded from %q) = %v", v, payload, err)
	}
	if !json.Valid(enc) {
		t.Fatalf("Encode(%T) wrote invalid JSON %q", v, enc)
	}
	if bound := 6*len(payload) + 512; len(enc) > bound {
		t.Fatalf("Encode(%T) wrote %d bytes from a %d-byte payload (bound %d)", v, len(enc), len(payload), bound)
	}
	again, err := command.Decode[T](enc)
	if err != nil {
		t.Fatalf("Decode(Encode(%T)) = %v; encoded %q", v, err, enc)
	}
	if diff := cmp.Diff(v, again, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("%T changed in a round trip (-first +second):\n%s", v, diff)
	}
}

// FuzzBuiltinPayloads decodes arbitrary bytes as each payload of the
// built-in commands and replies (HELLO, its reply, GOOD_BYE and its reply,
// HEALTH_CHECK's reply, PRIMARY): decoding never panics, and whatever decodes
// re-encodes to valid JSON of bounded size that decodes to the same value.
func FuzzBuiltinPayloads(f *testing.F) {
	for _, s := range []string{
		`{"targetId":"t1","connectorId":"c1","token":"x","protocolVersion":1,"metadata":{"k":"v"},"capabilities":["batch"]}`,
		`{"targetId":"t","channelId":"c","protocolVersion":1,"limits":{"maxFrameBytes":4194304,"maxInFlight":1024},"heartbeat":30000,"nodeId":"n","capabilities":["batch"]}`,
		`{"targetId":"t","reconnect":true}`,
		`{"healthy":false,"detail":"disk"}`,
		`{"primary":true,"epoch":18446744073709551615}`,
		`{"primary":true,"epoch":18446744073709551616}`,
		`{"protocolVersion":1e400}`,
		`{"heartbeat":-9223372036854775808}`,
		`{"targetId":"\u0000\ud800"}`,
		"{\"targetId\":\"\xff\xfe\"}",
		`{"metadata":{"":""},"capabilities":[]}`,
		`{"metadata":null,"capabilities":null,"limits":null}`,
		`null`, `[]`, `""`, `{}`, ``, `{"targetId":`,
		`{"TARGETID":"case","targetid":"insensitive"}`,
		`{"targetId":"a","targetId":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"metadata":{"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		roundTrip[command.HelloPayload](t, payload)
		roundTrip[command.HelloReplyPayload](t, payload)
		roundTrip[command.GoodByePayload](t, payload)
		roundTrip[command.GoodByeReplyPayload](t, payload)
		roundTrip[command.HealthCheckReplyPayload](t, payload)
		roundTrip[command.PrimaryPayload](t, payload)
	})
}

// Payloads too big to commit as seeds: a 4 MB string and a 4 MB metadata
// value decode and round-trip like small ones.
func TestBuiltinPayloadsLarge(t *testing.T) {
	big := strings.Repeat("x", 4<<20)
	for _, p := range []string{
		`{"targetId":"` + big + `"}`,
		`{"targetId":"t","metadata":{"k":"` + big + `"}}`,
		`{"healthy":true,"detail":"` + strings.Repeat("\\u0000", 1<<20) + `"}`,
	} {
		roundTrip[command.HelloPayload](t, []byte(p))
		roundTrip[command.HealthCheckReplyPayload](t, []byte(p))
	}
}
