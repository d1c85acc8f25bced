package state

// batchState holds the batches. It is filled in by the batch work (issue 4).
type batchState struct{}

func (s *State) initBatches() {}

// batchOps are the batch operations of Op.
type batchOps struct{}

// applyBatch applies a batch op; ok is false when op holds none.
func (s *State) applyBatch(op Op) (evs []Event, ok bool, err error) { return nil, false, nil }
