// Package logthrottle keeps a repeated log line from flooding the logs: a
// Throttle lets one line through per interval and counts the ones it held
// back, so the next line that goes out can say how many were not logged.
//
// # Usage
//
//	var dropped = logthrottle.New(time.Second)
//	...
//	if ok, skipped := dropped.Allow(time.Now()); ok {
//		log.Warn("event dropped", "not_logged_since_last", skipped)
//	}
//
// The counts are for the log reader; metrics should count every occurrence.
package logthrottle

import (
	"sync/atomic"
	"time"
)

// Throttle lets one log line through per interval and counts the others. The
// zero value lets every line through; use New. It is safe for concurrent use.
type Throttle struct {
	every      time.Duration
	next       atomic.Int64 // unix nanoseconds before which lines are held back
	suppressed atomic.Int64
}

// New returns a Throttle letting at most one line through per every.
func New(every time.Duration) *Throttle { return &Throttle{every: every} }

// Allow reports whether a line may be logged at now and, when it may, how many
// were held back since the last one that was.
func (t *Throttle) Allow(now time.Time) (ok bool, suppressed int64) {
	n := t.next.Load()
	if now.UnixNano() < n || !t.next.CompareAndSwap(n, now.Add(t.every).UnixNano()) {
		t.suppressed.Add(1)
		return false, 0
	}
	return true, t.suppressed.Swap(0)
}
