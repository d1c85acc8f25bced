package batch_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

func TestRunnerResumesInProgressBatchAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A previous process stored b1, ran c1 and died while c2 was in flight.
		mem := state.NewMemory()
		bs := state.NewBatchStore(mem)
		b, err := batch.Prepare(batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1", "c2", "c3")}, time.Now(), 5, command.NewID)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if err := bs.Apply(t.Context(),
			batch.Op{Create: &batch.CreateBatch{Batch: b}},
			batch.Op{Start: &batch.StartAttempt{ID: "b1", Now: now}},
			batch.Op{Result: &batch.CommandResult{ID: "b1", Attempt: 1, CommandID: "c1", Now: now, Status: batch.StatusSucceeded}},
		); err != nil {
			t.Fatal(err)
		}
		send := &fakeSender{}
		e := newEnv(t, batch.Config{}, send, mem)
		if got := e.get("b1"); got.Status != batch.StatusInProgress {
			t.Fatalf("before restart: %v", got.Status)
		}
		e.run()
		got := e.await("b1")
		if got.Status != batch.StatusSucceeded || got.Attempts != 2 || got.Retry != 0 {
			t.Errorf("batch = %v attempts %d retry %d, want SUCCEEDED, 2 attempts, retry 0", got.Status, got.Attempts, got.Retry)
		}
		// c2 is re-sent with its id; c1 is not re-sent.
		if diff := cmp.Diff([]string{"c2", "c3"}, send.ids()); diff != "" {
			t.Errorf("sent mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerLeadershipTerms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if n == 0 { // the first term ends while c1 is in flight
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		term, lose := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- e.r.Run(term) }()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1", "c2")})
		synctest.Wait()
		if err := e.r.Run(t.Context()); !errors.Is(err, batch.ErrRunning) {
			t.Errorf("second Run() = %v, want ErrRunning", err)
		}
		lose()
		if err := <-done; err != nil {
			t.Errorf("Run() after losing leadership = %v, want nil", err)
		}
		if b := e.get("b1"); b.Status != batch.StatusInProgress {
			t.Errorf("after the term: %v, want IN_PROGRESS (the reply's fate is unknown)", b.Status)
		}
		e.run() // a new term
		b := e.await("b1")
		if b.Status != batch.StatusSucceeded || b.Attempts != 2 {
			t.Errorf("batch = %v attempts %d", b.Status, b.Attempts)
		}
		if diff := cmp.Diff([]string{"c1", "c1", "c2"}, send.ids()); diff != "" {
			t.Errorf("sent mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerDeletesFinishedBatchesAfterRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if target == "t-wait" {
				return nil, batch.ErrNoChannel
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{Retention: time.Hour}, send, nil)
		e.setTimeout(longTestTimeout)
		deleted := make(chan string, 10)
		unsub := e.mem.Subscribe(func(evs []state.Event) {
			for _, ev := range evs {
				if ev.Kind == state.BatchDeleted {
					deleted <- ev.BatchID
				}
			}
		})
		defer unsub()
		e.run()
		e.execute(batch.Batch{ID: "old", TargetID: "t1", Commands: commands("c1")})
		e.execute(batch.Batch{ID: "waiting", TargetID: "t-wait", Commands: commands("w1")})
		ended := e.await("old").UpdatedAt
		advance(30 * time.Minute)
		e.execute(batch.Batch{ID: "young", TargetID: "t2", Commands: commands("c2")})
		youngEnd := e.await("young").UpdatedAt

		ctx, cancel := context.WithTimeout(t.Context(), longTestTimeout)
		defer cancel()
		for _, want := range []struct {
			id  string
			end time.Time
		}{{"old", ended}, {"young", youngEnd}} {
			select {
			case id := <-deleted:
				if id != want.id {
					t.Fatalf("deleted %s, want %s", id, want.id)
				}
				if d := time.Since(want.end); d != time.Hour {
					t.Errorf("%s deleted %v after it ended, want 1h", id, d)
				}
			case <-ctx.Done():
				t.Fatalf("%s not deleted: %v", want.id, ctx.Err())
			}
		}
		if _, err := e.r.GetBatch("old"); !errors.Is(err, batch.ErrNotFound) {
			t.Errorf("GetBatch(old) error = %v, want ErrNotFound", err)
		}
		// An unfinished batch is never deleted.
		advance(48 * time.Hour)
		synctest.Wait() // let a retry due at this very instant finish
		if b := e.get("waiting"); b.Status != batch.StatusPending {
			t.Errorf("waiting batch = %v", b.Status)
		}
	})
}

func TestRunnerKeepsFinishedBatchesWithNegativeRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, batch.Config{Retention: -1}, &fakeSender{}, nil)
		e.run()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1")})
		e.await("b1")
		advance(1000 * time.Hour)
		e.get("b1")
	})
}

// flakyStore fails the ops that fail says no to.
type flakyStore struct {
	batch.Store
	fail func(op batch.Op) bool
}

func (s *flakyStore) Apply(ctx context.Context, ops ...batch.Op) error {
	for _, op := range ops {
		if s.fail(op) {
			return errors.New("store unavailable")
		}
	}
	return s.Store.Apply(ctx, ops...)
}

func TestRunnerSurvivesStoreErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lostResults is how many result writes fail in a row.
		lostResults int32
		// want: the batch's Retry at the end, and when it succeeded.
		retry int
		after time.Duration
	}{
		// Two failed resets, retried after BackoffBase (1 s) each, then c1 is
		// sent but its result cannot be written: the command is recorded as
		// failed instead, the attempt counts, and c1 is re-sent after the
		// first backoff (500 ms with no jitter).
		{name: "result recorded as failed", lostResults: 1, retry: 1, after: 2*time.Second + 500*time.Millisecond},
		// The failure cannot be written either: the batch is orphaned
		// IN_PROGRESS, and resumed once it is clearly dead (2 ×
		// CommandTimeout after its last update), without counting a retry.
		{name: "store down", lostResults: 2, retry: 0, after: 2*time.Second + 20*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := state.NewMemory()
				var resets, results atomic.Int32
				store := &flakyStore{Store: state.NewBatchStore(mem), fail: func(op batch.Op) bool {
					switch {
					case op.Reset != nil && op.Reset.ID == "":
						return resets.Add(1) <= 2 // the start-up reset fails twice
					case op.Result != nil:
						return results.Add(1) <= tc.lostResults
					}
					return false
				}}
				send := &fakeSender{}
				r, err := batch.NewRunner(batch.Config{Logger: testLogger(t), CommandTimeout: 10 * time.Second}, send, store)
				if err != nil {
					t.Fatal(err)
				}
				batch.SetJitter(r, func() float64 { return 0 })
				defer r.Close()
				if _, err := r.ExecuteBatch(t.Context(), batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1")}); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- r.Run(ctx) }()
				start := time.Now()
				awaitCtx, cancelAwait := context.WithTimeout(t.Context(), defaultTestTimeout+time.Minute)
				defer cancelAwait()
				b, err := r.AwaitBatch(awaitCtx, "b1")
				if err != nil {
					t.Fatal(err)
				}
				if b.Status != batch.StatusSucceeded || b.Retry != tc.retry {
					t.Errorf("batch = %v with retry %d, want SUCCEEDED with retry %d", b.Status, b.Retry, tc.retry)
				}
				if diff := cmp.Diff([]string{"c1", "c1"}, send.ids()); diff != "" {
					t.Errorf("sent mismatch (-want +got):\n%s", diff)
				}
				if d := time.Since(start); d != tc.after {
					t.Errorf("recovered after %v, want %v", d, tc.after)
				}
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run() = %v", err)
				}
			})
		})
	}
}

// TestRunnerUnstorableReplyCountsAsAttempt is the regression test of a batch
// stuck IN_PROGRESS for ever: a reply that cannot be stored used to leave the
// batch orphaned, resumed, answered with the same reply (a connector's dedup
// window repeats it) and orphaned again, without the retry count ever
// growing. Now the command fails with a clear error, the attempt counts, and
// the batch ends.
func TestRunnerUnstorableReplyCountsAsAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &flakyStore{Store: state.NewBatchStore(state.NewMemory()), fail: func(op batch.Op) bool {
			return op.Result != nil && op.Result.Reply != nil && len(op.Result.Reply.Payload) > 0
		}}
		send := &fakeSender{} // always the same reply, with a payload
		r, err := batch.NewRunner(batch.Config{Logger: testLogger(t), MaxRetry: 2}, send, store)
		if err != nil {
			t.Fatal(err)
		}
		batch.SetJitter(r, func() float64 { return 0 })
		defer r.Close()
		ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		if _, err := r.ExecuteBatch(ctx, batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1")}); err != nil {
			t.Fatal(err)
		}
		b, err := r.AwaitBatch(ctx, "b1")
		if err != nil {
			t.Fatalf("AwaitBatch() = %v: the batch never ended", err)
		}
		if b.Status != batch.StatusError || b.Retry != 2 || b.Attempts != 3 {
			t.Errorf("batch = %v, retry %d, attempts %d; want ERROR after 3 attempts", b.Status, b.Retry, b.Attempts)
		}
		const want = "the reply could not be stored: store unavailable"
		if b.Error != want || b.Commands[0].Error != want {
			t.Errorf("errorDetails = %q / %q, want %q", b.Error, b.Commands[0].Error, want)
		}
		if rep := b.Commands[0].Reply; rep == nil || rep.Status != command.StatusSucceeded || len(rep.Payload) != 0 {
			t.Errorf("stored reply = %+v, want the reply's status without its payload", rep)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}

func TestRunnerBoundsStoredReplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		long := strings.Repeat("é", 5000) // 10,000 bytes
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if c.ID == "big" {
				return &command.Reply{Status: command.StatusSucceeded, Payload: make([]byte, 1025)}, nil
			}
			return &command.Reply{Status: command.StatusError, Error: long}, nil
		}}
		e := newEnv(t, batch.Config{MaxRetry: 0, MaxReplyPayload: 1024}, send, nil)
		e.run()
		big := e.execute(batch.Batch{ID: "b1", TargetID: "t1", MaxRetry: new(0), Commands: []batch.Command{{Command: &command.Command{ID: "big", Type: "ECHO"}}}})
		got := e.await(big.ID)
		const want = "the reply's payload of 1025 bytes exceeds the 1024 bytes a batch stores"
		if got.Status != batch.StatusError || got.Error != want {
			t.Errorf("batch = %v %q, want ERROR %q", got.Status, got.Error, want)
		}
		wordy := e.execute(batch.Batch{ID: "b2", TargetID: "t1", MaxRetry: new(0), Commands: []batch.Command{{Command: &command.Command{ID: "wordy", Type: "ECHO"}}}})
		got = e.await(wordy.ID)
		if n := len(got.Error); n > 4096 || !strings.HasSuffix(got.Error, "(truncated)") || !utf8.ValidString(got.Error) {
			t.Errorf("errorDetails of %d bytes (valid UTF-8: %v), want at most 4096, cut on a rune", n, utf8.ValidString(got.Error))
		}
		if rep := got.Commands[0].Reply; rep == nil || len(rep.Error) > 4096 {
			t.Errorf("stored reply error not bounded")
		}
	})
}

func TestRunnerHoldsTargetAfterStoreError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts atomic.Int32
		store := &flakyStore{Store: state.NewBatchStore(state.NewMemory()), fail: func(op batch.Op) bool {
			return op.Start != nil && starts.Add(1) <= 3
		}}
		send := &fakeSender{}
		r, err := batch.NewRunner(batch.Config{Logger: testLogger(t)}, send, store)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		start := time.Now()
		if _, err := r.ExecuteBatch(ctx, batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1")}); err != nil {
			t.Fatal(err)
		}
		if b, err := r.AwaitBatch(ctx, "b1"); err != nil || b.Status != batch.StatusSucceeded {
			t.Fatalf("AwaitBatch() = %v, %v", b.Status, err)
		}
		// Three failed starts, each followed by a BackoffBase hold: no spinning.
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("succeeded after %v, want 3s", d)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}

func TestRunnerSenderPanicIsAFailedCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if n == 0 {
				panic("kaboom")
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		var seen []string
		e.r.ObserveKey("k", func(b batch.Batch) { panic("observer panics are contained too") })
		e.r.Observe("b1", func(b batch.Batch) { seen = append(seen, b.Commands[0].Command.ID) })
		e.run()
		e.execute(batch.Batch{ID: "b1", Key: "k", TargetID: "t1", Commands: commands("c1")})
		b := e.await("b1")
		if b.Status != batch.StatusSucceeded || b.Retry != 1 {
			t.Errorf("batch = %v retry %d", b.Status, b.Retry)
		}
		synctest.Wait()
		if diff := cmp.Diff([]string{"c1"}, seen); diff != "" {
			t.Errorf("observer mismatch:\n%s", diff)
		}
	})
}
