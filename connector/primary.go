package connector

import "github.com/exchangekit/exchange/command"

// decodePrimary decodes a PRIMARY payload. The controller sends it as
// encoding/json writes command.PrimaryPayload, {"primary":true,"epoch":7}
// (no epoch when it is 0): that exact form is read here without reflection,
// and anything else (spaces, another order, unknown fields, a bad value)
// goes to command.Decode, so the result and the errors are encoding/json's.
// Every connector of a fleet gets one or more PRIMARY per (re)connection: in
// a 100,000-connector storm, encoding/json's decoder was 4 % of the
// connector's CPU (docs/benchmarks.md, "Reconnect storms, seventh pass").
func decodePrimary(b []byte) (command.PrimaryPayload, error) {
	if p, ok := decodePrimaryFast(b); ok {
		return p, nil
	}
	return command.Decode[command.PrimaryPayload](b)
}

// decodePrimaryFast reads {"primary":B} and {"primary":B,"epoch":N}, B true or
// false and N a JSON number of up to 19 digits (no sign, fraction, exponent
// or leading zero), nothing else.
func decodePrimaryFast(b []byte) (command.PrimaryPayload, bool) {
	var p command.PrimaryPayload
	const head = `{"primary":`
	if len(b) < len(head) || string(b[:len(head)]) != head {
		return p, false
	}
	b = b[len(head):]
	switch {
	case len(b) >= 4 && string(b[:4]) == "true":
		p.Primary, b = true, b[4:]
	case len(b) >= 5 && string(b[:5]) == "false":
		b = b[5:]
	default:
		return p, false
	}
	if string(b) == "}" {
		return p, true
	}
	const epoch = `,"epoch":`
	if len(b) < len(epoch)+2 || string(b[:len(epoch)]) != epoch || b[len(b)-1] != '}' {
		return p, false
	}
	digits := b[len(epoch) : len(b)-1]
	if len(digits) == 0 || len(digits) > 19 || (digits[0] == '0' && len(digits) > 1) {
		return p, false
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return p, false
		}
		p.Epoch = p.Epoch*10 + uint64(d-'0')
	}
	return p, true
}
