package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

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
// state. An unregistration has none: it is retried with backoff until it
// succeeds (or Close takes it over), so the registry never keeps a dead
// channel.
type applier struct {
	store  Store
	nodeID string
	log    *slog.Logger

	mu    sync.Mutex    // protects queue
	queue []applyReq    // waiting ops, in submission order
	kick  chan struct{} // buffered(1)
}

// applyReq is one queued op; done (buffered 1) receives its outcome, or is
// nil for unregistrations.
type applyReq struct {
	op   state.Op
	done chan error
}

func newApplier(store Store, nodeID string, log *slog.Logger) *applier {
	return &applier{store: store, nodeID: nodeID, log: log, kick: make(chan struct{}, 1)}
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

// register queues the registration of ch and waits until it is applied or
// ctx is done.
func (a *applier) register(ctx context.Context, ch state.Channel) error {
	done := make(chan error, 1)
	a.push(applyReq{op: state.Op{Register: &state.RegisterChannel{Channel: ch}}, done: done})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("register channel %s: %w", ch.ID, ctx.Err())
	}
}

// unregister queues the unregistration of channel id; it does not wait.
func (a *applier) unregister(id string) {
	a.push(applyReq{op: state.Op{Unregister: &state.UnregisterChannel{ChannelID: id}}})
}

// take removes up to maxOpsPerApply requests from the queue.
func (a *applier) take() []applyReq {
	a.mu.Lock()
	defer a.mu.Unlock()
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
	bo := newBackoff(20*time.Millisecond, 2*time.Second)
	defer bo.stop()
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
				bo.reset()
				continue
			}
			if bo.wait(ctx) != nil {
				return
			}
		}
	}
}

// apply applies one batch and settles its requests. It reports whether every
// op succeeded; failed unregistrations are put back at the head of the queue.
func (a *applier) apply(ctx context.Context, batch []applyReq) bool {
	ops := make([]state.Op, len(batch))
	for i, r := range batch {
		ops[i] = r.op
	}
	err := a.store.Apply(ctx, ops...)
	if err == nil {
		for _, r := range batch {
			if r.done != nil {
				r.done <- nil
			}
		}
		return true
	}
	if ctx.Err() == nil {
		a.log.Warn("controller: apply failed", "ops", len(ops), "err", err)
	}
	// The joined error cannot be attributed to ops: read the state to learn
	// which ones took effect.
	present := map[string]bool{}
	a.store.View(func(s *state.State) {
		for _, r := range batch {
			id := opChannel(r.op)
			if c, ok := s.Channels[id]; ok && c.NodeID == a.nodeID {
				present[id] = true
			}
		}
	})
	var retry []applyReq
	for _, r := range batch {
		id := opChannel(r.op)
		switch {
		case r.op.Register != nil && present[id]:
			r.done <- nil
		case r.op.Register != nil:
			r.done <- fmt.Errorf("register channel %s: %w", id, err)
		case present[id]:
			retry = append(retry, r)
		}
	}
	if len(retry) > 0 {
		a.mu.Lock()
		a.queue = append(retry, a.queue...)
		a.mu.Unlock()
	}
	return false
}

func opChannel(op state.Op) string {
	switch {
	case op.Register != nil:
		return op.Register.Channel.ID
	case op.Unregister != nil:
		return op.Unregister.ChannelID
	}
	return ""
}
