package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/internal/backoff"
	"github.com/exchangekit/exchange/internal/logthrottle"
	"github.com/exchangekit/exchange/state"
)

// maxOpsPerApply bounds one group commit.
const maxOpsPerApply = 512

// applier is the group commit in front of the store: registrations and
// unregistrations from many goroutines are queued and applied by one
// goroutine, as many per Apply as are waiting. On a raft-backed store, where
// every Apply costs about one disk sync, a registration storm then costs a
// few Applies instead of one per channel (ARCHITECTURE §10).
//
// A registration has a waiter, told whether the channel made it into the
// state. Unregistrations and the removal of a previous run's channels have
// none: they are retried with backoff until they succeed (or Close takes the
// unregistrations over), so the registry never keeps a dead channel. The
// queue is FIFO, and ops that could not be applied go back to its head in
// order, so an op is never applied before one queued ahead of it.
type applier struct {
	store   Cluster
	log     *slog.Logger
	failLog *logthrottle.Throttle // "apply failed; will retry" lines

	mu    sync.Mutex    // protects queue
	queue []applyReq    // waiting ops, in submission order
	kick  chan struct{} // buffered(1)
}

// applyReq is one queued op. A registration has a waiter: then is called
// with its outcome (on the applier's goroutine: it must not block); other
// ops have none. gone settles a
// registration once: whoever sets it first, the applier delivering the
// outcome or the waiter giving up, owns the outcome, and an op whose waiter
// gave up is dropped if it was not taken yet.
type applyReq struct {
	op   state.Op
	then func(error)
	gone *atomic.Bool
}

// settle delivers the outcome of r to its waiter, unless the waiter gave up
// first.
func (r applyReq) settle(err error) {
	if r.gone != nil && !r.gone.CompareAndSwap(false, true) {
		return
	}
	if r.then != nil {
		r.then(err)
	}
}

// retryLogInterval bounds the warnings of operations retried in a loop
// ("apply failed", "PRIMARY notification failed") to one per interval; each
// says how many were not logged since the previous one.
const retryLogInterval = 10 * time.Second

func newApplier(store Cluster, log *slog.Logger) *applier {
	return &applier{store: store, log: log, failLog: logthrottle.New(retryLogInterval), kick: make(chan struct{}, 1)}
}

func (a *applier) push(reqs ...applyReq) {
	a.mu.Lock()
	a.queue = append(a.queue, reqs...)
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// registerThen queues the registration of ch (taking over its connector's
// other channels of the target if takeOver is set; see
// state.RegisterChannel), without waiting: then receives its outcome, once, on the applier's
// goroutine (it must not block), unless the caller sets gone first (with
// CompareAndSwap(false, true): whoever sets it owns the outcome), which
// gives the registration up: dropped if it was not taken yet, else its
// outcome is not delivered. It never settles if the applier stops first
// (the controller is closing).
func (a *applier) registerThen(takeOver bool, ch state.Channel, gone *atomic.Bool, then func(error)) {
	op := state.Op{Register: &state.RegisterChannel{Channel: ch, TakeOver: takeOver}}
	a.push(applyReq{op: op, then: then, gone: gone})
}

// unregister queues the unregistration of channel id; it does not wait.
func (a *applier) unregister(id string) {
	a.push(applyReq{op: state.Op{Unregister: &state.UnregisterChannel{ChannelID: id}}})
}

// take removes up to maxOpsPerApply requests from the queue.
func (a *applier) take() []applyReq {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queue = slices.DeleteFunc(a.queue, func(r applyReq) bool { return r.gone != nil && r.gone.Load() })
	n := min(len(a.queue), maxOpsPerApply)
	batch := slices.Clone(a.queue[:n])
	a.queue = slices.Delete(a.queue, 0, n)
	return batch
}

// leftoverUnregisters empties the queue (once run has returned) and returns
// the channel ids of the unregistrations it held. Queued registrations are
// dropped: their channels are closed by then.
func (a *applier) leftoverUnregisters() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for _, r := range a.queue {
		if r.op.Unregister != nil {
			ids = append(ids, r.op.Unregister.ChannelID)
		}
	}
	a.queue = nil
	return ids
}

// run applies queued ops until ctx is done.
func (a *applier) run(ctx context.Context) {
	bo := backoff.NewWaiter(backoff.Policy{Base: 20 * time.Millisecond, Max: 2 * time.Second})
	defer bo.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		for {
			batch := a.take()
			if len(batch) == 0 {
				break
			}
			if a.apply(ctx, batch) {
				bo.Reset()
				continue
			}
			if bo.Wait(ctx) != nil {
				return
			}
		}
	}
}

// apply applies one batch and settles its requests, op by op from the
// results. It reports whether the Apply went through; when it did not (no
// leader, ctx, node closed: the outcome is unknown), the whole batch goes
// back to the head of the queue, to be applied again: every op is safe to
// apply twice (a registration already applied answers "exists", an
// unregistration "not found").
func (a *applier) apply(ctx context.Context, batch []applyReq) bool {
	ops := make([]state.Op, len(batch))
	for i, r := range batch {
		ops[i] = r.op
	}
	rs, err := a.store.Apply(ctx, ops...)
	if err == nil && len(rs) != len(ops) {
		err = fmt.Errorf("controller: apply: %d results for %d ops", len(rs), len(ops))
	}
	if err != nil {
		if ctx.Err() == nil {
			if ok, skipped := a.failLog.Allow(time.Now()); ok {
				a.log.Warn("controller: apply failed; will retry", "ops", len(ops), "err", err,
					"not_logged_since_last", skipped)
			}
		}
		a.mu.Lock()
		a.queue = append(batch, a.queue...)
		a.mu.Unlock()
		return false
	}
	for i, r := range batch {
		res := rs[i]
		switch {
		case r.op.Register != nil:
			if res.OK() || res.Err.Code == state.CodeExists { // exists: an earlier try of this very op
				r.settle(nil)
			} else {
				r.settle(fmt.Errorf("register channel %s: %w", r.op.Register.Channel.ID, res.Err))
			}
		case res.OK() || res.Err.Code == state.CodeNotFound:
		default: // cannot happen for unregistrations and node removals; never retried for ever
			a.log.Error("controller: op refused by the state", "op", res.Err.Op, "err", res.Err)
		}
	}
	return true
}
