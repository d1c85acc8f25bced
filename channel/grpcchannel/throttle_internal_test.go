package grpcchannel

import (
	"testing"
	"time"
)

// fakeThrottle is a throttle on a clock the test moves, whose draws are
// always draw.
func fakeThrottle(draw float64) (*throttle, *time.Time) {
	now := time.Unix(1_000_000, 0)
	t := newThrottle()
	t.now = func() time.Time { return now }
	t.float = func() float64 { return draw }
	return t, &now
}

// Below throttleMin answers in the window nothing is throttled, however bad
// they were: a lone connector is never held back by its own refusals.
func TestThrottleNeedsEnoughRequests(t *testing.T) {
	th, _ := fakeThrottle(0)
	for range throttleMin - 1 {
		th.answered(false)
	}
	if !th.admit() {
		t.Fatalf("admit() = false after %d refusals, want true below throttleMin", throttleMin-1)
	}
	th.answered(false)
	if th.admit() {
		t.Fatalf("admit() = true after %d refusals and a draw of 0, want false", throttleMin)
	}
}

// The share refused is (requests − K·accepts)/(requests + 1), local refusals
// counted as requests.
func TestThrottleProbability(t *testing.T) {
	for _, c := range []struct {
		name              string
		refused, accepted int
		draw              float64
		admit             bool
	}{
		{"all accepted", 0, 100, 0, true},                                      // p < 0
		{"half refused: K requests per accept is the budget", 50, 50, 0, true}, // p = 0
		{"two thirds refused", 100, 50, 0, false},                              // p = (150 − 100)/151 = 0.33
		{"four fifths refused, low draw", 80, 20, 0.1, false},                  // p = (100 − 40)/101 = 0.59
		{"four fifths refused, high draw", 80, 20, 0.6, true},
		{"all refused", 100, 0, 0.98, false}, // p = 100/101 = 0.990
	} {
		t.Run(c.name, func(t *testing.T) {
			th, _ := fakeThrottle(c.draw)
			for range c.refused {
				th.answered(false)
			}
			for range c.accepted {
				th.answered(true)
			}
			requests := c.refused + c.accepted
			p := float64(requests-throttleK*c.accepted) / float64(requests+1)
			if got := th.admit(); got != c.admit {
				t.Fatalf("admit() = %v with %d refused, %d accepted, draw %v (p %.2f), want %v", got, c.refused, c.accepted, c.draw, p, c.admit)
			}
		})
	}
}

// Local refusals count as requests, and the window forgets: once the
// answers are older than throttleWindow, everything is admitted again.
func TestThrottleWindow(t *testing.T) {
	th, now := fakeThrottle(0.5)
	for range 100 {
		th.answered(false)
	}
	refused := 0
	for range 1000 {
		if !th.admit() {
			refused++
		}
	}
	if refused != 1000 {
		t.Fatalf("%d of 1000 refused with p ≈ 0.99 and draws of 0.5, want all", refused)
	}
	if r, a := th.sumsLocked(now.UnixNano() / int64(throttleBucket)); r != 1100 || a != 0 {
		t.Fatalf("window holds %d requests, %d accepts; want 1100 (local refusals included), 0", r, a)
	}
	*now = now.Add(throttleWindow - throttleBucket)
	if th.admit() {
		t.Fatal("admit() = true while the answers are still in the window")
	}
	*now = now.Add(throttleBucket)
	if !th.admit() {
		t.Fatal("admit() = false once the answers are older than the window")
	}
}

// A nil throttle (WithoutThrottle) admits everything and records nothing.
func TestThrottleNil(t *testing.T) {
	var th *throttle
	th.answered(false)
	if !th.admit() {
		t.Fatal("nil throttle refused")
	}
}
