package controller

import (
	"fmt"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	f := newFailureLimiter(1, 3) // 3 failures, then one per second
	for i := range 3 {
		if f.blocked("a", t0) {
			t.Fatalf("blocked before failure #%d", i+1)
		}
		f.fail("a", t0)
	}
	if !f.blocked("a", t0) {
		t.Fatal("not blocked after 3 failures")
	}
	if f.blocked("b", t0) {
		t.Fatal("another source blocked")
	}
	if !f.blocked("a", t0.Add(900*time.Millisecond)) {
		t.Fatal("unblocked before a token refilled")
	}
	if f.blocked("a", t0.Add(time.Second)) {
		t.Fatal("still blocked after a token refilled")
	}
	f.fail("a", t0.Add(time.Second))
	if !f.blocked("a", t0.Add(time.Second)) {
		t.Fatal("not blocked after spending the refilled token")
	}
}

func TestFailureLimiterOff(t *testing.T) {
	f := newFailureLimiter(1, -1)
	now := time.Unix(1000, 0)
	for range 100 {
		f.fail("a", now)
	}
	if f.blocked("a", now) {
		t.Fatal("blocked with the limit off")
	}
}

// The sources remembered are bounded: refilled ones are forgotten first.
func TestFailureLimiterBounded(t *testing.T) {
	f := newFailureLimiter(1, 2)
	t0 := time.Unix(1000, 0)
	f.fail("old", t0)
	for i := range maxFailureSources + 10 {
		f.fail(fmt.Sprint("s", i), t0.Add(time.Hour))
	}
	if n := len(f.src); n > maxFailureSources {
		t.Fatalf("%d sources remembered, want at most %d", n, maxFailureSources)
	}
	if _, ok := f.src["old"]; ok {
		t.Error("a refilled source was kept over recent ones")
	}
}
