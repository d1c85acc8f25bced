package batch_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

// view is the part of a batch the state-machine tables look at.
type view struct {
	Status   batch.Status
	Retry    int
	Attempts int
	Next     time.Duration // NextAttemptAt - t0; -1 when zero
	Cmds     string        // command statuses: C(reated) P I S E
	Error    string
}

func viewOf(b batch.Batch) view {
	v := view{Status: b.Status, Retry: b.Retry, Attempts: b.Attempts, Next: -1, Error: b.Error}
	if !b.NextAttemptAt.IsZero() {
		v.Next = b.NextAttemptAt.Sub(t0)
	}
	var sb strings.Builder
	for _, c := range b.Commands {
		sb.WriteByte(map[batch.Status]byte{batch.StatusCreated: 'C', batch.StatusPending: 'P', batch.StatusInProgress: 'I', batch.StatusSucceeded: 'S', batch.StatusError: 'E'}[c.Status])
	}
	v.Cmds = sb.String()
	return v
}

// step is one transition and the batch it must leave.
type step struct {
	do      func(b batch.Batch) (batch.Batch, error)
	wantErr error
	want    view
}

func start(at time.Duration) func(batch.Batch) (batch.Batch, error) {
	return func(b batch.Batch) (batch.Batch, error) { return b.StartAttempt(t0.Add(at)) }
}

// result records the outcome of the command in progress: "ok" or an error.
func result(at time.Duration, outcome string, delay time.Duration) func(batch.Batch) (batch.Batch, error) {
	return func(b batch.Batch) (batch.Batch, error) {
		id := ""
		for _, c := range b.Commands {
			if c.Status == batch.StatusInProgress {
				id = c.Command.ID
			}
		}
		r := batch.CommandResult{ID: b.ID, Attempt: b.Attempts, CommandID: id, Now: t0.Add(at), RetryDelay: delay}
		switch outcome {
		case "ok":
			r.Status, r.Reply = batch.StatusSucceeded, &command.Reply{Status: command.StatusSucceeded}
		case "offline":
			r.Status, r.Error, r.Offline = batch.StatusError, `no channel for target "t1"`, true
		default:
			r.Status, r.Error = batch.StatusError, outcome
		}
		return b.CommandResult(r)
	}
}

func reset(at time.Duration) func(batch.Batch) (batch.Batch, error) {
	return func(b batch.Batch) (batch.Batch, error) {
		nb, _ := b.ResetInProgress(t0.Add(at))
		return nb, nil
	}
}

func newBatch(t *testing.T, maxRetry, commands int) batch.Batch {
	t.Helper()
	in := batch.Batch{ID: "b1", TargetID: "t1", MaxRetry: new(maxRetry)}
	for i := range commands {
		in.Commands = append(in.Commands, cmd(fmt.Sprintf("c%d", i+1), "A", ""))
	}
	b, err := batch.Prepare(in, t0, 5, ids())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStateMachine(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name     string
		maxRetry int
		commands int
		steps    []step
	}{
		{"all succeed", 5, 3, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "IPP"}},
			{do: result(s, "ok", 0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "SIP"}},
			{do: result(2*s, "ok", 0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "SSI"}},
			{do: result(3*s, "ok", 0), want: view{Status: batch.StatusSucceeded, Attempts: 1, Next: -1, Cmds: "SSS"}},
			{do: start(4 * s), wantErr: batch.ErrConflict, want: view{Status: batch.StatusSucceeded, Attempts: 1, Next: -1, Cmds: "SSS"}},
		}},
		{"first failure stops the attempt; succeeded commands are not re-sent", 5, 3, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "IPP"}},
			{do: result(s, "ok", 0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "SIP"}},
			{do: result(2*s, "boom", 3*s), want: view{Status: batch.StatusPending, Retry: 1, Attempts: 1, Next: 5 * s, Cmds: "SEP", Error: "boom"}},
			{do: start(5 * s), want: view{Status: batch.StatusInProgress, Retry: 1, Attempts: 2, Next: -1, Cmds: "SIP", Error: "boom"}},
			{do: result(6*s, "ok", 0), want: view{Status: batch.StatusInProgress, Retry: 1, Attempts: 2, Next: -1, Cmds: "SSI", Error: "boom"}},
			{do: result(7*s, "ok", 0), want: view{Status: batch.StatusSucceeded, Retry: 1, Attempts: 2, Next: -1, Cmds: "SSS"}},
		}},
		{"max retry 2 allows 3 attempts", 2, 1, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "I"}},
			{do: result(0, "e1", s), want: view{Status: batch.StatusPending, Retry: 1, Attempts: 1, Next: s, Cmds: "E", Error: "e1"}},
			{do: start(s), want: view{Status: batch.StatusInProgress, Retry: 1, Attempts: 2, Next: -1, Cmds: "I", Error: "e1"}},
			{do: result(s, "e2", s), want: view{Status: batch.StatusPending, Retry: 2, Attempts: 2, Next: 2 * s, Cmds: "E", Error: "e2"}},
			{do: start(2 * s), want: view{Status: batch.StatusInProgress, Retry: 2, Attempts: 3, Next: -1, Cmds: "I", Error: "e2"}},
			{do: result(2*s, "e3", s), want: view{Status: batch.StatusError, Retry: 2, Attempts: 3, Next: -1, Cmds: "E", Error: "e3"}},
		}},
		{"max retry 0: one attempt", 0, 2, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "IP"}},
			{do: result(0, "e1", s), want: view{Status: batch.StatusError, Attempts: 1, Next: -1, Cmds: "EP", Error: "e1"}},
		}},
		{"offline attempts do not count", 0, 1, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "I"}},
			{do: result(0, "offline", 300*s), want: view{Status: batch.StatusPending, Attempts: 1, Next: 300 * s, Cmds: "E", Error: `no channel for target "t1"`}},
			{do: start(10 * s), want: view{Status: batch.StatusInProgress, Attempts: 2, Next: -1, Cmds: "I", Error: `no channel for target "t1"`}},
			{do: result(10*s, "ok", 0), want: view{Status: batch.StatusSucceeded, Attempts: 2, Next: -1, Cmds: "S"}},
		}},
		{"reset resumes at the interrupted command without counting", 0, 2, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "IP"}},
			{do: result(s, "ok", 0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "SI"}},
			{do: reset(9 * s), want: view{Status: batch.StatusPending, Attempts: 1, Next: 9 * s, Cmds: "SP", Error: "attempt interrupted by a controller restart or leader change; resuming (the command in progress is re-sent with the same id)"}},
			{do: reset(10 * s), want: view{Status: batch.StatusPending, Attempts: 1, Next: 9 * s, Cmds: "SP", Error: "attempt interrupted by a controller restart or leader change; resuming (the command in progress is re-sent with the same id)"}},
			{do: start(10 * s), want: view{Status: batch.StatusInProgress, Attempts: 2, Next: -1, Cmds: "SI", Error: "attempt interrupted by a controller restart or leader change; resuming (the command in progress is re-sent with the same id)"}},
			{do: result(11*s, "ok", 0), want: view{Status: batch.StatusSucceeded, Attempts: 2, Next: -1, Cmds: "SS"}},
		}},
		{"finish attempt without a reply", 1, 2, []step{
			{do: start(0), want: view{Status: batch.StatusInProgress, Attempts: 1, Next: -1, Cmds: "IP"}},
			{do: func(b batch.Batch) (batch.Batch, error) {
				return b.FinishAttempt(batch.FinishAttempt{ID: b.ID, Attempt: 1, Now: t0.Add(s), Error: "gave up", RetryDelay: s})
			}, want: view{Status: batch.StatusPending, Retry: 1, Attempts: 1, Next: 2 * s, Cmds: "PP", Error: "gave up"}},
			{do: func(b batch.Batch) (batch.Batch, error) {
				return b.FinishAttempt(batch.FinishAttempt{ID: b.ID, Attempt: 1, Now: t0.Add(s), Error: "again"})
			}, wantErr: batch.ErrConflict, want: view{Status: batch.StatusPending, Retry: 1, Attempts: 1, Next: 2 * s, Cmds: "PP", Error: "gave up"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBatch(t, tt.maxRetry, tt.commands)
			for i, st := range tt.steps {
				got, err := st.do(b)
				if !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
					t.Fatalf("step %d: error = %v, want %v", i, err, st.wantErr)
				}
				if diff := cmp.Diff(st.want, viewOf(got)); diff != "" {
					t.Fatalf("step %d: batch mismatch (-want +got):\n%s", i, diff)
				}
				b = got
			}
		})
	}
}

func TestTransitionsArePure(t *testing.T) {
	t.Parallel()
	b := newBatch(t, 5, 2)
	before := b.Clone()
	s, err := b.StartAttempt(t0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, b); diff != "" {
		t.Errorf("StartAttempt modified its receiver:\n%s", diff)
	}
	before = s.Clone()
	if _, err := s.CommandResult(batch.CommandResult{ID: "b1", Attempt: 1, CommandID: "c1", Now: t0, Status: batch.StatusSucceeded,
		Reply: &command.Reply{Status: command.StatusSucceeded}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ResetInProgress(t0); !ok {
		t.Fatal("ResetInProgress() = false on an IN_PROGRESS batch")
	}
	if diff := cmp.Diff(before, s); diff != "" {
		t.Errorf("CommandResult/ResetInProgress modified their receiver:\n%s", diff)
	}
}

func TestCommandResultRejects(t *testing.T) {
	t.Parallel()
	b := newBatch(t, 5, 2)
	ok := func(r batch.CommandResult) batch.CommandResult {
		r.ID, r.Now = "b1", t0
		if r.Status == 0 {
			r.Status = batch.StatusSucceeded
		}
		return r
	}
	if _, err := b.CommandResult(ok(batch.CommandResult{Attempt: 0, CommandID: "c1"})); !errors.Is(err, batch.ErrConflict) {
		t.Errorf("result before start: error = %v, want ErrConflict", err)
	}
	b, _ = b.StartAttempt(t0)
	tests := []struct {
		name string
		r    batch.CommandResult
		want error
	}{
		{"stale attempt", ok(batch.CommandResult{Attempt: 0, CommandID: "c1"}), batch.ErrConflict},
		{"not the current command", ok(batch.CommandResult{Attempt: 1, CommandID: "c2"}), batch.ErrConflict},
		{"no command id", ok(batch.CommandResult{Attempt: 1}), batch.ErrInvalid},
		{"pending status", ok(batch.CommandResult{Attempt: 1, CommandID: "c1", Status: batch.StatusPending}), batch.ErrInvalid},
		{"error without message", ok(batch.CommandResult{Attempt: 1, CommandID: "c1", Status: batch.StatusError}), batch.ErrInvalid},
	}
	for _, tt := range tests {
		if _, err := b.CommandResult(tt.r); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestStoredReplyIsNormalised(t *testing.T) {
	t.Parallel()
	b := newBatch(t, 5, 1)
	b, _ = b.StartAttempt(t0)
	b, err := b.CommandResult(batch.CommandResult{ID: "b1", Attempt: 1, CommandID: "c1", Now: t0, Status: batch.StatusError, Error: "x",
		Reply: &command.Reply{CommandID: "c1", Type: "A", Status: command.Status(9), Payload: []byte{}, RetryAfter: time.Second, Code: 7}})
	if err != nil {
		t.Fatal(err)
	}
	want := &command.Reply{Status: command.StatusError, Code: 7}
	if diff := cmp.Diff(want, b.Commands[0].Reply); diff != "" {
		t.Errorf("stored reply mismatch (-want +got):\n%s", diff)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	s, m := time.Second, 5*time.Minute
	tests := []struct {
		retry  int
		jitter float64
		want   time.Duration
	}{
		{0, 0, 500 * time.Millisecond},
		{0, 0.5, 750 * time.Millisecond},
		{0, 0.999999999, s - 1},
		{1, 0, s},
		{2, 1, 4 * s},
		{4, 0, 8 * s},
		{8, 1, 256 * s},
		{9, 1, m}, // 512 s capped
		{1000, 0, m / 2},
		{3, -1, 4 * s}, // jitter clamped
		{3, 7, 8 * s},
	}
	for _, tt := range tests {
		if got := batch.Backoff(tt.retry, s, m, tt.jitter); got != tt.want {
			t.Errorf("Backoff(%d, 1s, 5m, %v) = %v, want %v", tt.retry, tt.jitter, got, tt.want)
		}
	}
	if got := batch.Backoff(1<<30, 0, m, 1); got != 0 {
		t.Errorf("Backoff with base 0 = %v, want 0", got)
	}
}

// plainError is a Sender's error that says what went wrong in plain words,
// like controller.SendError.
type plainError struct {
	plain string
	err   error
}

func (e *plainError) Error() string {
	return "controller: send A[c1] to target \"t1\" on channel ch-1: " + e.err.Error()
}
func (e *plainError) Unwrap() error        { return e.err }
func (e *plainError) PlainMessage() string { return e.plain }

func TestOutcome(t *testing.T) {
	t.Parallel()
	noChannel := fmt.Errorf("controller: no channel for target %q: %w", "t1", batch.ErrNoChannel)
	closed := &plainError{"the connector's channel closed before it replied", errors.New("channel: closed")}
	tests := []struct {
		name    string
		reply   *command.Reply
		err     error
		status  batch.Status
		msg     string
		offline bool
	}{
		{"succeeded", &command.Reply{Status: command.StatusSucceeded}, nil, batch.StatusSucceeded, "", false},
		{"error reply", &command.Reply{Status: command.StatusError, Error: "disk full"}, nil, batch.StatusError, "connector replied ERROR: disk full", false},
		{"error reply with code", &command.Reply{Status: command.StatusError, Error: "nope", Code: 404}, nil, batch.StatusError, "connector replied ERROR (code 404): nope", false},
		{"bare error reply", &command.Reply{Status: command.StatusError}, nil, batch.StatusError, "connector replied ERROR", false},
		{"pending reply", &command.Reply{Status: command.StatusPending}, nil, batch.StatusError, "connector replied PENDING: a batch command must end SUCCEEDED or ERROR", false},
		{"in progress reply", &command.Reply{Status: command.StatusInProgress}, nil, batch.StatusError, "connector replied IN_PROGRESS: a batch command must end SUCCEEDED or ERROR", false},
		{"unspecified reply", &command.Reply{}, nil, batch.StatusError, "connector replied UNSPECIFIED: a batch command must end SUCCEEDED or ERROR", false},
		{"no channel", nil, noChannel, batch.StatusError, `no channel for target "t1"`, true},
		{"timeout", nil, fmt.Errorf("send A[c1]: no reply: %w", context.DeadlineExceeded), batch.StatusError, "no reply within 60s", false},
		{"other error", nil, errors.New("channel: closed"), batch.StatusError, "channel: closed", false},
		{"plain error", nil, closed, batch.StatusError, "the connector's channel closed before it replied", false},
		{"plain error, wrapped", nil, fmt.Errorf("forward: %w", closed), batch.StatusError, "the connector's channel closed before it replied", false},
		{"plain error without words", nil, &plainError{"", errors.New("channel: closed")}, batch.StatusError, `controller: send A[c1] to target "t1" on channel ch-1: channel: closed`, false},
		{"plain timeout", nil, &plainError{"the send timed out", context.DeadlineExceeded}, batch.StatusError, "no reply within 60s", false},
		{"plain busy", nil, &plainError{"the connector is busy; retry after 2s", errors.New("channel: busy")}, batch.StatusError, "the connector is busy; retry after 2s", false},
		{"nothing", nil, nil, batch.StatusError, "the sender returned neither a reply nor an error", false},
	}
	for _, tt := range tests {
		st, msg, off := batch.Outcome("t1", 60*time.Second, tt.reply, tt.err)
		if st != tt.status || msg != tt.msg || off != tt.offline {
			t.Errorf("%s: Outcome() = %v, %q, %v; want %v, %q, %v", tt.name, st, msg, off, tt.status, tt.msg, tt.offline)
		}
	}
	if _, msg, _ := batch.Outcome("t1", 1500*time.Millisecond, nil, context.DeadlineExceeded); msg != "no reply within 1.5s" {
		t.Errorf("Outcome(1.5s timeout) message = %q", msg)
	}
}
