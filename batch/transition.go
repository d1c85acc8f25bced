package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/backoff"
)

// The state machine. Every transition is a pure function of a Batch value
// and an op carrying everything it needs (times, retry delays), so that the
// store applies it identically on every node. Table applies the same code in
// place; the exported methods below work on copies.
//
//	CREATED ──StartAttempt──► IN_PROGRESS
//	PENDING ──StartAttempt──► IN_PROGRESS
//	IN_PROGRESS ──CommandResult SUCCEEDED, more commands──► IN_PROGRESS (next command)
//	IN_PROGRESS ──CommandResult SUCCEEDED, last command───► SUCCEEDED (terminal)
//	IN_PROGRESS ──failure, offline───────────────────────► PENDING (retry not counted)
//	IN_PROGRESS ──failure, Retry < MaxRetry──────────────► PENDING (Retry+1, NextAttemptAt = now + delay)
//	IN_PROGRESS ──failure, Retry ≥ MaxRetry──────────────► ERROR (terminal)
//	IN_PROGRESS ──ResetInProgress────────────────────────► PENDING (due now, retry not counted)

// interruptedMessage is the batch error after ResetInProgress.
const interruptedMessage = "attempt interrupted by a controller restart or leader change; resuming (the command in progress is re-sent with the same id)"

// StartAttempt returns b with a new attempt started at now: status
// IN_PROGRESS, Attempts+1, LastRetryAt = now, and the first command that has
// not succeeded IN_PROGRESS (commands that succeeded in earlier attempts are
// not re-sent). b must be CREATED or PENDING (ErrConflict otherwise). Whether
// the batch is due is the runner's decision, not the state machine's.
func (b Batch) StartAttempt(now time.Time) (Batch, error) {
	b = b.Clone()
	err := b.start(now)
	return b, err
}

// CommandResult returns b with the outcome of its command in progress
// recorded: on success the next command becomes IN_PROGRESS, or the batch
// SUCCEEDED after the last one; on failure the attempt ends (see
// FinishAttempt). r.Attempt and r.CommandID must name the current attempt and
// command (ErrConflict otherwise); r.Status must be SUCCEEDED or ERROR, and an
// ERROR needs r.Error (ErrInvalid).
func (b Batch) CommandResult(r CommandResult) (Batch, error) {
	b = b.Clone()
	err := b.result(r)
	return b, err
}

// FinishAttempt returns b with its current attempt ended as a failure that is
// not a command's reply (the command in progress goes back to PENDING): b
// becomes PENDING with NextAttemptAt = now + f.RetryDelay and, unless
// f.Offline, Retry+1; or ERROR when Retry has reached MaxRetry (and the
// failure is not offline).
func (b Batch) FinishAttempt(f FinishAttempt) (Batch, error) {
	b = b.Clone()
	err := b.finishOp(f)
	return b, err
}

// ResetInProgress returns b made PENDING and due at now if it was
// IN_PROGRESS (its attempt was interrupted: the controller running it died or
// lost leadership), and whether it changed. The interrupted attempt does not
// count against MaxRetry; its command in progress will be re-sent with the
// same id.
func (b Batch) ResetInProgress(now time.Time) (Batch, bool) {
	b = b.Clone()
	ok := b.reset(now)
	return b, ok
}

func (b *Batch) start(now time.Time) error {
	if b.Status != StatusCreated && b.Status != StatusPending {
		return fmt.Errorf("start batch %s: %w: it is %s", b.ID, ErrConflict, b.Status)
	}
	now = norm(now)
	b.Status = StatusInProgress
	b.Attempts++
	b.LastRetryAt = now
	b.NextAttemptAt = time.Time{}
	b.UpdatedAt = now
	if !b.advance(0) {
		b.succeed()
	}
	return nil
}

// advance makes the first command from i on that has not succeeded
// IN_PROGRESS; it reports false when there is none.
func (b *Batch) advance(i int) bool {
	for ; i < len(b.Commands); i++ {
		c := &b.Commands[i]
		if c.Status != StatusSucceeded {
			c.Status = StatusInProgress
			c.Reply = nil
			c.Error = ""
			return true
		}
	}
	return false
}

func (b *Batch) succeed() {
	b.Status = StatusSucceeded
	b.Error = ""
	b.NextAttemptAt = time.Time{}
}

func (b *Batch) checkAttempt(what string, attempt int, commandID string) (int, error) {
	if b.Status != StatusInProgress {
		return -1, fmt.Errorf("%s for batch %s: %w: it is %s", what, b.ID, ErrConflict, b.Status)
	}
	if attempt != b.Attempts {
		return -1, fmt.Errorf("%s for batch %s: %w: attempt %d is over, attempt %d is running", what, b.ID, ErrConflict, attempt, b.Attempts)
	}
	i := b.current()
	if commandID != "" && (i < 0 || b.Commands[i].Command.ID != commandID) {
		return -1, fmt.Errorf("%s for batch %s: %w: command %q is not the one in progress", what, b.ID, ErrConflict, commandID)
	}
	return i, nil
}

func (b *Batch) result(r CommandResult) error {
	if r.Status != StatusSucceeded && r.Status != StatusError {
		return fmt.Errorf("%w: result status must be SUCCEEDED or ERROR, not %s", ErrInvalid, r.Status)
	}
	if r.Status == StatusError && r.Error == "" {
		return fmt.Errorf("%w: an ERROR result needs an error message", ErrInvalid)
	}
	if r.CommandID == "" {
		return fmt.Errorf("%w: a result needs a command id", ErrInvalid)
	}
	i, err := b.checkAttempt("record result", r.Attempt, r.CommandID)
	if err != nil {
		return err
	}
	now := norm(r.Now)
	c := &b.Commands[i]
	c.Status = r.Status
	c.Reply = normReply(r.Reply)
	c.Error = r.Error
	b.UpdatedAt = now
	if r.Status == StatusSucceeded {
		if !b.advance(i + 1) {
			b.succeed()
		}
		return nil
	}
	b.fail(now, r.Error, r.Offline, r.RetryDelay)
	return nil
}

func (b *Batch) finishOp(f FinishAttempt) error {
	if f.Error == "" {
		return fmt.Errorf("%w: finishing an attempt needs an error message", ErrInvalid)
	}
	i, err := b.checkAttempt("finish attempt", f.Attempt, "")
	if err != nil {
		return err
	}
	now := norm(f.Now)
	if i >= 0 {
		b.Commands[i].Status = StatusPending
	}
	b.UpdatedAt = now
	b.fail(now, f.Error, f.Offline, f.RetryDelay)
	return nil
}

// fail ends the attempt in progress as failed.
func (b *Batch) fail(now time.Time, msg string, offline bool, delay time.Duration) {
	b.Error = msg
	if !offline && b.Retry >= b.maxRetry() {
		b.Status = StatusError
		b.NextAttemptAt = time.Time{}
		return
	}
	if !offline {
		b.Retry++
	}
	b.Status = StatusPending
	b.NextAttemptAt = now.Add(max(delay, 0))
}

func (b *Batch) reset(now time.Time) bool {
	if b.Status != StatusInProgress {
		return false
	}
	now = norm(now)
	if i := b.current(); i >= 0 {
		b.Commands[i].Status = StatusPending
	}
	b.Status = StatusPending
	b.Error = interruptedMessage
	b.NextAttemptAt = now
	b.UpdatedAt = now
	return true
}

// Backoff returns the delay before the retry that follows retry earlier
// retries: base·2^retry capped at limit, with "equal jitter": the result is
// uniformly spread over [d/2, d] by jitter, a number in [0, 1) the caller
// draws (the state machine never draws random numbers, so that every node
// applies the same delay). jitter is clamped to [0, 1]; a base or limit of
// zero or less gives 0. It is backoff.Policy.EqualJitter.
func Backoff(retry int, base, limit time.Duration, jitter float64) time.Duration {
	if limit <= 0 { // Policy reads Max ≤ 0 as "no cap"; here it caps at nothing
		return 0
	}
	return backoff.Policy{Base: base, Max: limit}.EqualJitter(retry, jitter)
}

// Outcome turns what a Sender returned for a batch command into the status to
// record (SUCCEEDED or ERROR) and, for ERROR, a message in plain words: the
// PlainMessage of a PlainError in err's chain when there is one, else
// err.Error(). offline reports that the target had no channel (err wraps ErrNoChannel):
// such an attempt does not count against MaxRetry. timeout is the command
// timeout, named when err wraps context.DeadlineExceeded.
//
// A reply whose status is not terminal (PENDING, IN_PROGRESS) is a failure:
// a batch command must end SUCCEEDED or ERROR, or the batch could never end.
func Outcome(targetID string, timeout time.Duration, reply *command.Reply, err error) (status Status, msg string, offline bool) {
	switch {
	case errors.Is(err, ErrNoChannel):
		return StatusError, fmt.Sprintf("no channel for target %q", targetID), true
	case errors.Is(err, context.DeadlineExceeded):
		return StatusError, "no reply within " + seconds(timeout), false
	case err != nil:
		var pe PlainError
		if errors.As(err, &pe) {
			if msg := pe.PlainMessage(); msg != "" {
				return StatusError, msg, false
			}
		}
		return StatusError, err.Error(), false
	case reply == nil:
		return StatusError, "the sender returned neither a reply nor an error", false
	case reply.Status == command.StatusSucceeded:
		return StatusSucceeded, "", false
	case reply.Status == command.StatusError:
		msg := "connector replied ERROR"
		if reply.Code != 0 {
			msg += fmt.Sprintf(" (code %d)", reply.Code)
		}
		if reply.Error != "" {
			msg += ": " + reply.Error
		}
		return StatusError, msg, false
	}
	return StatusError, fmt.Sprintf("connector replied %s: a batch command must end SUCCEEDED or ERROR", reply.Status), false
}

// seconds writes a whole number of seconds as "60s", anything else as
// Duration.String does.
func seconds(d time.Duration) string {
	if d > 0 && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
