package batch

import (
	"fmt"
	"strings"
)

// Status is the state of a batch, or of one command of a batch. The names are
// the reference system's. A batch goes CREATED → IN_PROGRESS, then to
// SUCCEEDED or ERROR (terminal, final), or back to PENDING to be retried. A
// command goes PENDING → IN_PROGRESS → SUCCEEDED or ERROR, and back to
// IN_PROGRESS when a later attempt re-sends it.
//
// The zero Status is "unset": it is never stored, and in a Filter it matches
// every status.
type Status uint8

// Statuses.
const (
	StatusCreated    Status = iota + 1 // stored, never attempted
	StatusPending                      // waiting for an attempt (a retry, or a resumed attempt)
	StatusInProgress                   // an attempt is running; for a command: sent, reply awaited
	StatusSucceeded                    // every command succeeded (terminal)
	StatusError                        // failed for good: retries exhausted (terminal)
)

var statusNames = [...]string{"", "CREATED", "PENDING", "IN_PROGRESS", "SUCCEEDED", "ERROR"}

// String returns the reference name, such as "IN_PROGRESS".
func (s Status) String() string {
	if s > 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Terminal reports whether s is final: SUCCEEDED or ERROR.
func (s Status) Terminal() bool { return s == StatusSucceeded || s == StatusError }

func (s Status) valid() bool { return s >= StatusCreated && s <= StatusError }

// ParseStatus parses a status name, ignoring case. Unlike the reference, an
// unknown name is an error (wrapping ErrInvalid), not ERROR.
func ParseStatus(name string) (Status, error) {
	for i, n := range statusNames {
		if i > 0 && strings.EqualFold(n, name) {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown batch status %q", ErrInvalid, name)
}

// MarshalText encodes s as its name; the unset Status encodes as "".
func (s Status) MarshalText() ([]byte, error) {
	if s == 0 {
		return []byte{}, nil
	}
	if !s.valid() {
		return nil, fmt.Errorf("%w: batch status %d", ErrInvalid, uint8(s))
	}
	return []byte(statusNames[s]), nil
}

// UnmarshalText decodes a name written by MarshalText.
func (s *Status) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*s = 0
		return nil
	}
	v, err := ParseStatus(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
