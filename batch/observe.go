package batch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/exchangekit/exchange/internal/queue"
)

// Observers fire on every node where they are registered, driven by the
// store's events (which every node receives), not by which node ran the
// attempt. The subscription only queues; the notifier goroutine looks the
// batch up and calls the observers, outside every lock.

// observer is one registration.
type observer struct {
	fn   func(Batch) // called once per terminal transition
	gone func()      // id observers only, optional: the batch was deleted unfinished
}

type noticeKind uint8

const (
	noticeTerminal noticeKind = iota + 1 // batch id reached a terminal status
	noticeDeleted                        // batch id was deleted
	noticeRestored                       // the table was replaced: re-check id observers
	noticeCheck                          // a new id observer: fire it if its batch already ended
)

type notice struct {
	kind   noticeKind
	id     string
	target string
	status Status
	o      *observer // noticeCheck
}

// observers is the registry and the notifier's queue.
type observers struct {
	mu    sync.Mutex             // protects the fields below; taken inside store callbacks (store lock → mu)
	byID  map[string][]*observer // batch id → observers, registration order
	byKey map[string][]*observer // batch key → observers, registration order

	notices *queue.Dispatcher[notice] // the notifier; pushed to under mu, so in registry order
}

// init makes the registry and the notifier, which hands each notice to
// deliver (not started: see Runner).
func (o *observers) init(deliver func(notice), log *slog.Logger) {
	o.byID = map[string][]*observer{}
	o.byKey = map[string][]*observer{}
	o.notices = queue.New(deliver, func(n notice, p any) {
		log.Error("batch: notifier panicked", "batch", n.id, "panic", p)
	})
}

// push queues n for the notifier. o.mu must be held.
func (o *observers) push(n notice) { o.notices.Push(n) }

// event queues what the notifier must do about e. It runs under the store
// lock: it only queues, and only when someone may be interested.
func (o *observers) event(e Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch e.Kind {
	case EventTerminal:
		if len(o.byID[e.BatchID]) > 0 || len(o.byKey) > 0 {
			o.push(notice{kind: noticeTerminal, id: e.BatchID, target: e.TargetID, status: e.Status})
		}
	case EventDeleted:
		if len(o.byID[e.BatchID]) > 0 {
			o.push(notice{kind: noticeDeleted, id: e.BatchID})
		}
	case EventRestored:
		if len(o.byID) > 0 {
			o.push(notice{kind: noticeRestored})
		}
	}
}

// Observe registers fn to be called once, with the final batch, when batch id
// reaches SUCCEEDED or ERROR, on this node, whichever node ran it. If the
// batch has already ended, fn is called at once (from the notifier). The
// observer is dropped after it fires, or if the batch is deleted unfinished.
// An id not stored yet is waited for.
//
// fn runs on the Runner's notifier goroutine, one observer at a time, in event
// order: it must not block for long (hand long work to a goroutine of your
// own). It may call the Runner, except AwaitBatch (which waits for this very
// goroutine) and Close. fn gets its own copy of the batch; in the rare
// case the batch was deleted between its end and the notification, the copy
// holds only ID, TargetID and Status. The returned cancel removes the
// observer; it is idempotent.
func (r *Runner) Observe(id string, fn func(Batch)) (cancel func()) {
	return r.observeID(id, &observer{fn: fn})
}

func (r *Runner) observeID(id string, ob *observer) (cancel func()) {
	o := &r.obs
	o.mu.Lock()
	o.byID[id] = append(o.byID[id], ob)
	o.push(notice{kind: noticeCheck, id: id, o: ob})
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.takeID(id, ob)
	}
}

// ObserveKey registers fn to be called once per terminal transition (SUCCEEDED
// or ERROR) of every batch whose Key is key, on this node, until cancelled.
// Batches that ended before the registration are not reported, nor those
// deleted before the notifier could read their key. fn runs as in Observe.
//
// After a raft snapshot is installed on a lagging node, key observers are not
// told about the batches that ended within the skipped log (id observers and
// AwaitBatch are: they re-check their batch).
func (r *Runner) ObserveKey(key string, fn func(Batch)) (cancel func()) {
	o := &r.obs
	ob := &observer{fn: fn}
	o.mu.Lock()
	o.byKey[key] = append(o.byKey[key], ob)
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if s := slices.DeleteFunc(o.byKey[key], func(x *observer) bool { return x == ob }); len(s) > 0 {
			o.byKey[key] = s
		} else {
			delete(o.byKey, key)
		}
	}
}

// AwaitBatch waits until batch id has ended (SUCCEEDED or ERROR) and returns
// it. It returns at once for a batch that has already ended. Errors: ctx's
// error; ErrNotFound if the batch is deleted before it ends; ErrClosed. An id
// not stored yet is waited for (a batch created through another node may
// reach this node's copy of the state a moment later).
func (r *Runner) AwaitBatch(ctx context.Context, id string) (Batch, error) {
	type result struct {
		b   Batch
		err error
	}
	ch := make(chan result, 1) // the observer fires at most once, gone or not
	cancel := r.observeID(id, &observer{
		fn:   func(b Batch) { ch <- result{b: b} },
		gone: func() { ch <- result{err: ErrNotFound} },
	})
	defer cancel()
	select {
	case res := <-ch:
		if res.err != nil {
			return Batch{}, fmt.Errorf("await batch %s: %w", id, res.err)
		}
		return res.b, nil
	case <-ctx.Done():
		return Batch{}, fmt.Errorf("await batch %s: %w", id, ctx.Err())
	case <-r.closing:
		return Batch{}, fmt.Errorf("await batch %s: %w", id, ErrClosed)
	}
}

// takeID removes ob from the observers of id and reports whether it was
// there. o.mu must be held.
func (o *observers) takeID(id string, ob *observer) bool {
	s := o.byID[id]
	i := slices.Index(s, ob)
	if i < 0 {
		return false
	}
	if s = slices.Delete(s, i, i+1); len(s) > 0 {
		o.byID[id] = s
	} else {
		delete(o.byID, id)
	}
	return true
}

// notify is the notifier's delivery, on its goroutine: it handles one notice,
// unless Close has begun (pending observer calls are then dropped).
func (r *Runner) notify(n notice) {
	select {
	case <-r.closing:
		return
	default:
	}
	r.deliver(n)
}

// deliver handles one notice. Observers are taken out of the registry under
// the lock and called outside it, so each id observer fires at most once.
func (r *Runner) deliver(n notice) {
	o := &r.obs
	switch n.kind {
	case noticeTerminal:
		b, ok := r.lookup(n.id)
		if !ok { // deleted right after it ended: report what the event says
			b = Batch{ID: n.id, TargetID: n.target, Status: n.status}
		}
		o.mu.Lock()
		fire := o.byID[n.id]
		delete(o.byID, n.id)
		if b.Key != "" {
			fire = append(slices.Clip(fire), o.byKey[b.Key]...)
		}
		o.mu.Unlock()
		r.callAll(fire, b)
	case noticeDeleted:
		o.mu.Lock()
		gone := o.byID[n.id]
		delete(o.byID, n.id)
		o.mu.Unlock()
		for _, ob := range gone {
			if ob.gone != nil {
				r.callGone(ob.gone)
			}
		}
	case noticeCheck:
		if b, ok := r.lookup(n.id); ok && b.Status.Terminal() {
			o.mu.Lock()
			mine := o.takeID(n.id, n.o)
			o.mu.Unlock()
			if mine {
				r.call(n.o.fn, b)
			}
		}
	case noticeRestored:
		o.mu.Lock()
		ids := make([]string, 0, len(o.byID))
		for id := range o.byID {
			ids = append(ids, id)
		}
		o.mu.Unlock()
		slices.Sort(ids)
		for _, id := range ids {
			if b, ok := r.lookup(id); ok && b.Status.Terminal() {
				o.mu.Lock()
				fire := o.byID[id]
				delete(o.byID, id)
				o.mu.Unlock()
				r.callAll(fire, b)
			}
		}
	}
}

// callAll calls each observer with its own copy of b (b itself is a copy
// nobody else holds, so the last observer gets it).
func (r *Runner) callAll(obs []*observer, b Batch) {
	for i, ob := range obs {
		bb := b
		if i < len(obs)-1 {
			bb = b.Clone()
		}
		r.call(ob.fn, bb)
	}
}

// call runs an observer; a panic is logged, not fatal.
func (r *Runner) call(fn func(Batch), b Batch) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("batch: observer panicked", "batch", b.ID, "panic", p)
		}
	}()
	fn(b)
}

func (r *Runner) callGone(fn func()) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("batch: observer panicked", "panic", p)
		}
	}()
	fn()
}
