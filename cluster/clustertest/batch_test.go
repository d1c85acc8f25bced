package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

// stepper is a connector's handler that records the commands it runs, in
// order, and, when gated, blocks each one until the test releases it.
type stepper struct {
	gated   bool
	release chan struct{} // one token per command released

	mu   sync.Mutex
	runs []string       // ids of the commands whose handler ran, in order
	recv map[string]int // id → deliveries seen on the wire (before dedup)
}

func newStepper(gated bool) *stepper {
	return &stepper{gated: gated, release: make(chan struct{}, 64), recv: map[string]int{}}
}

const typeStep command.Type = "STEP"

func (s *stepper) mux() *command.Mux {
	mux := command.NewMux()
	mux.RegisterFunc(typeStep, func(ctx context.Context, cmd *command.Command) (*command.Reply, error) {
		s.mu.Lock()
		s.runs = append(s.runs, cmd.ID)
		s.mu.Unlock()
		if s.gated {
			select {
			case <-s.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded, Payload: cmd.Payload}, nil
	})
	return mux
}

func (s *stepper) tap(cmd *command.Command) {
	if cmd.Type != typeStep {
		return
	}
	s.mu.Lock()
	s.recv[cmd.ID]++
	s.mu.Unlock()
}

func (s *stepper) ran() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.runs)
}

func (s *stepper) deliveries(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recv[id]
}

// steps builds a batch of n STEP commands for target.
func steps(target string, n int) batch.Batch {
	b := batch.Batch{TargetID: target}
	for i := range n {
		b.Commands = append(b.Commands, batch.Command{Command: &command.Command{
			ID: command.NewID(), Type: typeStep, Payload: fmt.Appendf(nil, `{"i":%d}`, i)}})
	}
	return b
}

// execute creates b through r, as a careful caller does: an Apply whose
// outcome is unknown (the leader lost office while committing, under load)
// is retried with the same batch id until the batch is created or known to
// exist.
func execute(t *testing.T, ctx context.Context, r *batch.Runner, b batch.Batch) batch.Batch {
	t.Helper()
	b.ID = command.NewID()
	for {
		created, err := r.ExecuteBatch(ctx, b)
		switch {
		case err == nil:
			return created
		case errors.Is(err, batch.ErrExists):
			got, err := r.GetBatch(b.ID)
			if err != nil {
				t.Fatalf("batch %s exists but cannot be read: %v", b.ID, err)
			}
			return got
		case ctx.Err() != nil:
			t.Fatalf("execute batch %s: %v", b.ID, err)
		}
		t.Logf("execute batch %s: %v; retrying", b.ID, err)
		select { // a short backoff between retries
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func commandIDs(b batch.Batch) []string {
	var out []string
	for _, c := range b.Commands {
		out = append(out, c.Command.ID)
	}
	return out
}

func checkSucceeded(t *testing.T, b batch.Batch) {
	t.Helper()
	if b.Status != batch.StatusSucceeded {
		t.Fatalf("batch %s is %s (%s), want SUCCEEDED", b.ID, b.Status, b.Error)
	}
	for i, c := range b.Commands {
		if c.Status != batch.StatusSucceeded {
			t.Fatalf("batch %s command %d is %s (%s)", b.ID, i, c.Status, c.Error)
		}
	}
}

// TestBatchesReachTargetsOnEveryNode: batches created through a follower for
// a target held by the other follower complete, in order.
func TestBatchesReachTargetsOnEveryNode(t *testing.T) {
	e := newEnv(t, 3)
	fs := e.followers()
	holder, creator := fs[0], fs[1]
	st := newStepper(false)
	c := e.connect("t-batch", holder, connOpts{mux: st.mux(), only: true})
	e.waitConnected(c)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	r := e.ctl(creator).runner
	var want []string
	var ids []string
	for range 3 {
		b := execute(t, ctx, r, steps("t-batch", 4))
		ids = append(ids, b.ID)
		want = append(want, commandIDs(b)...)
	}
	for _, id := range ids {
		b, err := r.AwaitBatch(ctx, id)
		if err != nil {
			t.Fatalf("AwaitBatch %s: %v", id, err)
		}
		checkSucceeded(t, b)
		for i, c := range b.Commands {
			if c.Reply == nil || string(c.Reply.Payload) != fmt.Sprintf(`{"i":%d}`, i) {
				t.Fatalf("batch %s command %d: reply %+v", id, i, c.Reply)
			}
		}
	}
	if got := st.ran(); !slices.Equal(got, want) {
		t.Fatalf("the connector ran %v, want %v (batches in creation order, commands in order)", got, want)
	}
}

// TestLeaderKilledDuringBatch: the leader is stopped while a batch is
// running (a command blocked in the connector's handler); the new leader
// resumes the batch; every command completes once; the command in flight is
// re-sent with the same id and the connector's dedup window answers it.
func TestLeaderKilledDuringBatch(t *testing.T) {
	e := newEnv(t, 3)
	leader := e.leader()
	fs := e.followers()
	holder, creator := fs[0], fs[1]
	st := newStepper(true)
	c := e.connect("t-kill", holder, connOpts{mux: st.mux(), only: true, tap: st.tap})
	e.waitConnected(c)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	b := execute(t, ctx, e.ctl(creator).runner, steps("t-kill", 4))
	ids := commandIDs(b)
	waitFor(t, "command 0 running", func() bool { return len(st.ran()) == 1 })
	st.release <- struct{}{}
	waitFor(t, "command 1 running", func() bool { return len(st.ran()) == 2 })

	stopped := time.Now()
	e.Stop(leader)
	newLeader := e.leader()
	t.Logf("leader %s stopped; new leader %s agreed after %v", leader.ID, newLeader.ID, time.Since(stopped))

	// The new leader's runner resets the interrupted attempt and re-sends
	// command 1: the connector sees it a second time, with the same id.
	waitFor(t, "command 1 re-sent", func() bool { return st.deliveries(ids[1]) >= 2 })
	for range 3 {
		st.release <- struct{}{}
	}
	final, err := e.ctl(creator).runner.AwaitBatch(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkSucceeded(t, final)
	if !slices.Equal(commandIDs(final), ids) {
		t.Fatalf("command ids changed: %v, were %v", commandIDs(final), ids)
	}
	if got := st.ran(); !slices.Equal(got, ids) {
		t.Fatalf("handlers ran %v, want each of %v once, in order", got, ids)
	}
	if final.Attempts < 2 {
		t.Fatalf("batch made %d attempts: the new leader did not resume it", final.Attempts)
	}
	for i, id := range ids {
		// An Apply whose outcome is unknown is not counted: at most once.
		if n := e.rec.succeeded(id); n > 1 {
			t.Errorf("command %d (%s) was acknowledged SUCCEEDED %d times in the state", i, id, n)
		}
	}
	t.Logf("deliveries per command: %d %d %d %d; attempts %d", st.deliveries(ids[0]), st.deliveries(ids[1]),
		st.deliveries(ids[2]), st.deliveries(ids[3]), final.Attempts)
}
