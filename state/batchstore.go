package state

import (
	"context"

	"github.com/exchangekit/exchange/batch"
)

// Store is a store of State: Memory, or the raft-backed Node of package
// cluster. Apply applies ops in order and returns once they are applied, with
// one Result per op (every op is attempted); its error is for the Apply as a
// whole. View calls fn with the current State, which fn must only read and
// must not keep. Subscribe calls fn with the events of every Apply, in order;
// fn runs with the store locked, so it must not block or call back into the
// store.
type Store interface {
	Apply(ctx context.Context, ops ...Op) ([]Result, error)
	View(fn func(*State))
	Subscribe(fn func([]Event)) (cancel func())
}

var (
	_ Store       = (*Memory)(nil)
	_ batch.Store = (*BatchStore)(nil)
)

// BatchStore adapts a Store to batch.Store, the view of the state the batch
// runner needs: batch ops wrapped in Ops, the batch Table of the State, and
// the batch events plus ChannelRegistered (which wakes the batches of that
// target) and StateRestored.
type BatchStore struct {
	s Store
}

// NewBatchStore returns the batch view of s.
func NewBatchStore(s Store) *BatchStore { return &BatchStore{s: s} }

// Apply applies batch ops through the underlying store.
func (b *BatchStore) Apply(ctx context.Context, ops ...batch.Op) error {
	sops := make([]Op, len(ops))
	for i := range ops {
		sops[i] = Op{batchOps: batchOps{Batch: &ops[i]}}
	}
	return Err(b.s.Apply(ctx, sops...))
}

// View calls fn with the batches of the current State.
func (b *BatchStore) View(fn func(*batch.Table)) {
	b.s.View(func(s *State) {
		t := s.Batches
		if t == nil { // never for a State made by NewState or Unmarshal
			t = &batch.Table{}
		}
		fn(t)
	})
}

// Subscribe calls fn with the batch events of every Apply, and with
// batch.EventChannelRegistered and batch.EventRestored for the registry
// events that matter to batches. Like Store.Subscribe, fn runs with the store
// locked.
func (b *BatchStore) Subscribe(fn func([]batch.Event)) (cancel func()) {
	return b.s.Subscribe(func(evs []Event) {
		var out []batch.Event
		for _, e := range evs {
			if be, ok := batchEvent(e); ok {
				out = append(out, be)
			}
		}
		if len(out) > 0 {
			fn(out)
		}
	})
}

// batchEvent returns what e means to batches: the batch table's own event,
// or a registration (which wakes the target's batches) or a restore.
func batchEvent(e Event) (batch.Event, bool) {
	switch {
	case e.Batch != nil:
		return *e.Batch, true
	case e.Kind == ChannelRegistered:
		return batch.Event{Kind: batch.EventChannelRegistered, TargetID: e.TargetID}, true
	case e.Kind == StateRestored:
		return batch.Event{Kind: batch.EventRestored}, true
	}
	return batch.Event{}, false
}
