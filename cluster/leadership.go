package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leadership follows this node's raft role and hands out leadership terms:
// a term is a context that lives while the node leads. One goroutine, owned
// by the Node and stopped by Close, reads raft's observations; the state it
// reports is always re-read from raft, so an observation dropped under load
// (a non-blocking observer drops when its buffer is full) never leaves a
// stale role behind: a later one, or the buffer's own, triggers a re-read.
type leadership struct {
	r   *raft.Raft
	obs *raft.Observer
	ch  chan raft.Observation

	mu      sync.Mutex
	term    context.Context    // nil while not leading
	end     context.CancelFunc // ends term
	changed chan struct{}      // closed and replaced at every change of term

	stop chan struct{}
	done chan struct{}
}

func newLeadership(r *raft.Raft) *leadership {
	l := &leadership{r: r, ch: make(chan raft.Observation, 16), changed: make(chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	l.obs = raft.NewObserver(l.ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	r.RegisterObserver(l.obs)
	l.update()
	go l.run()
	return l
}

func (l *leadership) run() {
	defer close(l.done)
	// Raft state changes come as observations; the ticker is a safety net
	// for a change that raced the observer's registration.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.ch:
		case <-t.C:
		}
		l.update()
	}
}

// update starts or ends the term to match raft's state now.
func (l *leadership) update() {
	leads := l.r.State() == raft.Leader
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case leads && l.term == nil:
		l.term, l.end = context.WithCancel(context.Background())
	case !leads && l.term != nil:
		l.end()
		l.term, l.end = nil, nil
	default:
		return
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// current returns the term in progress (nil when not leading) and a channel
// closed at the next change.
func (l *leadership) current() (context.Context, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term, l.changed
}

// close stops following raft and ends the term in progress. Call it before
// raft shuts down.
func (l *leadership) close() {
	l.r.DeregisterObserver(l.obs)
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != nil {
		l.end()
		l.term, l.end = nil, nil
	}
	close(l.changed) // wakes every waiter, who finds the Node closed
	l.changed = make(chan struct{})
}
