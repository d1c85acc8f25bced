package command

import (
	"encoding/json"
	"fmt"
)

// Encode marshals v as a JSON payload. A nil v gives the empty object "{}", the
// payload of commands that carry nothing.
func Encode(v any) ([]byte, error) {
	if v == nil {
		return []byte("{}"), nil
	}
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	if m, ok := v.(json.RawMessage); ok {
		return m, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("command: encode payload: %w", err)
	}
	return b, nil
}

// Decode unmarshals a JSON payload into a T. An empty payload decodes to the
// zero T. Unknown fields are ignored, as the protocol requires.
func Decode[T any](payload []byte) (T, error) {
	var v T
	if len(payload) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(payload, &v); err != nil {
		return v, &PayloadError{Err: err}
	}
	return v, nil
}

// NewCommand returns a command of type t with a fresh id and payload encoded
// from v (see Encode).
func NewCommand(t Type, v any) (*Command, error) {
	b, err := Encode(v)
	if err != nil {
		return nil, err
	}
	return &Command{ID: NewID(), Type: t, Payload: b}, nil
}

// MustCommand is NewCommand that panics on an encoding error; for payloads that
// cannot fail to encode (structs of plain fields), in tests and examples.
func MustCommand(t Type, v any) *Command {
	c, err := NewCommand(t, v)
	if err != nil {
		panic(err)
	}
	return c
}

// Succeeded returns a SUCCEEDED reply to c whose payload is v encoded.
func Succeeded(c *Command, v any) (*Reply, error) {
	b, err := Encode(v)
	if err != nil {
		return nil, err
	}
	return &Reply{CommandID: c.ID, Type: c.Type, Status: StatusSucceeded, Payload: b}, nil
}

// Failed returns an ERROR reply to c with the given reason. It is how a handler
// says "I ran, and the answer is no"; the channel stays up and the caller gets
// the reply (not an error) and inspects its Status.
func Failed(c *Command, reason string) *Reply {
	return &Reply{CommandID: c.ID, Type: c.Type, Status: StatusError, Error: reason}
}

// PayloadError reports a payload that is not valid JSON for the expected type.
type PayloadError struct{ Err error }

func (e *PayloadError) Error() string { return "command: decode payload: " + e.Err.Error() }

// Unwrap returns the underlying JSON error.
func (e *PayloadError) Unwrap() error { return e.Err }
