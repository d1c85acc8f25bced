package state

import (
	"fmt"
	"sync"
)

// Replica is one copy of the replicated state: a State (with its indexes), the
// lock that guards it and the subscribers to its changes. Both stores are thin
// shells over it: Memory, which applies ops as they come, and the raft FSM of
// package cluster, which applies them as the log commits them. It is safe for
// concurrent use.
type Replica struct {
	mu   sync.RWMutex // protects s, subs and next; Apply and Restore hold it while notifying
	s    *State
	subs map[int]func([]Event)
	next int
}

// NewReplica returns a Replica holding an empty State.
func NewReplica() *Replica { return &Replica{s: NewState(), subs: map[int]func([]Event){}} }

// Apply applies ops in order and returns one Result per op. Every op is
// attempted, whether the ones before it failed or not. If anything changed,
// the subscribers are called once, with all the events of ops in order,
// before Apply returns and with the Replica locked.
func (r *Replica) Apply(ops []Op) []Result {
	rs := make([]Result, len(ops))
	r.mu.Lock()
	defer r.mu.Unlock()
	var evs []Event
	for i, op := range ops {
		e, err := r.s.Apply(op)
		switch {
		case len(ops) == 1:
			evs = e // one op: its events as they are, not copied
		case evs == nil && len(e) > 0:
			// A batch (the applier's registrations): room for about two
			// events an op (registered, elected), grown once if need be.
			evs = append(make([]Event, 0, max(2*len(ops), len(e))), e...)
		default:
			evs = append(evs, e...)
		}
		if err != nil {
			rs[i].Err = NewOpError(opKind(op), err)
		}
	}
	if len(evs) > 0 {
		r.notify(evs)
	}
	return rs
}

// Restore replaces the state with s, which the Replica then owns (s must come
// from NewState or Unmarshal), and calls the subscribers with one
// StateRestored event: they resync from View.
func (r *Replica) Restore(s *State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s = s
	r.notify([]Event{{Kind: StateRestored}})
}

func (r *Replica) notify(evs []Event) {
	for _, fn := range r.subs {
		fn(evs)
	}
}

// View calls fn with the current State, which fn must only read and must not
// keep. Apply waits while fn runs.
func (r *Replica) View(fn func(*State)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn(r.s)
}

// Subscribe registers fn to be called with the events of every Apply that
// changed something, in order, and with a StateRestored event on Restore. fn
// runs with the Replica locked: it must be fast and must not block or call
// back into the Replica. The returned function unsubscribes.
func (r *Replica) Subscribe(fn func([]Event)) (cancel func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	r.subs[id] = fn
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subs, id)
	}
}

// Snapshot encodes the state (State.Marshal) under the read lock.
func (r *Replica) Snapshot() ([]byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b, err := r.s.Marshal()
	if err != nil {
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	return b, nil
}
