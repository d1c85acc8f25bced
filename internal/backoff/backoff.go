// Package backoff computes exponential backoff delays with full jitter, the
// schedule that spreads a fleet's retries out instead of synchronising them
// into storms (AWS Architecture Blog, "Exponential Backoff And Jitter").
//
// It is the one backoff of the module. Policy is a pure computation: no
// goroutines, no timers, no clock. The caller counts its consecutive failures
// and asks for the delay:
//
//   - Delay: full jitter, uniform in [0, Ceiling(n)) (the connector's
//     reconnect loop);
//   - EqualJitter: uniform in [Ceiling(n)/2, Ceiling(n)], from a number the
//     caller draws (batch retries, whose state machine must not draw random
//     numbers itself);
//   - Ceiling: no jitter (the controller's primary notification retries).
//
// Waiter is the one stateful helper: a reusable sleep of Ceiling(0),
// Ceiling(1), … with a timer it owns, for retry loops that back off without
// jitter (the controller's accept loop and group commit, the cluster's
// leadership barrier).
//
// # Usage
//
//	p := backoff.Policy{Base: 500 * time.Millisecond, Max: time.Minute}
//	d := p.Delay(failures, rand.Int64N) // uniform in [0, min(Max, Base·2^failures))
//
//	w := backoff.NewWaiter(backoff.Policy{Base: 20 * time.Millisecond, Max: 2 * time.Second})
//	defer w.Stop()
//	for !try() {
//		if w.Wait(ctx) != nil { // 20 ms, 40 ms, 80 ms … 2 s, 2 s …
//			return
//		}
//	}
//	w.Reset() // the next failure waits 20 ms again
package backoff

import (
	"errors"
	"math"
	"time"
)

// Policy is exponential backoff with full jitter: the n-th delay (n counting
// from 0) is drawn uniformly from [0, Ceiling(n)), where
// Ceiling(n) = min(Max, Base·2^n).
type Policy struct {
	// Base is the ceiling of the first delay (n = 0). A Base of zero or less
	// makes every delay zero.
	Base time.Duration
	// Max caps the ceiling. Zero or less means no cap (the ceiling then stops
	// growing only at the largest time.Duration).
	Max time.Duration
}

// Validate reports a negative Base or Max, or a Max below Base.
func (p Policy) Validate() error {
	switch {
	case p.Base < 0 || p.Max < 0:
		return errors.New("backoff: Base and Max must not be negative")
	case p.Max > 0 && p.Max < p.Base:
		return errors.New("backoff: Max must not be below Base")
	}
	return nil
}

// Ceiling returns min(Max, Base·2^n) without overflowing. A negative n counts
// as 0.
func (p Policy) Ceiling(n int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	limit := p.Max
	if limit <= 0 {
		limit = math.MaxInt64
	}
	n = max(n, 0)
	switch {
	case p.Base >= limit:
		return limit
	case n >= 63 || p.Base > limit>>n: // Base·2^n > limit ⇔ Base > ⌊limit/2^n⌋
		return limit
	}
	return p.Base << n
}

// Delay returns the n-th delay: uniform in [0, Ceiling(n)), drawn with
// int64n, which must return a value in [0, m) for m > 0 (math/rand/v2's
// Int64N, or the method of a seeded *rand.Rand in tests). A zero ceiling gives
// a zero delay without calling int64n.
func (p Policy) Delay(n int, int64n func(m int64) int64) time.Duration {
	c := p.Ceiling(n)
	if c <= 0 {
		return 0
	}
	return time.Duration(int64n(int64(c)))
}

// EqualJitter returns the n-th delay with "equal jitter": half of Ceiling(n)
// plus u times the other half, so uniform in [Ceiling(n)/2, Ceiling(n)] for u
// uniform in [0, 1). u is clamped to [0, 1]. The caller draws u, so the same
// u gives the same delay everywhere (a replicated state machine can record
// it).
func (p Policy) EqualJitter(n int, u float64) time.Duration {
	half := p.Ceiling(n) / 2
	u = min(max(u, 0), 1)
	return half + time.Duration(float64(half)*u)
}
