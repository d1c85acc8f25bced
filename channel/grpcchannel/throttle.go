package grpcchannel

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Adaptive client-side throttling of a Dialer's streams (decision 0049; the
// Google SRE book, "Handling Overload", client-side throttling). A Dialer
// shared by many connectors (a gateway: one connection, a stream per
// connector) remembers, over the last throttleWindow, how many of its
// streams the server answered (requests, its own refusals included) and how
// many it took (accepts). While the server refuses at its handshake limit,
// a new stream is refused by the Dialer itself, before anything is sent,
// with probability
//
//	max(0, (requests − throttleK·accepts) / (requests + 1))
//
// so the server sees about throttleK streams per stream it can take instead
// of every attempt of a storm, and a refusal that costs the server a stream
// and the client a stream, a status and a gRPC error costs neither. The
// caller (a connector) treats both refusals alike: it backs off. A Dialer
// that made fewer than throttleMin requests in the window is never
// throttled: one connector on a connection of its own (a device) retries at
// most a few times a window, so it is never held back by its own history.
const (
	throttleK       = 2
	throttleMin     = 64
	throttleBuckets = 20
	throttleBucket  = 100 * time.Millisecond
	throttleWindow  = throttleBuckets * throttleBucket // 2 s
)

// throttle is a Dialer's record of recent answers; safe for concurrent use.
// A nil *throttle admits everything (WithoutThrottle).
type throttle struct {
	now   func() time.Time // tests substitute a clock
	float func() float64   // tests substitute the draw

	mu      sync.Mutex // protects buckets
	buckets [throttleBuckets]throttleCount
}

// throttleCount is one throttleBucket of the window.
type throttleCount struct {
	at       int64 // the bucket's index (time / throttleBucket); stale when older than the window
	requests int
	accepts  int
}

func newThrottle() *throttle { return &throttle{now: time.Now, float: rand.Float64} }

// bucketLocked returns the bucket for index i, emptied if it held an older
// one. t.mu must be held.
func (t *throttle) bucketLocked(i int64) *throttleCount {
	b := &t.buckets[i%throttleBuckets]
	if b.at != i {
		*b = throttleCount{at: i}
	}
	return b
}

// sumsLocked returns the requests and accepts of the window that ends with
// bucket i. t.mu must be held.
func (t *throttle) sumsLocked(i int64) (requests, accepts int) {
	for _, b := range t.buckets {
		if b.at > i-throttleBuckets && b.at <= i {
			requests += b.requests
			accepts += b.accepts
		}
	}
	return requests, accepts
}

// admit reports whether a new stream may be opened; a stream refused here
// counts as a request of the window.
func (t *throttle) admit() bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.now().UnixNano() / int64(throttleBucket)
	requests, accepts := t.sumsLocked(i)
	if requests < throttleMin {
		return true
	}
	p := float64(requests-throttleK*accepts) / float64(requests+1)
	if p <= 0 || t.float() >= p {
		return true
	}
	t.bucketLocked(i).requests++
	return false
}

// answered records the server's answer to a stream: taken (accepted) or
// refused at its limit. Other failures (unreachable, closing) are not
// recorded: they say nothing of the server's capacity.
func (t *throttle) answered(accepted bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucketLocked(t.now().UnixNano() / int64(throttleBucket))
	b.requests++
	if accepted {
		b.accepts++
	}
}
