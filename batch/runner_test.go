package batch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// call is one Send seen by the fake sender.
type call struct {
	target string
	id     string
	at     time.Time
}

// fakeSender records calls and answers with fn (SUCCEEDED when fn is nil).
type fakeSender struct {
	mu    sync.Mutex // protects calls
	calls []call
	fn    func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error)
}

func (s *fakeSender) Send(ctx context.Context, target string, c *command.Command) (*command.Reply, error) {
	s.mu.Lock()
	n := len(s.calls)
	s.calls = append(s.calls, call{target: target, id: c.ID, at: time.Now()})
	s.mu.Unlock()
	if s.fn == nil {
		return &command.Reply{CommandID: c.ID, Type: c.Type, Status: command.StatusSucceeded, Payload: []byte(`{"echo":"` + c.ID + `"}`)}, nil
	}
	return s.fn(ctx, n, target, c)
}

func (s *fakeSender) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.calls {
		out = append(out, c.id)
	}
	return out
}

func (s *fakeSender) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, c := range s.calls {
		out = append(out, c.at)
	}
	return out
}

func succeeded(c *command.Command) *command.Reply {
	return &command.Reply{Status: command.StatusSucceeded}
}

// env is a runner over a Memory store, running until the test ends.
type env struct {
	t     *testing.T
	mem   *state.Memory
	r     *batch.Runner
	send  *fakeSender
	ctx   context.Context
	runCh chan error
}

func newEnv(t *testing.T, cfg batch.Config, send batch.Sender, mem *state.Memory) *env {
	t.Helper()
	if mem == nil {
		mem = state.NewMemory()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	r, err := batch.NewRunner(cfg, send, state.NewBatchStore(mem))
	if err != nil {
		t.Fatalf("NewRunner() = %v", err)
	}
	batch.SetJitter(r, func() float64 { return 0 })
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	e := &env{t: t, mem: mem, r: r, ctx: ctx, runCh: make(chan error, 1)}
	if fs, ok := send.(*fakeSender); ok {
		e.send = fs
	}
	t.Cleanup(func() {
		cancel()
		if err := r.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return e
}

// setTimeout replaces the bound of the env's waits.
func (e *env) setTimeout(d time.Duration) {
	ctx, cancel := context.WithTimeout(e.t.Context(), d)
	e.t.Cleanup(cancel)
	e.ctx = ctx
}

// run starts Run in a goroutine; Close (at cleanup) stops it.
func (e *env) run() {
	go func() { e.runCh <- e.r.Run(context.WithoutCancel(e.ctx)) }()
	e.t.Cleanup(func() {
		e.r.Close()
		if err := <-e.runCh; !errors.Is(err, batch.ErrClosed) {
			e.t.Errorf("Run() = %v, want ErrClosed", err)
		}
	})
}

func (e *env) execute(b batch.Batch) batch.Batch {
	e.t.Helper()
	got, err := e.r.ExecuteBatch(e.ctx, b)
	if err != nil {
		e.t.Fatalf("ExecuteBatch() = %v", err)
	}
	return got
}

func (e *env) await(id string) batch.Batch {
	e.t.Helper()
	b, err := e.r.AwaitBatch(e.ctx, id)
	if err != nil {
		e.t.Fatalf("AwaitBatch(%s) = %v", id, err)
	}
	return b
}

func (e *env) get(id string) batch.Batch {
	e.t.Helper()
	b, err := e.r.GetBatch(id)
	if err != nil {
		e.t.Fatalf("GetBatch(%s) = %v", id, err)
	}
	return b
}

func commands(ids ...string) []batch.Command {
	var out []batch.Command
	for _, id := range ids {
		out = append(out, batch.Command{Command: &command.Command{ID: id, Type: "ECHO", Payload: []byte(`{"id":"` + id + `"}`)}})
	}
	return out
}

func statuses(b batch.Batch) []batch.Status {
	var out []batch.Status
	for _, c := range b.Commands {
		out = append(out, c.Status)
	}
	return out
}

func TestRunnerRunsCommandsInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var e *env
		send := &fakeSender{}
		send.fn = func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			// Each result is in the store before the next command is sent.
			b := e.get("b1")
			if b.Status != batch.StatusInProgress || b.Commands[n].Status != batch.StatusInProgress {
				t.Errorf("command %d sent while the batch is %v, commands %v", n, b.Status, statuses(b))
			}
			for i := range n {
				if b.Commands[i].Status != batch.StatusSucceeded {
					t.Errorf("command %d sent before command %d's result was stored", n, i)
				}
			}
			return &command.Reply{Status: command.StatusSucceeded, Payload: c.Payload, Code: 200}, nil
		}
		e = newEnv(t, batch.Config{}, send, nil)
		e.run()
		start := time.Now()
		created := e.execute(batch.Batch{ID: "b1", Key: "k", TargetID: "t1", Commands: commands("c1", "c2", "c3")})
		if created.Status != batch.StatusCreated || *created.MaxRetry != batch.DefaultMaxRetry {
			t.Errorf("ExecuteBatch() = %+v, want a CREATED batch with maxRetry 5", created)
		}
		b := e.await("b1")
		if b.Status != batch.StatusSucceeded || b.Attempts != 1 || b.Retry != 0 || b.Error != "" {
			t.Errorf("batch = %v attempts %d retry %d error %q, want SUCCEEDED after 1 attempt", b.Status, b.Attempts, b.Retry, b.Error)
		}
		if diff := cmp.Diff([]string{"c1", "c2", "c3"}, send.ids()); diff != "" {
			t.Errorf("sent mismatch (-want +got):\n%s", diff)
		}
		for i, c := range b.Commands {
			if c.Status != batch.StatusSucceeded || c.Reply == nil || string(c.Reply.Payload) != string(c.Command.Payload) || c.Reply.Code != 200 {
				t.Errorf("command %d = %+v, reply %+v", i, c, c.Reply)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("batch took %v of fake time, want 0 (no polling delay)", d)
		}
	})
}

func TestRunnerRetriesWithBackoffThenSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if c.ID == "c2" && n < 3 {
				return &command.Reply{Status: command.StatusError, Error: "busy", Code: 503}, nil
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		e.run()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1", "c2")})
		b := e.await("b1")
		if b.Status != batch.StatusSucceeded || b.Attempts != 3 || b.Retry != 2 {
			t.Errorf("batch = %v attempts %d retry %d, want SUCCEEDED after 3 attempts, 2 retries", b.Status, b.Attempts, b.Retry)
		}
		// c1 succeeded in the first attempt and is never re-sent; c2 keeps its id.
		if diff := cmp.Diff([]string{"c1", "c2", "c2", "c2"}, send.ids()); diff != "" {
			t.Errorf("sent mismatch (-want +got):\n%s", diff)
		}
		// Jitter 0: delays are base·2^n / 2 = 500 ms, then 1 s.
		ts := send.times()
		if d1, d2 := ts[2].Sub(ts[1]), ts[3].Sub(ts[2]); d1 != 500*time.Millisecond || d2 != time.Second {
			t.Errorf("retry delays = %v, %v; want 500ms, 1s", d1, d2)
		}
	})
}

func TestRunnerMaxRetryEndsInError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			return &command.Reply{Status: command.StatusError, Error: "boom", Code: 500}, nil
		}}
		e := newEnv(t, batch.Config{BackoffBase: 2 * time.Second, BackoffMax: 3 * time.Second}, send, nil)
		e.run()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", MaxRetry: new(3), Commands: commands("c1", "c2")})
		b := e.await("b1")
		want := "connector replied ERROR (code 500): boom"
		if b.Status != batch.StatusError || b.Attempts != 4 || b.Retry != 3 || b.Error != want {
			t.Errorf("batch = %v attempts %d retry %d error %q; want ERROR, 4 attempts, retry 3, %q", b.Status, b.Attempts, b.Retry, b.Error, want)
		}
		if b.Commands[0].Error != want || b.Commands[1].Status != batch.StatusPending {
			t.Errorf("commands = %+v", b.Commands)
		}
		ts := send.times()
		var gaps []time.Duration
		for i := 1; i < len(ts); i++ {
			gaps = append(gaps, ts[i].Sub(ts[i-1]))
		}
		// Jitter 0 gives half of base·2^n capped at 3 s: 2 s / 2, then 3 s / 2.
		if diff := cmp.Diff([]time.Duration{time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond}, gaps); diff != "" {
			t.Errorf("retry delays mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerNonTerminalReplyFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			return &command.Reply{Status: command.StatusPending}, nil
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		e.run()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", MaxRetry: new(0), Commands: commands("c1")})
		b := e.await("b1")
		want := "connector replied PENDING: a batch command must end SUCCEEDED or ERROR"
		if b.Status != batch.StatusError || b.Error != want || b.Commands[0].Reply.Status != command.StatusPending {
			t.Errorf("batch = %v %q (reply %+v), want ERROR %q", b.Status, b.Error, b.Commands[0].Reply, want)
		}
	})
}

func TestRunnerCommandTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			<-ctx.Done()
			return nil, fmt.Errorf("send %s: no reply: %w", c, ctx.Err())
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		e.run()
		start := time.Now()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", MaxRetry: new(0), Commands: commands("c1")})
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		b, err := e.r.AwaitBatch(ctx, "b1")
		if err != nil {
			t.Fatal(err)
		}
		if b.Status != batch.StatusError || b.Error != "no reply within 60s" {
			t.Errorf("batch = %v %q, want ERROR %q", b.Status, b.Error, "no reply within 60s")
		}
		if d := time.Since(start); d != time.Minute {
			t.Errorf("timed out after %v, want 1m", d)
		}
	})
}

func TestRunnerOfflineTargetRunsWhenAChannelRegisters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var online atomic.Bool
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			if !online.Load() {
				return nil, fmt.Errorf("controller: no channel for target %q: %w", target, batch.ErrNoChannel)
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{MaxRetry: 1}, send, nil)
		e.setTimeout(time.Hour)
		e.run()
		e.execute(batch.Batch{ID: "b1", TargetID: "t1", Commands: commands("c1")})
		synctest.Wait()
		b := e.get("b1")
		if b.Status != batch.StatusPending || b.Retry != 0 || b.Error != `no channel for target "t1"` {
			t.Fatalf("offline batch = %v retry %d %q; want PENDING, retry 0, no channel", b.Status, b.Retry, b.Error)
		}
		// It waits BackoffMax (5 min with jitter 0: 2.5 min), not the short
		// retry backoff, and does not use up its retries.
		if want := b.UpdatedAt.Add(150 * time.Second); !b.NextAttemptAt.Equal(want) {
			t.Errorf("NextAttemptAt = %v, want %v", b.NextAttemptAt, want)
		}
		advance(20 * time.Second)
		if n := len(send.ids()); n != 1 {
			t.Fatalf("sent %d times while offline, want 1", n)
		}
		// A channel of another target changes nothing.
		register(t, e.mem, "ch0", "t2")
		synctest.Wait()
		if n := len(send.ids()); n != 1 {
			t.Fatalf("sent %d times after another target registered, want 1", n)
		}
		online.Store(true)
		registered := time.Now()
		register(t, e.mem, "ch1", "t1")
		b = e.await("b1")
		if b.Status != batch.StatusSucceeded || b.Retry != 0 || b.Attempts != 2 {
			t.Errorf("batch = %v retry %d attempts %d, want SUCCEEDED, retry 0, 2 attempts", b.Status, b.Retry, b.Attempts)
		}
		if d := time.Since(registered); d != 0 {
			t.Errorf("batch ran %v after the channel registered, want at once", d)
		}
	})
}

func register(t *testing.T, mem *state.Memory, channelID, target string) {
	t.Helper()
	op := state.Op{Register: &state.RegisterChannel{Channel: state.Channel{ID: channelID, TargetID: target, NodeID: "n1", Active: true, RegisteredAt: time.Now()}}}
	if err := state.Err(mem.Apply(t.Context(), op)); err != nil {
		t.Fatalf("register %s: %v", channelID, err)
	}
}

func TestRunnerOneBatchAtATimePerTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var a1Calls atomic.Int32
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			switch {
			case c.ID == "a1" && a1Calls.Add(1) == 1:
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return &command.Reply{Status: command.StatusError, Error: "not yet"}, nil
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{}, send, nil)
		e.run()
		e.execute(batch.Batch{ID: "a", TargetID: "t1", Commands: commands("a1", "a2")})
		e.execute(batch.Batch{ID: "b", TargetID: "t1", Commands: commands("b1")})
		e.execute(batch.Batch{ID: "c", TargetID: "t2", Commands: commands("c1")})
		synctest.Wait()
		// t2 is not held up by t1; t1's second batch waits for its first.
		if diff := cmp.Diff([]string{"a1", "c1"}, send.ids(), sortStrings); diff != "" {
			t.Errorf("sent mismatch (-want +got):\n%s", diff)
		}
		if b := e.get("b"); b.Status != batch.StatusCreated {
			t.Errorf("second batch of t1 is %v while the first runs, want CREATED", b.Status)
		}
		close(release)
		// a fails once, then waits for its retry: b still waits.
		synctest.Wait()
		if b := e.get("b"); b.Status != batch.StatusCreated {
			t.Errorf("second batch of t1 is %v while the first waits for a retry, want CREATED", b.Status)
		}
		e.await("a")
		e.await("b")
		e.await("c")
		got := slices.DeleteFunc(send.ids(), func(s string) bool { return s == "c1" })
		if diff := cmp.Diff([]string{"a1", "a1", "a2", "b1"}, got); diff != "" {
			t.Errorf("t1 order mismatch (-want +got):\n%s", diff)
		}
	})
}

var sortStrings = cmp.Transformer("sort", func(in []string) []string { return slices.Sorted(slices.Values(in)) })

func TestRunnerBoundsConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var inFlight, peak atomic.Int32
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			cur := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				p := peak.Load()
				if cur <= p || peak.CompareAndSwap(p, cur) {
					break
				}
			}
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{Concurrency: 3}, send, nil)
		e.run()
		var all []string
		for i := range 8 {
			id := fmt.Sprintf("b%d", i)
			all = append(all, id)
			e.execute(batch.Batch{ID: id, TargetID: fmt.Sprintf("t%d", i), Commands: commands(id+"-c1", id+"-c2")})
		}
		synctest.Wait()
		if n := inFlight.Load(); n != 3 {
			t.Errorf("%d targets in flight, want 3", n)
		}
		// The three oldest batches run first.
		if diff := cmp.Diff([]string{"b0-c1", "b1-c1", "b2-c1"}, send.ids(), sortStrings); diff != "" {
			t.Errorf("first sends mismatch (-want +got):\n%s", diff)
		}
		close(gate)
		for _, id := range all {
			if b := e.await(id); b.Status != batch.StatusSucceeded {
				t.Errorf("batch %s = %v", id, b.Status)
			}
		}
		if p := peak.Load(); p != 3 {
			t.Errorf("peak concurrency = %d, want 3", p)
		}
	})
}

func TestRunnerKickWaitsForAFreeSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var online atomic.Bool
		send := &fakeSender{fn: func(ctx context.Context, n int, target string, c *command.Command) (*command.Reply, error) {
			switch {
			case target == "busy":
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			case !online.Load():
				return nil, batch.ErrNoChannel
			}
			return succeeded(c), nil
		}}
		e := newEnv(t, batch.Config{Concurrency: 1}, send, nil)
		e.run()
		e.execute(batch.Batch{ID: "offline", TargetID: "t1", Commands: commands("o1")})
		synctest.Wait() // offline: PENDING for BackoffMax
		e.execute(batch.Batch{ID: "slow", TargetID: "busy", Commands: commands("s1")})
		synctest.Wait() // the only slot is taken
		online.Store(true)
		register(t, e.mem, "ch1", "t1")
		synctest.Wait()
		if b := e.get("offline"); b.Status != batch.StatusPending {
			t.Fatalf("offline batch = %v while no slot is free, want PENDING", b.Status)
		}
		released := time.Now()
		close(gate)
		e.await("slow")
		if b := e.await("offline"); b.Status != batch.StatusSucceeded {
			t.Fatalf("offline batch = %v", b.Status)
		}
		// The registration is remembered until a slot frees: no waiting for
		// the offline backoff.
		if d := time.Since(released); d != 0 {
			t.Errorf("ran %v after the slot freed, want at once", d)
		}
	})
}
