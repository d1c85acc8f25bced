package channel

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// handlerCtx must behave as the context.WithDeadline it replaces. Each case
// runs in a synctest bubble, so deadlines pass on the fake clock, without
// sleeping.

var errChannelDied = errors.New("channel died")

type ctxKey struct{}

// wantEnded checks that ctx has ended with err and cause.
func wantEnded(t *testing.T, ctx context.Context, err, cause error) {
	t.Helper()
	select {
	case <-ctx.Done():
	default:
		t.Fatal("Done() not closed, want the context ended")
	}
	if got := ctx.Err(); !errors.Is(got, err) {
		t.Errorf("Err() = %v, want %v", got, err)
	}
	if got := context.Cause(ctx); !errors.Is(got, cause) {
		t.Errorf("Cause() = %v, want %v", got, cause)
	}
}

func TestHandlerCtxDeadline(t *testing.T) {
	for _, armed := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithCancelCause(context.WithValue(t.Context(), ctxKey{}, "v"))
			defer cancel(nil)
			start := time.Now()
			hc := newHandlerCtx(parent, start.Add(time.Second))
			defer hc.cancel()
			if dl, ok := hc.Deadline(); !ok || !dl.Equal(start.Add(time.Second)) {
				t.Errorf("Deadline() = %v, %t, want %v", dl, ok, start.Add(time.Second))
			}
			if got := hc.Value(ctxKey{}); got != "v" {
				t.Errorf("Value() = %v, want the parent's", got)
			}
			if armed {
				<-hc.Done()
				if d := time.Since(start); d != time.Second {
					t.Errorf("Done() closed after %v, want 1s", d)
				}
			} else {
				if err := hc.Err(); err != nil {
					t.Fatalf("Err() before the deadline = %v, want nil", err)
				}
				time.Sleep(time.Second) // fake clock
			}
			wantEnded(t, hc, context.DeadlineExceeded, context.DeadlineExceeded)
		})
	}
}

func TestHandlerCtxParentEnds(t *testing.T) {
	for _, armed := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithCancelCause(t.Context())
			hc := newHandlerCtx(parent, time.Now().Add(time.Hour))
			defer hc.cancel()
			if armed {
				hc.Done()
			}
			cancel(errChannelDied)
			synctest.Wait() // the parent's AfterFunc has run
			wantEnded(t, hc, context.Canceled, errChannelDied)
		})
	}
}

func TestHandlerCtxCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hc := newHandlerCtx(t.Context(), time.Now().Add(time.Hour))
		done := hc.Done()
		hc.cancel()
		<-done
		wantEnded(t, hc, context.Canceled, context.Canceled)
		hc.cancel() // idempotent
		// Ending is final: the deadline passing later changes nothing.
		time.Sleep(2 * time.Hour)
		wantEnded(t, hc, context.Canceled, context.Canceled)
	})
}

func TestHandlerCtxParentDeadlineFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		hc := newHandlerCtx(parent, time.Now().Add(time.Hour))
		defer hc.cancel()
		if dl, _ := hc.Deadline(); !dl.Equal(time.Now().Add(time.Second)) {
			t.Errorf("Deadline() = %v, want the parent's, 1s from now", dl)
		}
		<-hc.Done()
		wantEnded(t, hc, context.DeadlineExceeded, context.DeadlineExceeded)
	})
}

// Contexts derived from a handlerCtx end with it, and context.AfterFunc
// works on it (both arm it, then link to the context it stands for).
func TestHandlerCtxDerived(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hc := newHandlerCtx(t.Context(), time.Now().Add(time.Second))
		defer hc.cancel()
		child, cancelChild := context.WithCancel(hc)
		defer cancelChild()
		timeout, cancelTimeout := context.WithTimeout(hc, time.Hour)
		defer cancelTimeout()
		var ran sync.WaitGroup
		ran.Add(1)
		context.AfterFunc(hc, ran.Done)
		stop := context.AfterFunc(hc, func() { t.Error("a stopped AfterFunc ran") })
		if !stop() {
			t.Error("stop() = false, want true before the context ended")
		}

		<-child.Done()
		wantEnded(t, child, context.DeadlineExceeded, context.DeadlineExceeded)
		<-timeout.Done()
		wantEnded(t, timeout, context.DeadlineExceeded, context.DeadlineExceeded)
		ran.Wait()

		// Registered after the end: runs at once.
		late := make(chan struct{})
		context.AfterFunc(hc, func() { close(late) })
		<-late
		// A derived context released before the end unregisters itself.
		other := newHandlerCtx(t.Context(), time.Now().Add(time.Hour))
		defer other.cancel()
		early, cancelEarly := context.WithCancel(other)
		cancelEarly()
		wantEnded(t, early, context.Canceled, context.Canceled)
	})
}

func TestHandlerCtxConcurrent(t *testing.T) {
	parent, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	hc := newHandlerCtx(parent, time.Now().Add(time.Millisecond))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			<-hc.Done()
			_ = hc.Err()
		})
	}
	wg.Go(func() { _ = hc.Err() })
	wg.Go(hc.cancel)
	wg.Go(func() { cancel(errChannelDied) })
	wg.Wait()
	if hc.Err() == nil {
		t.Error("Err() = nil after the context ended")
	}
}

// Detach keeps the handler context's deadline but not its cancellation: the
// work ends at the deadline or with the new parent, not with the channel.
func TestDetach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chanCtx, chanDies := context.WithCancelCause(t.Context())
		handler := newHandlerCtx(chanCtx, time.Now().Add(time.Second))
		defer handler.cancel()
		run, stopRun := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "run"))
		defer stopRun()

		work, cancel := Detach(handler, run)
		defer cancel()
		if dl, ok := work.Deadline(); !ok || !dl.Equal(time.Now().Add(time.Second)) {
			t.Errorf("Deadline() = %v, %t, want the handler's", dl, ok)
		}
		if got := work.Value(ctxKey{}); got != "run" {
			t.Errorf("Value() = %v, want the new parent's", got)
		}
		chanDies(errChannelDied)
		synctest.Wait()
		if err := work.Err(); err != nil {
			t.Errorf("Err() after the channel died = %v, want nil", err)
		}
		<-work.Done()
		wantEnded(t, work, context.DeadlineExceeded, context.DeadlineExceeded)

		// Without a deadline it ends only with the parent (or cancel).
		endless, cancelEndless := Detach(t.Context(), run)
		defer cancelEndless()
		if _, ok := endless.Deadline(); ok {
			t.Error("Deadline() ok = true, want no deadline")
		}
		done := endless.Done()
		time.Sleep(time.Hour) // fake clock
		if err := endless.Err(); err != nil {
			t.Errorf("Err() = %v, want nil: no deadline", err)
		}
		stopRun()
		<-done
		wantEnded(t, endless, context.Canceled, context.Canceled)
	})
}

// BenchmarkHandlerContext compares what a handler's context costs with the
// context.WithTimeout it replaced, for handlers that never ask for Done (the
// usual case) and for those that do; many handlers at once share the
// channel's context, as on a busy channel.
func BenchmarkHandlerContext(b *testing.B) {
	parent, cancel := context.WithCancelCause(b.Context())
	defer cancel(nil)
	for _, bc := range []struct {
		name string
		make func() (context.Context, func())
	}{
		{"handlerCtx", func() (context.Context, func()) {
			hc := newHandlerCtx(parent, time.Now().Add(time.Minute))
			return hc, hc.cancel
		}},
		{"WithTimeout", func() (context.Context, func()) {
			ctx, cancel := context.WithTimeout(parent, time.Minute)
			return ctx, cancel
		}},
	} {
		for _, done := range []bool{false, true} {
			name := bc.name
			if done {
				name += "/Done"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						ctx, release := bc.make()
						if done {
							_ = ctx.Done()
						}
						release()
					}
				})
			})
		}
	}
}

// DetachInline turns a handler's own context into one of the new parent, in
// place and without allocating: the deadline stays, the values are the new
// parent's, the channel's death no longer ends it and the new parent's does.
// A context already armed (or not a handler's own) is detached by Detach.
func TestDetachInline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chanCtx, chanDies := context.WithCancelCause(t.Context())
		run, stopRun := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "run"))
		defer stopRun()
		own := func() *handlerCtx { // as Channel.run makes it
			hc := newHandlerCtx(chanCtx, time.Now().Add(time.Second))
			hc.ownedByRun = true
			return hc
		}

		if n := testing.AllocsPerRun(10, func() {
			hc := own()
			_, cancel := DetachInline(hc, run)
			cancel()
			hc.cancel()
		}); n > 1 {
			t.Errorf("DetachInline allocates %v times with the handler context's own allocation, want 1", n)
		}

		handler := own()
		work, cancel := DetachInline(handler, run)
		defer cancel()
		if work != context.Context(handler) {
			t.Error("DetachInline made a new context for an unarmed handler context")
		}
		if dl, ok := work.Deadline(); !ok || !dl.Equal(time.Now().Add(time.Second)) {
			t.Errorf("Deadline() = %v, %t, want the handler's", dl, ok)
		}
		if got := work.Value(ctxKey{}); got != "run" {
			t.Errorf("Value() = %v, want the new parent's", got)
		}
		chanDies(errChannelDied)
		synctest.Wait()
		if err := work.Err(); err != nil {
			t.Errorf("Err() after the channel died = %v, want nil", err)
		}
		done := work.Done()
		stopRun()
		<-done
		wantEnded(t, work, context.Canceled, context.Canceled)
		handler.cancel() // as run does when the handler returns

		// Armed already: detached by Detach, the handler's own context unchanged.
		chanCtx2, chanDies2 := context.WithCancelCause(t.Context())
		armed := newHandlerCtx(chanCtx2, time.Now().Add(time.Second))
		armed.ownedByRun = true
		defer armed.cancel()
		_ = armed.Done()
		run2, stopRun2 := context.WithCancel(t.Context())
		defer stopRun2()
		work2, cancel2 := DetachInline(armed, run2)
		defer cancel2()
		if work2 == context.Context(armed) {
			t.Fatal("DetachInline reparented an armed context")
		}
		chanDies2(errChannelDied)
		<-armed.Done()
		if err := work2.Err(); err != nil {
			t.Errorf("the detached context's Err() after the channel died = %v, want nil", err)
		}

		// Not a handler's own context: never reparented.
		other := newHandlerCtx(t.Context(), time.Time{})
		defer other.cancel()
		if w, c := DetachInline(other, run2); w == context.Context(other) {
			t.Error("DetachInline reparented a context that run does not own")
		} else {
			c()
		}
	})
}
