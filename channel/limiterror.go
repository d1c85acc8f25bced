package channel

import (
	"fmt"
	"time"
)

// LimitError is a refusal by a limit of the peer that says when to try
// again: the server's retry hint (gRPC's google.rpc.RetryInfo on a
// RESOURCE_EXHAUSTED refusal, a WebSocket 503's Retry-After). It wraps
// ErrLimitExceeded, so callers that branch on that are unchanged. The
// connector of this module keeps its own full-jitter backoff after such a
// refusal, as after any failure (decision 0039: connectors that came back at
// a fixed hint crowded out a 100,000-connector start); a caller of its own
// may read the hint.
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
