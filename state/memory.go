package state

import (
	"context"
	"fmt"
)

// Memory is an in-memory store of State: the twin of the raft-backed store in
// package cluster, for embedded use, `exchange controller --in-memory`, and
// tests. It is a Replica that applies ops as they come. It is safe for
// concurrent use.
type Memory struct {
	r *Replica
}

// NewMemory returns a Memory holding an empty State.
func NewMemory() *Memory { return &Memory{r: NewReplica()} }

// Apply applies ops in order and returns one Result per op; every op is
// attempted. The error is for the Apply as a whole (ctx done before it
// started); then no op was applied. Subscribers are called with the events
// before Apply returns. Err joins the results into one error.
func (m *Memory) Apply(ctx context.Context, ops ...Op) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("state: apply: %w", err)
	}
	return m.r.Apply(ops), nil
}

// View calls fn with the current State, which fn must only read and must not
// keep. Apply waits while fn runs.
func (m *Memory) View(fn func(*State)) { m.r.View(fn) }

// Subscribe registers fn to be called with the events of every Apply, in
// order. fn runs with the store locked: it must be fast and must not block or
// call back into the store. The returned function unsubscribes.
func (m *Memory) Subscribe(fn func([]Event)) (cancel func()) { return m.r.Subscribe(fn) }
