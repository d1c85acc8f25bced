package backoff_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/exchangekit/exchange/internal/backoff"
)

func TestWaiterNextTable(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tests := []struct {
		name  string
		p     backoff.Policy
		steps string // w: Wait, r: Reset
		want  []time.Duration
	}{
		// want[i] is Next() before step i, and after the last step.
		{"doubles to the cap", backoff.Policy{Base: 20 * ms, Max: 2 * time.Second}, "wwwwwwwww",
			[]time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, 1280 * ms, 2 * time.Second, 2 * time.Second, 2 * time.Second}},
		{"reset starts over", backoff.Policy{Base: 5 * ms, Max: time.Second}, "wwwrw",
			[]time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 5 * ms, 10 * ms}},
		{"reset before any wait", backoff.Policy{Base: 5 * ms, Max: time.Second}, "rw",
			[]time.Duration{5 * ms, 5 * ms, 10 * ms}},
		{"zero base never waits", backoff.Policy{Max: time.Second}, "www",
			[]time.Duration{0, 0, 0, 0}},
		{"base at the cap", backoff.Policy{Base: time.Second, Max: time.Second}, "ww",
			[]time.Duration{time.Second, time.Second, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w := backoff.NewWaiter(tt.p)
				defer w.Stop()
				for i, step := range tt.steps {
					if got := w.Next(); got != tt.want[i] {
						t.Fatalf("before step %d (%c): Next() = %v, want %v", i, step, got, tt.want[i])
					}
					switch step {
					case 'w':
						start := time.Now()
						if err := w.Wait(t.Context()); err != nil {
							t.Fatalf("step %d: Wait() = %v, want nil", i, err)
						}
						if slept := time.Since(start); slept != tt.want[i] {
							t.Fatalf("step %d: Wait slept %v, want %v", i, slept, tt.want[i])
						}
					case 'r':
						w.Reset()
					}
				}
				if got, want := w.Next(), tt.want[len(tt.steps)]; got != want {
					t.Fatalf("after the steps: Next() = %v, want %v", got, want)
				}
			})
		})
	}
}

func TestWaiterCountSaturates(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w := backoff.NewWaiter(backoff.Policy{Base: 1, Max: time.Millisecond})
		defer w.Stop()
		for i := range 200 { // far past 63 doublings: no overflow, no wrap to Base
			if err := w.Wait(t.Context()); err != nil {
				t.Fatalf("Wait %d = %v", i, err)
			}
		}
		if got := w.Next(); got != time.Millisecond {
			t.Fatalf("Next() after 200 waits = %v, want %v", got, time.Millisecond)
		}
	})
}

func TestWaiterContextDone(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w := backoff.NewWaiter(backoff.Policy{Base: time.Second, Max: time.Minute})
		defer w.Stop()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := w.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait() = %v, want context.DeadlineExceeded", err)
		}
		if slept := time.Since(start); slept != 300*time.Millisecond {
			t.Fatalf("Wait returned after %v, want 300ms (ctx's deadline)", slept)
		}
		// The interrupted delay counts as used, as a completed one does.
		if got := w.Next(); got != 2*time.Second {
			t.Fatalf("Next() after an interrupted Wait = %v, want 2s", got)
		}
		// The reused timer is not left firing early: the next Wait sleeps in full.
		start = time.Now()
		if err := w.Wait(t.Context()); err != nil {
			t.Fatalf("Wait() = %v", err)
		}
		if slept := time.Since(start); slept != 2*time.Second {
			t.Fatalf("Wait after an interrupted one slept %v, want 2s", slept)
		}
	})
}
