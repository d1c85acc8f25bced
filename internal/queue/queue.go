// Package queue hands values from producers that must never block (store
// callbacks running under a lock, state changes made under a mutex) to a
// consumer that may be slow (user callbacks), in order, from one goroutine.
//
// Dispatcher is the one implementation of that queue-and-drain pattern in the
// module: the controller's listener events, the batch runner's observer
// notices and the connector's OnState/OnPrimary callbacks all go through it.
// Its queue is unbounded and never coalesces: every pushed value is delivered
// once, so it suits streams that grow only with real changes, which a
// consumer that keeps up drains at once.
//
// # Usage
//
//  1. New(deliver, onPanic) makes a Dispatcher; Push may be called at once
//     (values wait for Start).
//  2. Start lets deliver be called, one value at a time, in Push order, from
//     a goroutine that runs only while values are queued (an idle Dispatcher
//     holds no goroutine).
//  3. Close delivers what is queued and waits for it. Values pushed after
//     Close are dropped.
//
// A panic in deliver is recovered and handed to onPanic (which logs it), so
// one bad value does not stop the delivery of the next ones.
package queue

import (
	"log/slog"
	"sync"
)

// Dispatcher delivers pushed values in order, one at a time, from a
// goroutine it owns while it has values to deliver: the goroutine starts when
// a value arrives with none running and returns once the queue is empty, so an
// idle Dispatcher (a connector's, most of its life) holds no goroutine. It is
// safe for concurrent use. The zero value is not usable: use New.
type Dispatcher[T any] struct {
	deliver func(T)
	onPanic func(v T, p any)

	mu      sync.Mutex // protects the fields below
	queue   []T
	spare   []T // an empty array for the queue, kept by drain (keepCap)
	started bool
	closed  bool
	running bool // a drain goroutine is running (at most one: that keeps the order)

	drains sync.WaitGroup // the drain goroutine, while running
}

// New returns a Dispatcher that calls deliver with each pushed value, and
// onPanic with the value and the panic if deliver panics (nil: the panic is
// logged with slog's default logger). A nil deliver makes Push a no-op.
func New[T any](deliver func(T), onPanic func(v T, p any)) *Dispatcher[T] {
	return &Dispatcher[T]{deliver: deliver, onPanic: onPanic}
}

// Push queues v for delivery. It never blocks, so it may be called under the
// caller's locks (values pushed under one lock are delivered in the order of
// its critical sections). After Close, v is dropped.
func (d *Dispatcher[T]) Push(v T) {
	if d.deliver == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.queue = append(d.queue, v)
	d.drainLocked()
}

// Start lets values be delivered: those pushed so far, then every later one.
// Calls after the first, and calls after Close, do nothing.
func (d *Dispatcher[T]) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started || d.closed {
		return
	}
	d.started = true
	d.drainLocked()
}

// drainLocked starts the drain goroutine if there is something to deliver,
// delivery has started, and none is running. d.mu must be held.
func (d *Dispatcher[T]) drainLocked() {
	if !d.started || d.running || len(d.queue) == 0 {
		return
	}
	d.running = true
	d.drains.Add(1)
	go d.drain()
}

// Close stops accepting values, lets those already queued be delivered, and
// returns once they have been and the drain goroutine has returned. If Start
// was never called, the queued values are dropped. Close is idempotent and
// safe to call concurrently; it must not be called from deliver (it waits for
// the goroutine that runs it).
func (d *Dispatcher[T]) Close() {
	d.mu.Lock()
	d.closed = true
	if !d.started {
		d.queue = nil
	}
	d.mu.Unlock()
	// No goroutine starts after closed is set, so this Wait races with no Add.
	d.drains.Wait()
}

// keepCap bounds the capacity of a delivered batch's array that drain keeps
// (as spare) for the values that come next, also while idle: a Dispatcher
// that gets a value or two at a time (a connector's state changes, two per
// refused connection attempt) then allocates nothing per Push, and one that
// took a burst does not hold its array.
const keepCap = 2

// drain delivers until the queue is empty, then returns. Values pushed while
// a batch is delivered go into the spare array, and the delivered batch's
// array becomes the next spare.
func (d *Dispatcher[T]) drain() {
	defer d.drains.Done()
	for {
		d.mu.Lock()
		batch := d.queue
		if len(batch) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.queue, d.spare = d.spare, nil
		d.mu.Unlock()
		for _, v := range batch {
			d.call(v)
		}
		if cap(batch) <= keepCap {
			clear(batch) // let the delivered values go
			d.mu.Lock()
			d.spare = batch[:0]
			d.mu.Unlock()
		}
	}
}

// call delivers one value; a panic is reported, not fatal.
func (d *Dispatcher[T]) call(v T) {
	defer func() {
		if p := recover(); p != nil {
			if d.onPanic != nil {
				d.onPanic(v, p)
			} else {
				slog.Error("queue: deliver panicked", "panic", p)
			}
		}
	}()
	d.deliver(v)
}
