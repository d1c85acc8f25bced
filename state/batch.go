package state

import (
	"errors"

	"github.com/exchangekit/exchange/batch"
)

// Batch event kinds: the changes of batch ops, with BatchID and TargetID set.
const (
	// BatchCreated: a batch was stored.
	BatchCreated EventKind = "batch_created"
	// BatchStarted: an attempt of the batch started.
	BatchStarted EventKind = "batch_started"
	// BatchPending: an attempt ended without success (or was interrupted);
	// the batch waits for a retry.
	BatchPending EventKind = "batch_pending"
	// BatchSucceeded: the batch ended SUCCEEDED (terminal).
	BatchSucceeded EventKind = "batch_succeeded"
	// BatchFailed: the batch ended ERROR, its retries exhausted (terminal).
	BatchFailed EventKind = "batch_failed"
	// BatchDeleted: the batch was removed (retention, or by hand).
	BatchDeleted EventKind = "batch_deleted"
)

// batchState holds the batches.
type batchState struct {
	// Batches are the persisted batches, with their indexes.
	Batches *batch.Table `json:"batches"`
}

func (s *State) initBatches() {
	if s.Batches == nil {
		s.Batches = batch.NewTable()
	}
}

// batchOps are the batch operations of Op.
type batchOps struct {
	// Batch is a batch op (create, attempt progress, reset, delete).
	Batch *batch.Op `json:"batch,omitempty"`
}

// applyBatch applies a batch op; ok is false when op holds none. Errors keep
// the batch package's sentinels and add this package's: errors.Is works with
// both batch.ErrExists and ErrExists (and likewise for not found and invalid).
func (s *State) applyBatch(op Op) (evs []Event, ok bool, err error) {
	if op.Batch == nil {
		return nil, false, nil
	}
	s.initBatches()
	bevs, err := s.Batches.Apply(*op.Batch)
	if err != nil {
		return nil, true, withStateSentinel(err)
	}
	evs = make([]Event, 0, len(bevs))
	for i := range bevs {
		e := &bevs[i]
		evs = append(evs, Event{Kind: stateBatchKind(*e), TargetID: e.TargetID, BatchID: e.BatchID, Batch: e})
	}
	return evs, true, nil
}

func stateBatchKind(e batch.Event) EventKind {
	switch e.Kind {
	case batch.EventCreated:
		return BatchCreated
	case batch.EventStarted:
		return BatchStarted
	case batch.EventPending:
		return BatchPending
	case batch.EventTerminal:
		if e.Status == batch.StatusSucceeded {
			return BatchSucceeded
		}
		return BatchFailed
	case batch.EventDeleted:
		return BatchDeleted
	}
	return EventKind("batch_" + string(e.Kind))
}

// sentinelError adds a sentinel to an error without changing its text.
type sentinelError struct {
	err      error
	sentinel error
}

func (e *sentinelError) Error() string   { return e.err.Error() }
func (e *sentinelError) Unwrap() []error { return []error{e.err, e.sentinel} }

func withStateSentinel(err error) error {
	switch {
	case errors.Is(err, batch.ErrExists):
		return &sentinelError{err, ErrExists}
	case errors.Is(err, batch.ErrNotFound):
		return &sentinelError{err, ErrNotFound}
	case errors.Is(err, batch.ErrInvalid):
		return &sentinelError{err, ErrInvalid}
	}
	return err
}
