package connector

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/exchangekit/exchange/command"
)

// decodePrimary gives what encoding/json gives, for the controller's own
// form (read without reflection) and for any other input (handed to it).
func TestDecodePrimary(t *testing.T) {
	for _, p := range []command.PrimaryPayload{{}, {Primary: true}, {Epoch: 1}, {Primary: true, Epoch: 42}, {Primary: true, Epoch: math.MaxUint64}} {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := decodePrimaryFast(b); p.Epoch < 1e18 && (!ok || got != p) {
			t.Errorf("decodePrimaryFast(%s) = %+v, %v; want %+v, true", b, got, ok, p)
		}
		if got, err := decodePrimary(b); err != nil || got != p {
			t.Errorf("decodePrimary(%s) = %+v, %v; want %+v", b, got, err, p)
		}
	}
	for _, s := range []string{
		``, `{}`, `{"primary":true }`, `{ "primary":true}`, `{"epoch":3,"primary":true}`,
		`{"primary":true,"epoch":01}`, `{"primary":true,"epoch":-1}`, `{"primary":true,"epoch":1.5}`,
		`{"primary":true,"epoch":}`, `{"primary":true,"epoch":18446744073709551616}`, `{"primary":tru}`,
		`{"primary":true,"epoch":7,"x":1}`, `{"primary":"yes"}`, `{"primary":true}}`, `null`,
	} {
		fast, ok := decodePrimaryFast([]byte(s))
		got, err := decodePrimary([]byte(s))
		want, werr := command.Decode[command.PrimaryPayload]([]byte(s))
		if got != want || (err == nil) != (werr == nil) {
			t.Errorf("decodePrimary(%s) = %+v, %v; encoding/json gives %+v, %v", s, got, err, want, werr)
		}
		if ok && fast != want {
			t.Errorf("decodePrimaryFast(%s) = %+v, true; encoding/json gives %+v", s, fast, want)
		}
	}
}

// Whatever the bytes, the fast path either declines or agrees with
// encoding/json.
func FuzzDecodePrimary(f *testing.F) {
	for _, s := range []string{`{"primary":true,"epoch":12}`, `{"primary":false}`, `{"primary":true,"epoch":0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := decodePrimaryFast(b)
		if !ok {
			return
		}
		want, err := command.Decode[command.PrimaryPayload](b)
		if err != nil || fast != want {
			t.Fatalf("decodePrimaryFast(%q) = %+v; encoding/json gives %+v, %v", b, fast, want, err)
		}
	})
}

func BenchmarkDecodePrimary(b *testing.B) {
	payload := []byte(`{"primary":true,"epoch":123456}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodePrimary(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := command.Decode[command.PrimaryPayload](payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}
