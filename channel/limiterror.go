package channel

import (
	"fmt"
	"time"
)

// LimitError is a refusal by a limit of the peer that says when to try
// again: the server's retry hint (gRPC's google.rpc.RetryInfo on a
// RESOURCE_EXHAUSTED refusal). It wraps ErrLimitExceeded. A connector waits
// about RetryAfter (jittered) before its next attempt instead of its
// growing backoff: the server knows when it will have room (decision 0039).
type LimitError struct {
	// Detail is the server's text: which limit, and its value.
	Detail string
	// RetryAfter is the server's hint; positive.
	RetryAfter time.Duration
}

// Error names the limit and the hint.
func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: %s (retry after %s)", ErrLimitExceeded, e.Detail, e.RetryAfter)
}

// Unwrap returns ErrLimitExceeded.
func (e *LimitError) Unwrap() error { return ErrLimitExceeded }
