package grpcchannel

import (
	"sync/atomic"
	"time"
)

// The handshake queue (ServerLimits.HandshakeQueueWait; decision 0044).
//
// Without it a Connect stream over MaxHandshakes is refused at once, and in a
// reconnect storm of 100,000 connectors the refused come back, with their
// backoff, as more refusals: over a million per storm, each costing both
// sides about a tenth of a handshake. With it such a stream waits in line for
// a place, in arrival order, as long as the line moves fast enough to serve
// it within the budget: the server's tap handle (which must not block: it
// runs on the connection's reader goroutine) decides place, queue or refusal;
// the stream's handler goroutine does the waiting. The place of a stream that
// finishes its handshake goes straight to the stream at the head of the line.
//
// Accounting: a queued stream holds no place (gauge.total), but counts
// against its source (gauge.per), so MaxHandshakesPerSource bounds what one
// source holds placed and queued. While the line is not empty every place is
// taken (a place is only given back when no one waits), so a new stream never
// overtakes the line.

// waitQueue is a gauge's line of streams waiting for a place. Its fields
// but the counters are guarded by the gauge's mu.
type waitQueue struct {
	budget time.Duration // the longest wait a stream is queued for
	max    int           // streams queued at most; ≤ 0: no cap but the budget
	floor  float64       // places per second assumed at least: the gauge's max per budget

	head, tail *inLine
	n          int
	meter      rateMeter // places freed

	full, timeouts, served atomic.Uint64 // refused for the budget or the cap; waited out their budget; given a place
	waited                 atomic.Int64  // nanoseconds the served waited, in all
}

func newWaitQueue(budget time.Duration, max, places int) *waitQueue {
	return &waitQueue{budget: budget, max: max, floor: float64(places) / budget.Seconds(), meter: rateMeter{base: time.Now()}}
}

// inLine is a queued stream.
type inLine struct {
	a          *admission // the stream's admission: its timer starts when it is given a place
	src        string
	at         time.Time // queued at
	prev, next *inLine

	queued, granted, expired bool // under the gauge's mu

	gone  <-chan struct{} // the stream's context's Done: a stream whose client has gone is passed over
	ready chan struct{}   // closed when it is given a place (granted) or its budget expires (expired)
	timer *time.Timer     // the budget
}

// admits reports whether a stream arriving now would be served within the
// budget: the streams ahead of it and itself, at the rate places have freed
// up over the meter's window (at least floor), and the cap.
func (q *waitQueue) admits(now time.Time) bool {
	if q.max > 0 && q.n >= q.max {
		return false
	}
	rate := max(q.meter.rate(now), q.floor)
	return float64(q.n+1) <= rate*q.budget.Seconds()
}

func (q *waitQueue) push(w *inLine) {
	w.queued = true
	w.prev = q.tail
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *waitQueue) unlink(w *inLine) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	q.n--
}

// freed records a place freed up and returns the stream at the head of the
// line, now granted the place (call its grant once the gauge is unlocked),
// or nil when no one waits. Streams whose context has ended (the client went
// away; their handler, when it runs, finds them out of the line) are passed
// over: g.mu held.
func (g *gauge) freed() *inLine {
	q := g.q
	q.meter.add(time.Now())
	for w := q.head; w != nil; w = q.head {
		select {
		case <-w.gone:
			g.leave(w)
			continue
		default:
		}
		q.unlink(w)
		w.granted = true
		return w
	}
	return nil
}

// grant completes the hand-over of a place to w (gauge.release): its
// budget's timer stops, its admission's HandshakeTimeout starts, and its
// handler, if waiting, goes on.
func (w *inLine) grant() {
	w.timer.Stop()
	a := w.a
	q := a.s.handshakes.q
	q.served.Add(1)
	q.waited.Add(int64(time.Since(w.at)))
	if d := a.s.limits.HandshakeTimeout; d > 0 {
		a.timer.Store(time.AfterFunc(d, a.expire))
	}
	close(w.ready)
}

// expire is w's budget: a stream still queued leaves the line, refused.
func (w *inLine) expire() {
	s := w.a.s
	g := s.handshakes
	g.mu.Lock()
	left := g.leave(w)
	if left {
		w.expired = true
	}
	g.mu.Unlock()
	if !left {
		return
	}
	g.q.timeouts.Add(1)
	s.refusedHandshakes.Add(1)
	close(w.ready)
}

// leave takes w out of the line, if it is still in it, and gives back its
// count against its source; g.mu held.
func (g *gauge) leave(w *inLine) bool {
	if !w.queued {
		return false
	}
	g.q.unlink(w)
	g.unper(w.src)
	return true
}

// enter takes a place for a stream from src, or, over the node's limit and
// with a queue that would serve it within its budget, puts the inLine that
// queue returns in line (and returns it); otherwise it returns the refusal
// (an error wrapping channel.ErrLimitExceeded) and counts nothing. queue is
// called with g.mu held.
func (g *gauge) enter(src string, queue func() *inLine) (*inLine, error) {
	if g.q == nil {
		return nil, g.acquire(src)
	}
	g.mu.Lock()
	n := g.per[src]
	if g.perMax > 0 && n >= g.perMax {
		g.mu.Unlock()
		return nil, g.perSourceFull(n, src)
	}
	if g.total < g.max {
		g.total++
		g.per[src] = n + 1
		g.mu.Unlock()
		return nil, nil
	}
	now := time.Now()
	if !g.q.admits(now) {
		g.mu.Unlock()
		g.q.full.Add(1)
		return nil, g.full
	}
	w := queue()
	w.src, w.at = src, now
	g.q.push(w)
	g.per[src] = n + 1
	g.mu.Unlock()
	return w, nil
}

// queued returns the streams in line.
func (g *gauge) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.q.n
}

// rateMeter counts events over a sliding window of meterBuckets ticks of
// meterTick: places freed, for the queue's rate.
type rateMeter struct {
	base   time.Time
	counts [meterBuckets]uint32
	last   int64  // the latest tick counted
	total  uint64 // the counts in the window
}

const (
	meterTick    = 100 * time.Millisecond
	meterBuckets = 20 // a 2 s window
)

func (m *rateMeter) advance(now time.Time) int64 {
	tick := int64(now.Sub(m.base) / meterTick)
	if tick <= m.last {
		return m.last
	}
	if tick-m.last >= meterBuckets {
		m.counts = [meterBuckets]uint32{}
		m.total = 0
	} else {
		for t := m.last + 1; t <= tick; t++ {
			i := t % meterBuckets
			m.total -= uint64(m.counts[i])
			m.counts[i] = 0
		}
	}
	m.last = tick
	return tick
}

func (m *rateMeter) add(now time.Time) {
	tick := m.advance(now)
	m.counts[tick%meterBuckets]++
	m.total++
}

// rate returns the events per second over the window.
func (m *rateMeter) rate(now time.Time) float64 {
	m.advance(now)
	return float64(m.total) / (meterBuckets * meterTick).Seconds()
}
