package connector

import (
	"hash/maphash"
	"sync"

	"github.com/exchangekit/exchange/command"
)

// window remembers recently completed user commands by id, and the ones
// running, so that a command delivered twice (a batch retry after a lost
// reply, a resend after a reconnection) runs its handler once.
//
// A command is known by its id and a digest of its type and payload (see
// digest): a second delivery of the same command has all three equal. A
// command whose id is known but whose digest differs is another command that
// reuses the id; join reports it as a conflict, and it neither runs nor gets
// the first command's reply. (Metadata and Timeout are not part of the
// digest: they legitimately differ between deliveries, tracing ids for
// example.)
//
// Completed entries are kept in insertion order and the oldest is evicted
// beyond size (LRU by insertion: a hit does not refresh an entry). Only
// successful outcomes are remembered: an error, or a reply with status ERROR,
// is forgotten once delivered, so a retry runs the handler again; retrying a
// failure is the point of a retry.
type window struct {
	mu    sync.Mutex
	size  int
	seed  maphash.Seed        // of digest, for payloads
	tseed maphash.Seed        // of digest, for types
	ids   map[string]*outcome // running, and completed successfully (completed set)
	order []string            // ids of the completed ones, oldest at next once full
	next  int
}

// digest identifies a command's body: the 64-bit hash/maphash of its payload
// xor that of its type, each under a seed of its own drawn at random for each
// window. It costs 8 bytes per remembered command and no allocation. maphash
// is not a cryptographic hash, but with secret random seeds two different
// bodies share a digest with probability 2⁻⁶⁴, and a sender cannot aim for a
// collision; a collision would only matter to a sender that reuses an id for
// a different command anyway.
type digest uint64

// digestOf returns the digest of cmd's type and payload. They are hashed
// apart, under independent seeds, so that no other split of the same bytes
// into a type and a payload is hashed the same, and two bodies that differ
// in either share a digest with probability 2⁻⁶⁴. (maphash.Bytes and String
// hash in one call: a fifth of the cost of a maphash.Hash written to.)
func (w *window) digestOf(cmd *command.Command) digest {
	return digest(maphash.Bytes(w.seed, cmd.Payload) ^ maphash.String(w.tseed, string(cmd.Type)))
}

// outcome is one run of a handler: done is closed once reply and err are set.
// done is made (under window.mu) by the first duplicate that waits for the
// run, so that a command delivered once, nearly every command, costs no
// channel.
//
// The reply of a successful run is kept in rep, allocated with the outcome:
// it is the completed reply (command.Reply.Complete) that the channel sends,
// the one copy of it (see finish).
type outcome struct {
	sum       digest // of the command that ran
	completed bool   // remembered in order; guarded by window.mu
	done      chan struct{}
	reply     *command.Reply // &rep after a successful run
	err       error
	rep       command.Reply
}

// joined is what join found for a command.
type joined int

const (
	joinNew      joined = iota // nothing: the caller runs the handler, then calls finish
	joinDone                   // the same command completed: answer its reply
	joinRunning                // the same command is running: wait for it
	joinConflict               // the id belongs to a different command
)

func newWindow(size int) *window {
	return &window{size: size, seed: maphash.MakeSeed(), tseed: maphash.MakeSeed(), ids: make(map[string]*outcome)}
}

// join looks up id, whose command has the digest sum. It returns the outcome
// found (completed or running) and what it is; with joinRunning, one whose
// done channel is set, to wait on; with joinNew, a new running outcome that
// the caller must finish; with joinConflict, nil.
func (w *window) join(id string, sum digest) (*outcome, joined) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o := w.ids[id]; o != nil {
		switch {
		case o.sum != sum:
			return nil, joinConflict
		case o.completed:
			return o, joinDone
		}
		if o.done == nil {
			o.done = make(chan struct{})
		}
		return o, joinRunning
	}
	o := &outcome{sum: sum}
	w.ids[id] = o
	return o, joinNew
}

// finish records the outcome of the run of cmd and wakes those waiting for
// it. It returns the reply for the channel to send: after a successful run,
// the window's own copy of r, completed for cmd (command.Reply.Complete),
// which the channel then sends as it is. That copy shares r's Payload (the
// handler gives its reply up when it returns, see command.Handler), and
// nothing modifies it: one copy serves the window, the channel and every
// duplicate. After a failure, r itself (the window keeps a deep copy until
// the failure is delivered to those waiting).
func (w *window) finish(cmd *command.Command, o *outcome, r *command.Reply, err error) *command.Reply {
	ok := succeeded(r, err)
	if ok {
		if r != nil {
			o.rep = *r
		} else {
			o.rep = command.Reply{Status: command.StatusSucceeded}
		}
		o.rep.Complete(cmd)
		o.reply = &o.rep
	} else {
		o.reply = r.Clone()
	}
	o.err = err
	id := cmd.ID
	w.mu.Lock()
	if ok {
		o.completed = true
		w.rememberLocked(id)
	} else {
		delete(w.ids, id)
	}
	done := o.done // no duplicate can start waiting any more: id is completed or gone
	w.mu.Unlock()
	if done != nil {
		close(done)
	}
	if ok {
		return o.reply
	}
	return r
}

// rememberLocked records that id, in ids already, completed; the oldest
// completed id goes beyond size.
func (w *window) rememberLocked(id string) {
	if len(w.order) < w.size {
		w.order = append(w.order, id)
	} else {
		delete(w.ids, w.order[w.next]) // completed: no run of its id can start while it is there
		w.order[w.next] = id
		w.next = (w.next + 1) % w.size
	}
}

// len returns how many completed outcomes are remembered.
func (w *window) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.order)
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
