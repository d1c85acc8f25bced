package command

import "strings"

// Status is the outcome carried by a Reply. The names match the reference
// system's CommandStatus, and the values match the wire enum.
type Status int32

// Reply statuses. Replies produced by the exchange itself use only
// StatusSucceeded and StatusError; PENDING and IN_PROGRESS exist for batch
// commands and for peers that report progress.
const (
	StatusUnspecified Status = 0
	StatusSucceeded   Status = 1
	StatusError       Status = 2
	StatusPending     Status = 3
	StatusInProgress  Status = 4
)

var statusNames = [...]string{"UNSPECIFIED", "SUCCEEDED", "ERROR", "PENDING", "IN_PROGRESS"}

// String returns the reference name: "SUCCEEDED", "ERROR", "PENDING" or
// "IN_PROGRESS".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "ERROR"
}

// Terminal reports whether s ends a command: SUCCEEDED or ERROR.
func (s Status) Terminal() bool { return s == StatusSucceeded || s == StatusError }

// ParseStatus parses a status name, ignoring case. Like the reference, any
// unknown name yields StatusError, and ok is false.
func ParseStatus(name string) (s Status, ok bool) {
	for i, n := range statusNames {
		if i > 0 && strings.EqualFold(n, name) {
			return Status(i), true
		}
	}
	return StatusError, false
}

// MarshalText encodes s as its name.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a status name; unknown names become StatusError, as in
// the reference system.
func (s *Status) UnmarshalText(b []byte) error {
	*s, _ = ParseStatus(string(b))
	return nil
}
