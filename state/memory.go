package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Memory is an in-memory store of State: the twin of the raft-backed store in
// package cluster, for embedded use, `exchange controller --in-memory`, and
// tests. It is safe for concurrent use.
type Memory struct {
	mu   sync.RWMutex // protects s and subs; Apply holds it while notifying
	s    *State
	subs map[int]func([]Event)
	next int
}

// NewMemory returns a Memory holding an empty State.
func NewMemory() *Memory { return &Memory{s: NewState(), subs: map[int]func([]Event){}} }

// Apply applies ops in order. Every op is attempted; the error joins the
// failures. Subscribers are called with the events before Apply returns.
func (m *Memory) Apply(ctx context.Context, ops ...Op) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("state: apply: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var evs []Event
	var errs []error
	for _, op := range ops {
		e, err := m.s.Apply(op)
		evs = append(evs, e...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(evs) > 0 {
		for _, fn := range m.subs {
			fn(evs)
		}
	}
	return errors.Join(errs...)
}

// View calls fn with the current State, which fn must only read and must not
// keep. Apply waits while fn runs.
func (m *Memory) View(fn func(*State)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	fn(m.s)
}

// Subscribe registers fn to be called with the events of every Apply, in
// order. fn runs with the store locked: it must be fast and must not block or
// call back into the store. The returned function unsubscribes.
func (m *Memory) Subscribe(fn func([]Event)) (cancel func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.next
	m.next++
	m.subs[id] = fn
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.subs, id)
	}
}
