package membership

import (
	"fmt"
	"sync"
)

// State is a member's state as this node sees it.
type State int

const (
	// StateAlive: the node is a live member. memberlist v0.6.0 does not
	// expose its suspicion state (a node that missed probes and may be
	// declared dead soon): such a node is still reported alive.
	StateAlive State = iota + 1
	// StateDead: the node failed (stopped answering, crashed, partitioned
	// away) without leaving.
	StateDead
	// StateLeft: the node left gracefully (Leave).
	StateLeft
)

// String returns the state's lower-case name.
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	default:
		return fmt.Sprintf("State(%d)", int(s))
	}
}

// Member is a node of the cluster as this node sees it.
type Member struct {
	// Meta is what the node gossips about itself.
	Meta Meta
	// Addr is the node's gossip address, ip:port.
	Addr string
	// State is the node's state.
	State State
}

// EventType says what happened to a member.
type EventType int

const (
	// EventJoin: a node became alive (joined, or came back after failing or
	// leaving).
	EventJoin EventType = iota + 1
	// EventUpdate: a live node changed its Meta.
	EventUpdate
	// EventLeave: a node left gracefully (Member.State is StateLeft).
	EventLeave
	// EventFail: a node was declared dead (Member.State is StateDead).
	EventFail
)

// String returns the event type's lower-case name.
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	default:
		return fmt.Sprintf("EventType(%d)", int(t))
	}
}

// Event is a change of one member.
type Event struct {
	Type   EventType
	Member Member
}

// eventQueue holds the events not yet delivered, at most one per node: a new
// event for a node whose previous one is still queued replaces it in place
// (coalescing), so the memory held is bounded by the number of nodes however
// slow the consumer is. push never blocks (it runs on memberlist's
// goroutines); one goroutine pops.
type eventQueue struct {
	wake chan struct{} // capacity 1: "the queue may be non-empty"

	mu        sync.Mutex // protects the following
	order     []string   // node ids with a queued event, oldest first
	pending   map[string]Event
	coalesced uint64 // events replaced by a newer one for the same node
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1), pending: make(map[string]Event)}
}

// push queues ev, coalescing it with a queued event for the same node. A
// join still queued stays a join when the node's Meta changes before it is
// delivered; otherwise the newest event wins.
func (q *eventQueue) push(ev Event) {
	id := ev.Member.Meta.NodeID
	q.mu.Lock()
	if old, ok := q.pending[id]; ok {
		if old.Type == EventJoin && ev.Type == EventUpdate {
			ev.Type = EventJoin
		}
		q.pending[id] = ev
		q.coalesced++
	} else {
		q.order = append(q.order, id)
		q.pending[id] = ev
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop removes and returns the oldest queued event.
func (q *eventQueue) pop() (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		return Event{}, false
	}
	id := q.order[0]
	q.order[0] = ""
	q.order = q.order[1:]
	if len(q.order) == 0 {
		q.order = nil // let the backing array go
	}
	ev := q.pending[id]
	delete(q.pending, id)
	return ev, true
}

// coalescedCount returns how many events were replaced by newer ones.
func (q *eventQueue) coalescedCount() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.coalesced
}
