package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/exchangekit/exchange/command"
)

// Sender sends one command to a target and returns its reply: the
// controller's Send. It must wrap ErrNoChannel in its error when the target
// has no channel, and honour ctx (its deadline is the command timeout). It
// must not modify cmd.
type Sender interface {
	Send(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error)
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error)

// Send calls f(ctx, targetID, cmd).
func (f SenderFunc) Send(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	return f(ctx, targetID, cmd)
}

// Store is where the runner keeps batches: the batches of the replicated
// state, adapted by state.BatchStore from an in-memory or raft-backed store.
//
// Apply applies ops in order and returns once they are applied (every op is
// attempted; the error joins the failures). View calls fn with the current
// Table, which fn must only read and must not keep. Subscribe calls fn with
// the events of every Apply, in order, on every node; fn runs with the store
// locked, so it must not block or call back into the store.
type Store interface {
	Apply(ctx context.Context, ops ...Op) error
	View(fn func(*Table))
	Subscribe(fn func([]Event)) (cancel func())
}

// maxDeletes bounds the expired batches deleted by one store write.
const maxDeletes = 256

// Runner executes batches and answers questions about them. Create one per
// node with NewRunner; every node's Runner serves ExecuteBatch, GetBatch,
// ListBatches, AwaitBatch and the observers, while only the leader's executes
// batches, inside Run.
//
// Execution: one batch at a time per target, in creation order; up to
// Config.Concurrency targets in parallel; commands in order, each result
// written to the store before the next command is sent; the first failure
// ends the attempt, which is retried with exponential backoff until MaxRetry.
// A batch waiting for a retry runs at once when a channel of its target
// registers. Between events the runner sleeps until the earliest due batch
// (one timer). Finished batches are deleted after Config.Retention.
//
// A Runner is safe for concurrent use. It runs one notifier goroutine from
// NewRunner to Close, and, inside Run, a scheduling loop plus one goroutine
// per target being attempted (at most Config.Concurrency).
type Runner struct {
	cfg    Config
	log    *slog.Logger
	sender Sender
	store  Store
	jitter func() float64 // draws the backoff jitter; tests may replace it
	unsub  func()

	wake   chan struct{} // capacity 1: the scheduling loop has something to look at
	active atomic.Bool   // Run is executing batches: record kicks

	smu   sync.Mutex           // protects busy, kicks and holds; taken inside store callbacks (store lock → smu)
	busy  map[string]bool      // targets with an attempt running
	kicks map[string]bool      // targets a channel registered for since the loop last looked
	holds map[string]time.Time // targets whose last attempt hit a store error: not before then

	mu      sync.Mutex         // protects closed and stopRun
	closed  bool               // Close was called
	stopRun context.CancelFunc // cancels the Run in progress, if any
	runs    sync.WaitGroup     // Run calls in progress

	closing   chan struct{} // closed by Close: stops the notifier and unblocks waiters
	closeOnce sync.Once

	obs observers
}

// NewRunner returns a Runner over store, sending commands with sender. It
// subscribes to the store and starts the notifier goroutine (which delivers
// observer calls); Close stops it. Batches run only while Run runs.
func NewRunner(cfg Config, sender Sender, store Store) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sender == nil || store == nil {
		return nil, errors.New("batch: NewRunner needs a sender and a store")
	}
	cfg = cfg.withDefaults()
	r := &Runner{
		cfg:     cfg,
		log:     cfg.Logger,
		sender:  sender,
		store:   store,
		jitter:  rand.Float64,
		wake:    make(chan struct{}, 1),
		busy:    map[string]bool{},
		kicks:   map[string]bool{},
		holds:   map[string]time.Time{},
		closing: make(chan struct{}),
	}
	r.obs.init(r.notify, r.log)
	r.unsub = store.Subscribe(r.onEvents)
	r.obs.notices.Start()
	return r, nil
}

// Close stops Run (if running) and the notifier, and waits for them: an
// attempt cut short leaves its batch IN_PROGRESS in the store, and the next
// Run (on this node or a new leader) resumes it. Pending observer calls are
// dropped, and AwaitBatch calls fail with ErrClosed. Close is idempotent. It
// must not be called from an observer (it waits for the notifier that runs
// them).
func (r *Runner) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		if r.stopRun != nil {
			r.stopRun()
		}
		r.mu.Unlock()
		r.unsub()
		close(r.closing)
	})
	r.runs.Wait()
	r.obs.notices.Close() // drops what is left: closing is closed
	return nil
}

// Run executes batches until ctx is done or the Runner is closed, then waits
// for the attempts it started (their sends are cancelled) and returns: nil
// once ctx is done, ErrClosed when Close stopped it first. Call it while this node leads: always for a single
// node; in a cluster, call Run with a context that is cancelled when the node
// loses leadership, and call it again when the node leads again. Only one Run
// may execute at a time (ErrRunning).
//
// Run first resets the batches left IN_PROGRESS (by a dead leader or a
// crashed process) to PENDING so they resume at once. Store errors are logged
// and retried; they never stop the loop.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case r.stopRun != nil:
		r.mu.Unlock()
		return ErrRunning
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	r.stopRun = cancel
	r.runs.Add(1)
	r.mu.Unlock()
	defer r.runs.Done()

	r.active.Store(true)
	var workers sync.WaitGroup
	r.loop(ctx, &workers)
	r.active.Store(false)
	cancel()
	workers.Wait()

	r.mu.Lock()
	r.stopRun = nil
	closed := r.closed
	r.mu.Unlock()
	if closed && parent.Err() == nil {
		return ErrClosed
	}
	return nil
}

// signal wakes the scheduling loop without blocking.
func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// onEvents is the store subscription. It runs under the store's lock: it only
// records and signals.
func (r *Runner) onEvents(evs []Event) {
	wake := false
	for _, e := range evs {
		switch e.Kind {
		case EventChannelRegistered:
			if r.active.Load() {
				r.smu.Lock()
				r.kicks[e.TargetID] = true
				r.smu.Unlock()
				wake = true
			}
		case EventCreated, EventPending, EventTerminal, EventDeleted, EventRestored:
			wake = true
		}
		r.obs.event(e)
	}
	if wake {
		r.signal()
	}
}

// loop is the scheduling loop: it starts due attempts, recovers orphaned
// ones, deletes expired batches, then sleeps until the next due time or an
// event.
func (r *Runner) loop(ctx context.Context, workers *sync.WaitGroup) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	reset := false
	var resetAt time.Time // when to try the reset again after a store error
	for {
		var next time.Time
		if !reset && !time.Now().Before(resetAt) {
			// Batches IN_PROGRESS now were being run by a process that is gone
			// (this one before a restart, or a deposed leader): resume them.
			if err := r.apply(ctx, Op{Reset: &ResetInProgress{Now: time.Now()}}); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Error("batch: cannot reset interrupted batches; retrying", "err", err)
				resetAt = time.Now().Add(r.cfg.BackoffBase)
			} else {
				reset = true
			}
		}
		if !reset {
			next = resetAt
		} else {
			next = r.schedule(ctx, workers)
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// schedule looks at the head batch of every target and starts the due ones,
// within the concurrency bound. It returns when it wants to look again (zero:
// only on an event).
func (r *Runner) schedule(ctx context.Context, workers *sync.WaitGroup) time.Time {
	now := time.Now()
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	type job struct{ id, target string }
	var starts []job
	var orphans, expired []string
	var retentionNext time.Time // when the next finished batch expires
	staleAfter := 2 * r.cfg.CommandTimeout
	r.store.View(func(t *Table) {
		r.smu.Lock()
		defer r.smu.Unlock()
		free := r.cfg.Concurrency - len(r.busy)
		for _, e := range t.heads() {
			b := &e.b
			if r.busy[b.TargetID] {
				continue // its attempt is running; a kick waits for it to end
			}
			if hold, ok := r.holds[b.TargetID]; ok {
				if now.Before(hold) {
					soon(hold)
					continue
				}
				delete(r.holds, b.TargetID)
			}
			kicked := r.kicks[b.TargetID] // consumed when the attempt starts
			due := false
			switch b.Status {
			case StatusCreated:
				due = true
			case StatusPending:
				due = kicked || !b.NextAttemptAt.After(now)
				if !due {
					soon(b.NextAttemptAt)
				}
			case StatusInProgress:
				// Nobody here runs it: an attempt of a deposed leader, or one
				// whose store write failed. Resume it once it is clearly dead.
				if deadline := b.UpdatedAt.Add(staleAfter); now.Before(deadline) {
					soon(deadline)
				} else {
					orphans = append(orphans, b.ID)
				}
			}
			if due && free > 0 {
				free--
				r.busy[b.TargetID] = true
				delete(r.kicks, b.TargetID)
				starts = append(starts, job{b.ID, b.TargetID})
			}
		}
		for k := range r.kicks {
			if !r.busy[k] && len(t.open[k]) == 0 {
				delete(r.kicks, k) // no batch waits for that target
			}
		}
		for k, h := range r.holds {
			if !now.Before(h) {
				delete(r.holds, k)
			}
		}
		if r.cfg.Retention >= 0 {
			var n time.Time
			expired, n = t.expired(now.Add(-r.cfg.Retention), maxDeletes)
			if !n.IsZero() {
				retentionNext = n.Add(r.cfg.Retention)
			}
		}
	})
	for _, id := range orphans {
		r.log.Warn("batch: resuming an attempt nobody is running", "batch", id)
		if err := r.apply(ctx, Op{Reset: &ResetInProgress{ID: id, Now: now}}); err != nil && ctx.Err() == nil {
			r.log.Error("batch: cannot reset orphaned batch; retrying", "batch", id, "err", err)
			soon(now.Add(r.cfg.BackoffBase))
		}
	}
	if len(expired) > 0 {
		ops := make([]Op, len(expired))
		for i, id := range expired {
			ops[i] = Op{Delete: &DeleteBatch{ID: id}}
		}
		if err := r.apply(ctx, ops...); err != nil {
			if ctx.Err() == nil {
				r.log.Error("batch: cannot delete expired batches; retrying", "count", len(ops), "err", err)
			}
			retentionNext = now.Add(r.cfg.BackoffBase)
		} else {
			r.log.Debug("batch: deleted expired batches", "count", len(ops))
		}
	}
	if !retentionNext.IsZero() {
		soon(retentionNext)
	}
	for _, j := range starts {
		workers.Go(func() {
			ok := r.attempt(ctx, j.id)
			r.finished(j.target, ok)
		})
	}
	return next
}

// finished marks target idle and wakes the loop. After a store error the
// target is held back for BackoffBase, so a failing store is not hammered.
func (r *Runner) finished(target string, ok bool) {
	r.smu.Lock()
	delete(r.busy, target)
	if !ok {
		r.holds[target] = time.Now().Add(r.cfg.BackoffBase)
	}
	r.smu.Unlock()
	r.signal()
}

// apply writes ops, bounded by the command timeout.
func (r *Runner) apply(ctx context.Context, ops ...Op) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	return r.store.Apply(ctx, ops...)
}

// attempt runs one attempt of batch id: start it, then send its commands in
// order, writing each result before sending the next, until one fails or all
// succeeded. The runner keeps a copy of the batch and applies to it the very
// transitions the store applies, so it never has to read the batch back. It
// returns false when a store write failed.
func (r *Runner) attempt(ctx context.Context, id string) bool {
	var b Batch
	var ok bool
	r.store.View(func(t *Table) {
		if e := t.byID[id]; e != nil {
			b, ok = e.b.Clone(), true
		}
	})
	if !ok || (b.Status != StatusCreated && b.Status != StatusPending) {
		return true
	}
	start := StartAttempt{ID: id, Now: time.Now()}
	if err := r.apply(ctx, Op{Start: &start}); err != nil {
		r.logWrite(ctx, "start", &b, err)
		return false
	}
	if err := b.start(start.Now); err != nil {
		r.log.Error("batch: start diverged from the store", "batch", id, "err", err)
		return true
	}
	r.log.Debug("batch: attempt started", "batch", id, "target", b.TargetID, "attempt", b.Attempts)
	ctx, span := startAttemptSpan(ctx, &b)
	defer endAttemptSpan(span, &b)
	for b.Status == StatusInProgress {
		cmd := b.Commands[b.current()].Command
		reply, err := r.sendOne(ctx, b.TargetID, cmd)
		if ctx.Err() != nil {
			// Leadership lost or Close: the reply's fate is unknown, so the
			// batch stays IN_PROGRESS and the next leader re-sends cmd.
			r.log.Debug("batch: attempt interrupted", "batch", id, "command", cmd.ID)
			return true
		}
		st, msg, offline := Outcome(b.TargetID, r.cfg.CommandTimeout, reply, err)
		res := CommandResult{
			ID: id, Attempt: b.Attempts, CommandID: cmd.ID, Now: time.Now(),
			Status: st, Reply: reply, Error: msg, Offline: offline,
			RetryDelay: r.retryDelay(b.Retry, offline),
		}
		r.bound(&res)
		if err := r.apply(ctx, Op{Result: &res}); err != nil {
			if ctx.Err() != nil {
				return true // interrupted, as above
			}
			// The result could not be written. Record the command as failed,
			// without the reply's payload, so that the attempt counts and the
			// batch moves on instead of being resumed (and answered with
			// the same unwritable reply by the connector's dedup window)
			// for ever.
			r.log.Error("batch: cannot store a command's result; recording it as failed",
				"batch", id, "target", b.TargetID, "command", cmd.ID, "err", err)
			unstorable(&res, fmt.Sprintf("the reply could not be stored: %v", err))
			if err := r.apply(ctx, Op{Result: &res}); err != nil {
				r.logWrite(ctx, "record result", &b, err)
				return false
			}
		}
		if err := b.result(res); err != nil {
			r.log.Error("batch: result diverged from the store", "batch", id, "err", err)
			return true
		}
	}
	switch b.Status {
	case StatusSucceeded:
		r.log.Info("batch: succeeded", "batch", id, "target", b.TargetID, "attempts", b.Attempts)
	case StatusError:
		r.log.Warn("batch: failed for good", "batch", id, "target", b.TargetID, "attempts", b.Attempts, "error", b.Error)
	case StatusPending:
		r.log.Info("batch: attempt failed; will retry", "batch", id, "target", b.TargetID, "attempt", b.Attempts,
			"retry", b.Retry, "maxRetry", b.maxRetry(), "next", b.NextAttemptAt, "error", b.Error)
	}
	return true
}

// bound keeps a result within what a batch stores: a reply payload over
// MaxReplyPayload fails the command, and error texts are cut to maxErrorText
// bytes.
func (r *Runner) bound(res *CommandResult) {
	res.Error = truncateText(res.Error, maxErrorText)
	if res.Reply == nil {
		return
	}
	if n := len(res.Reply.Payload); n > r.cfg.MaxReplyPayload {
		unstorable(res, fmt.Sprintf("the reply's payload of %d bytes exceeds the %d bytes a batch stores", n, r.cfg.MaxReplyPayload))
		return
	}
	if len(res.Reply.Error) > maxErrorText {
		rep := *res.Reply
		rep.Error = truncateText(rep.Error, maxErrorText)
		res.Reply = &rep
	}
}

// unstorable turns res into a failure explained by why, keeping the reply's
// status, code and error text but not its payload.
func unstorable(res *CommandResult, why string) {
	res.Status, res.Error, res.Offline = StatusError, why, false
	if res.Reply != nil {
		res.Reply = &command.Reply{Status: res.Reply.Status, Code: res.Reply.Code, Error: truncateText(res.Reply.Error, maxErrorText)}
	}
}

// truncateText cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "… (truncated)"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

func (r *Runner) logWrite(ctx context.Context, what string, b *Batch, err error) {
	if ctx.Err() != nil {
		return
	}
	// The batch stays as the store has it; if it is left IN_PROGRESS, the
	// loop resumes it once it is clearly orphaned.
	r.log.Error("batch: store write failed; attempt abandoned", "op", what, "batch", b.ID, "target", b.TargetID, "err", err)
}

// sendOne sends cmd with the command timeout. A panicking Sender is a failed
// command, not a dead runner.
func (r *Runner) sendOne(ctx context.Context, target string, cmd *command.Command) (reply *command.Reply, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			reply, err = nil, fmt.Errorf("batch: sender panicked: %v", p)
		}
	}()
	return r.sender.Send(ctx, target, cmd)
}

// retryDelay draws the backoff before the retry after retry earlier ones. A
// target without a channel waits BackoffMax (jittered): a registration wakes
// its batch long before that.
func (r *Runner) retryDelay(retry int, offline bool) time.Duration {
	if offline {
		return Backoff(0, r.cfg.BackoffMax, r.cfg.BackoffMax, r.jitter())
	}
	return Backoff(retry, r.cfg.BackoffBase, r.cfg.BackoffMax, r.jitter())
}

// ExecuteBatch validates b, fills in its defaults and ids (see Prepare),
// stores it and returns the stored batch at once: it does not wait for an
// attempt (use AwaitBatch or Observe for the outcome). Once it returns, the
// batch is durable (with a raft-backed store) and will be run by the leader.
//
// Errors: *ValidationError naming the field; an error wrapping ErrExists when
// the id is taken; the store's error otherwise.
func (r *Runner) ExecuteBatch(ctx context.Context, b Batch) (Batch, error) {
	p, err := Prepare(b, time.Now(), r.cfg.MaxRetry, command.NewID)
	if err != nil {
		return Batch{}, err
	}
	exists, unfinished := false, 0
	r.store.View(func(t *Table) {
		_, exists = t.byID[p.ID]
		for _, e := range t.byTarget[p.TargetID] {
			if !e.b.Status.Terminal() {
				unfinished++
			}
		}
	})
	if exists {
		return Batch{}, fmt.Errorf("execute batch %s: %w", p.ID, ErrExists)
	}
	if max := r.cfg.MaxUnfinishedPerTarget; max > 0 && unfinished >= max {
		return Batch{}, fmt.Errorf("execute batch %s: target %q has %d unfinished batches, its limit: %w", p.ID, p.TargetID, unfinished, ErrTooMany)
	}
	if err := r.store.Apply(ctx, Op{Create: &CreateBatch{Batch: p}}); err != nil {
		return Batch{}, fmt.Errorf("execute batch %s: %w", p.ID, err)
	}
	return p, nil
}

// GetBatch returns batch id (an error wrapping ErrNotFound if there is none).
func (r *Runner) GetBatch(id string) (Batch, error) {
	b, ok := r.lookup(id)
	if !ok {
		return Batch{}, fmt.Errorf("get batch %s: %w", id, ErrNotFound)
	}
	return b, nil
}

// ListBatches returns the batches matching f, oldest first.
func (r *Runner) ListBatches(f Filter) []Batch {
	var out []Batch
	r.store.View(func(t *Table) { out = t.List(f) })
	return out
}

// ListBatchesPage returns at most limit batches that match f, in the order
// of the listings (creation time, then id), after the position after (from
// the first when nil): a page of ListBatches, whose cost does not grow with
// the number of batches stored (Table.Page).
func (r *Runner) ListBatchesPage(f Filter, after *Position, limit int) []Batch {
	var out []Batch
	r.store.View(func(t *Table) { out = t.Page(f, after, limit) })
	return out
}

// DeleteBatch removes batch id whatever its status (an error wrapping
// ErrNotFound if there is none). Deleting an unfinished batch cancels it: a
// running attempt stops at its next store write, and observers of the batch
// are dropped (AwaitBatch fails with ErrNotFound).
func (r *Runner) DeleteBatch(ctx context.Context, id string) error {
	// The store's error names the op and the batch already.
	return r.store.Apply(ctx, Op{Delete: &DeleteBatch{ID: id}})
}

func (r *Runner) lookup(id string) (Batch, bool) {
	var b Batch
	var ok bool
	r.store.View(func(t *Table) { b, ok = t.Get(id) })
	return b, ok
}
