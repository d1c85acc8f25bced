// Package command defines what travels over an Exchange channel: a Command, its
// Reply, the reply Status, and the Handler/Mux pair that dispatches commands by
// type, in the style of net/http's Handler and ServeMux.
//
// Every Command gets exactly one Reply (one-way commands excepted). Payloads are
// opaque bytes; by convention they are JSON, and the generic helpers Encode,
// Decode, NewCommand, Succeeded and Typed make typed payloads one line each.
//
// # Usage
//
// Build a Mux and register a handler per command type:
//
//	mux := command.NewMux()
//	mux.Register("ECHO", command.Typed(func(ctx context.Context, in EchoPayload) (EchoPayload, error) {
//		return in, nil
//	}))
//
// Build commands with NewCommand, which assigns a fresh id:
//
//	cmd, err := command.NewCommand("ECHO", EchoPayload{Text: "hi"})
//
// Read a reply's payload with Decode:
//
//	out, err := command.Decode[EchoPayload](reply.Payload)
//
// The built-in types HELLO, GOOD_BYE, HEALTH_CHECK and PRIMARY, and their payloads,
// keep the reference system's type strings and JSON field names so that tools and
// logs read the same across implementations. This package imports only the
// standard library.
package command
