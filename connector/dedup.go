package connector

import (
	"sync"

	"github.com/exchangekit/exchange/command"
)

// window remembers recently completed user commands by id, and the ones
// running, so that a command delivered twice (a batch retry after a lost
// reply, a resend after a reconnection) runs its handler once.
//
// Completed entries are kept in insertion order and the oldest is evicted
// beyond size (LRU by insertion: a hit does not refresh an entry). Only
// successful outcomes are remembered: an error, or a reply with status ERROR,
// is forgotten once delivered, so a retry runs the handler again; retrying a
// failure is the point of a retry.
type window struct {
	mu      sync.Mutex
	size    int
	done    map[string]*outcome // completed, successful
	order   []string            // ids of done, oldest at next once full
	next    int
	running map[string]*outcome
}

// outcome is one run of a handler: done is closed once reply and err are set.
type outcome struct {
	done  chan struct{}
	reply *command.Reply
	err   error
}

func newWindow(size int) *window {
	return &window{size: size, done: make(map[string]*outcome), running: make(map[string]*outcome)}
}

// join looks id up. It returns the completed outcome if there is one;
// otherwise the running outcome, with first true if the caller has just
// created it and must run the handler and call finish.
func (w *window) join(id string) (completed, running *outcome, first bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o := w.done[id]; o != nil {
		return o, nil, false
	}
	if o := w.running[id]; o != nil {
		return nil, o, false
	}
	o := &outcome{done: make(chan struct{})}
	w.running[id] = o
	return nil, o, true
}

// finish records the outcome of the run of id and wakes those waiting for it.
func (w *window) finish(id string, o *outcome, r *command.Reply, err error) {
	o.reply, o.err = r.Clone(), err
	w.mu.Lock()
	delete(w.running, id)
	if succeeded(r, err) {
		w.rememberLocked(id, o)
	}
	w.mu.Unlock()
	close(o.done)
}

func (w *window) rememberLocked(id string, o *outcome) {
	if len(w.order) < w.size {
		w.order = append(w.order, id)
	} else {
		delete(w.done, w.order[w.next])
		w.order[w.next] = id
		w.next = (w.next + 1) % w.size
	}
	w.done[id] = o
}

// len returns how many completed outcomes are remembered.
func (w *window) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.done)
}

// succeeded reports whether a handler's result is a success, as the channel
// will turn it into a reply: no error, and a nil reply or one whose status is
// not ERROR (an unspecified status with an error text counts as ERROR).
func succeeded(r *command.Reply, err error) bool {
	switch {
	case err != nil:
		return false
	case r == nil:
		return true
	case r.Status == command.StatusError:
		return false
	case r.Status == command.StatusUnspecified && r.Error != "":
		return false
	}
	return true
}
