package logthrottle

import (
	"sync"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	th := New(time.Second)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int64
	}{
		{0, true, 0},
		{time.Millisecond, false, 0},
		{500 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 3},
		{time.Second, false, 0},
		{5 * time.Second, true, 1},
		{6 * time.Second, true, 0},
	}
	for i, s := range steps {
		ok, n := th.Allow(t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d (at %v): Allow() = %t, %d; want %t, %d", i, s.at, ok, n, s.ok, s.suppressed)
		}
	}
}

// Concurrent callers at the same instant: exactly one line goes out, and the
// next one accounts for all the others.
func TestAllowConcurrent(t *testing.T) {
	th := New(time.Minute)
	now := time.Unix(1000, 0)
	const n = 64
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range n {
		wg.Go(func() {
			if ok, _ := th.Allow(now); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("%d lines allowed at one instant, want 1", allowed)
	}
	if ok, skipped := th.Allow(now.Add(time.Minute)); !ok || skipped != n-1 {
		t.Fatalf("Allow() after the interval = %t, %d; want true, %d", ok, skipped, n-1)
	}
}
