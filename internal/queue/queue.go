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
//  2. Start starts the goroutine that calls deliver, one value at a time, in
//     Push order.
//  3. Close delivers what is queued, then stops the goroutine and waits for
//     it. Values pushed after Close are dropped.
//
// A panic in deliver is recovered and handed to onPanic (which logs it), so
// one bad value does not stop the delivery of the next ones.
package queue

import (
	"log/slog"
	"sync"
)

// Dispatcher delivers pushed values in order from one goroutine it owns. It
// is safe for concurrent use. The zero value is not usable: use New.
type Dispatcher[T any] struct {
	deliver func(T)
	onPanic func(v T, p any)

	mu      sync.Mutex // protects the fields below
	queue   []T
	started bool
	closed  bool

	kick chan struct{} // buffered(1): the queue is not empty
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the goroutine has returned
}

// New returns a Dispatcher that calls deliver with each pushed value, and
// onPanic with the value and the panic if deliver panics (nil: the panic is
// logged with slog's default logger). A nil deliver makes Push a no-op.
func New[T any](deliver func(T), onPanic func(v T, p any)) *Dispatcher[T] {
	return &Dispatcher[T]{
		deliver: deliver,
		onPanic: onPanic,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Push queues v for delivery. It never blocks, so it may be called under the
// caller's locks (values pushed under one lock are delivered in the order of
// its critical sections). After Close, v is dropped.
func (d *Dispatcher[T]) Push(v T) {
	if d.deliver == nil {
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.queue = append(d.queue, v)
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default: // already signalled
	}
}

// Start starts the delivering goroutine. Calls after the first, and calls
// after Close, do nothing.
func (d *Dispatcher[T]) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started || d.closed {
		return
	}
	d.started = true
	go d.run()
}

// Close stops accepting values, delivers those already queued, and returns
// once the goroutine has returned. If Start was never called, the queued
// values are dropped. Close is idempotent and safe to call concurrently; it
// must not be called from deliver (it waits for the goroutine that runs it).
func (d *Dispatcher[T]) Close() {
	d.mu.Lock()
	started, first := d.started, !d.closed
	d.closed = true
	if !started {
		d.queue = nil
	}
	d.mu.Unlock()
	if first {
		close(d.stop)
	}
	if started {
		<-d.done
	}
}

func (d *Dispatcher[T]) run() {
	defer close(d.done)
	for {
		stopping := false
		select {
		case <-d.kick:
		case <-d.stop:
			stopping = true
		}
		d.drain()
		if stopping {
			return
		}
	}
}

// drain delivers until the queue is empty.
func (d *Dispatcher[T]) drain() {
	for {
		d.mu.Lock()
		batch := d.queue
		d.queue = nil
		d.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, v := range batch {
			d.call(v)
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
