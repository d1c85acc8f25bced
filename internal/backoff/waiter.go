package backoff

import (
	"context"
	"time"
)

// Waiter sleeps a Policy's delays without jitter: the first Wait sleeps
// Ceiling(0), the next Ceiling(1), and so on (Base, 2·Base, 4·Base … up to
// Max), until Reset starts over. It reuses one timer, which Stop releases.
//
// A Waiter is not safe for concurrent use: the retry loop that owns it calls
// every method.
type Waiter struct {
	p Policy
	n int // Waits since the last Reset
	t *time.Timer
}

// NewWaiter returns a Waiter over p whose next Wait sleeps Ceiling(0).
func NewWaiter(p Policy) *Waiter { return &Waiter{p: p} }

// Next returns the delay the next Wait sleeps.
func (w *Waiter) Next() time.Duration { return w.p.Ceiling(w.n) }

// Wait sleeps Next() and moves on to the following delay. It returns early
// with ctx's error if ctx is done first (the delay still counts as used).
func (w *Waiter) Wait(ctx context.Context) error {
	d := w.Next()
	if w.n < 63 { // Ceiling is at its largest from 63 on: stop counting
		w.n++
	}
	if w.t == nil {
		w.t = time.NewTimer(d)
	} else {
		w.t.Reset(d)
	}
	select {
	case <-w.t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reset makes the next Wait sleep Ceiling(0) again.
func (w *Waiter) Reset() { w.n = 0 }

// Stop releases the timer. The Waiter may still be used afterwards.
func (w *Waiter) Stop() {
	if w.t != nil {
		w.t.Stop()
	}
}
