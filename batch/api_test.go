package batch_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

func TestObserversFireExactlyOnceOnEveryNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if n == 0 {
				return &command.Reply{Status: command.StatusError, Error: "once"}, nil
			}
			return succeeded(c), nil
		}}
		mem := state.NewMemory()
		leader := newEnv(t, batch.Config{}, send, mem)
		follower := newEnv(t, batch.Config{}, &fakeSender{}, mem) // never runs batches
		leader.run()

		var mu sync.Mutex
		fired := map[string]int{}
		note := func(name string) func(batch.Batch) {
			return func(b batch.Batch) {
				mu.Lock()
				defer mu.Unlock()
				fired[name+":"+b.ID+":"+b.Status.String()]++
			}
		}
		for _, n := range []*env{leader, follower} {
			name := "leader"
			if n == follower {
				name = "follower"
			}
			n.r.Observe("b1", note(name+"-id"))
			n.r.ObserveKey("k", note(name+"-key"))
		}
		cancelled := follower.r.Observe("b2", note("cancelled"))
		cancelled()
		follower.execute(batch.Batch{ID: "b1", Key: "k", TargetID: "t1", Commands: commands("c1")}) // created via the follower
		leader.execute(batch.Batch{ID: "b2", Key: "k", TargetID: "t2", Commands: commands("c2")})
		leader.execute(batch.Batch{ID: "b3", Key: "other", TargetID: "t3", Commands: commands("c3")})
		if b := follower.await("b1"); b.Status != batch.StatusSucceeded {
			t.Fatalf("b1 = %v", b.Status)
		}
		follower.await("b2")
		follower.await("b3")
		// Registered after the end: fires at once, once.
		leader.r.Observe("b1", note("late"))
		synctest.Wait()
		want := map[string]int{
			"leader-id:b1:SUCCEEDED": 1, "follower-id:b1:SUCCEEDED": 1,
			"leader-key:b1:SUCCEEDED": 1, "follower-key:b1:SUCCEEDED": 1,
			"leader-key:b2:SUCCEEDED": 1, "follower-key:b2:SUCCEEDED": 1,
			"late:b1:SUCCEEDED": 1,
		}
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff(want, fired); diff != "" {
			t.Errorf("observer calls mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestExecuteBatchErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, batch.Config{MaxRetry: 2}, &fakeSender{}, nil)
		_, err := e.r.ExecuteBatch(e.ctx, batch.Batch{TargetID: "t1"})
		var ve *batch.ValidationError
		if !errors.As(err, &ve) || ve.Field != "commands" {
			t.Errorf("ExecuteBatch(no commands) = %v, want a ValidationError on commands", err)
		}
		b := e.execute(batch.Batch{TargetID: "t1", Commands: []batch.Command{{Command: &command.Command{Type: "A"}}}})
		if b.ID == "" || b.Commands[0].Command.ID == "" || *b.MaxRetry != 2 {
			t.Errorf("ExecuteBatch() = %+v, want ids assigned and maxRetry 2", b)
		}
		if diff := cmp.Diff(b, e.get(b.ID)); diff != "" {
			t.Errorf("stored batch differs from the returned one:\n%s", diff)
		}
		if _, err := e.r.ExecuteBatch(e.ctx, batch.Batch{ID: b.ID, TargetID: "t2", Commands: commands("x")}); !errors.Is(err, batch.ErrExists) {
			t.Errorf("duplicate ExecuteBatch() = %v, want ErrExists", err)
		}
		if _, err := e.r.GetBatch("nope"); !errors.Is(err, batch.ErrNotFound) {
			t.Errorf("GetBatch(nope) = %v, want ErrNotFound", err)
		}
		if err := e.r.DeleteBatch(e.ctx, "nope"); !errors.Is(err, batch.ErrNotFound) || !errors.Is(err, state.ErrNotFound) {
			t.Errorf("DeleteBatch(nope) = %v, want batch.ErrNotFound and state.ErrNotFound", err)
		}
		if got := e.r.ListBatches(batch.Filter{TargetID: "t1", Status: batch.StatusCreated}); len(got) != 1 || got[0].ID != b.ID {
			t.Errorf("ListBatches() = %v", got)
		}
		// Deleting an unfinished batch cancels it: its awaiters learn it.
		errc := make(chan error, 1)
		go func() {
			_, err := e.r.AwaitBatch(e.ctx, b.ID)
			errc <- err
		}()
		synctest.Wait()
		if err := e.r.DeleteBatch(e.ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, batch.ErrNotFound) {
			t.Errorf("AwaitBatch(deleted) = %v, want ErrNotFound", err)
		}
		// Await honours its context.
		ctx, cancel := context.WithTimeout(e.ctx, time.Second)
		defer cancel()
		if _, err := e.r.AwaitBatch(ctx, "never"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("AwaitBatch(never) = %v, want DeadlineExceeded", err)
		}
	})
}

func TestRunnerLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		if _, err := batch.NewRunner(batch.Config{Concurrency: -1}, &fakeSender{}, state.NewBatchStore(state.NewMemory())); err == nil {
			t.Error("NewRunner(negative concurrency) = nil error")
		}
		if _, err := batch.NewRunner(batch.Config{BackoffBase: time.Minute, BackoffMax: time.Second}, &fakeSender{}, state.NewBatchStore(state.NewMemory())); err == nil {
			t.Error("NewRunner(max < base) = nil error")
		}
		if _, err := batch.NewRunner(batch.Config{}, nil, state.NewBatchStore(state.NewMemory())); err == nil {
			t.Error("NewRunner(nil sender) = nil error")
		}
		r, err := batch.NewRunner(batch.Config{}, &fakeSender{}, state.NewBatchStore(state.NewMemory()))
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := r.AwaitBatch(t.Context(), "x")
			errc <- err
		}()
		synctest.Wait()
		r.Close()
		r.Close() // idempotent
		if err := <-errc; !errors.Is(err, batch.ErrClosed) {
			t.Errorf("AwaitBatch() after Close = %v, want ErrClosed", err)
		}
		if err := r.Run(t.Context()); !errors.Is(err, batch.ErrClosed) {
			t.Errorf("Run() after Close = %v, want ErrClosed", err)
		}
	})
}

func TestConfig(t *testing.T) {
	t.Parallel()
	d := batch.DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	want := batch.Config{Concurrency: 64, MaxRetry: 5, BackoffBase: time.Second, BackoffMax: 5 * time.Minute, CommandTimeout: time.Minute, Retention: 24 * time.Hour, MaxReplyPayload: 1 << 20, MaxUnfinishedPerTarget: 1000}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("DefaultConfig() mismatch:\n%s", diff)
	}
	if err := (batch.Config{Retention: -1}).Validate(); err != nil {
		t.Errorf("negative Retention is valid (keep forever), got %v", err)
	}
	if err := (batch.Config{CommandTimeout: -1}).Validate(); err == nil {
		t.Error("negative CommandTimeout: nil error")
	}
	if err := (batch.Config{MaxRetry: batch.MaxRetryLimit}).Validate(); err != nil {
		t.Errorf("MaxRetry at the limit: %v", err)
	}
	if err := (batch.Config{MaxRetry: batch.MaxRetryLimit + 1}).Validate(); err == nil {
		t.Error("MaxRetry over the limit: nil error")
	}
}

// A target with MaxUnfinishedPerTarget batches that have not ended refuses
// one more (ErrTooMany); other targets are not affected.
func TestMaxUnfinishedPerTarget(t *testing.T) {
	e := newEnv(t, batch.Config{MaxUnfinishedPerTarget: 2}, &fakeSender{}, nil)
	for _, id := range []string{"b1", "b2"} {
		e.execute(batch.Batch{ID: id, TargetID: "t1", Commands: commands(id + "-c")})
	}
	if _, err := e.r.ExecuteBatch(e.ctx, batch.Batch{ID: "b3", TargetID: "t1", Commands: commands("b3-c")}); !errors.Is(err, batch.ErrTooMany) {
		t.Fatalf("third unfinished batch of t1: %v, want ErrTooMany", err)
	}
	e.execute(batch.Batch{ID: "o1", TargetID: "t2", Commands: commands("o1-c")})
}
