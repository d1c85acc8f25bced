// Package primary keeps track of what each local channel was told about its
// target's primary role, and plans the PRIMARY notifications that bring every
// channel in line with the replicated state. It is the pure core of the
// controller's primary notifier: no goroutines, no I/O, time passed in.
//
// The rules:
//
//  1. A channel is notified whenever what it should believe (Want: primary
//     or not, and the target's epoch) differs from what it was last told
//     successfully, including the first time (a channel that joins a target
//     whose primary is elsewhere is told primary:false).
//  2. At most one notification per channel is in flight; when it completes,
//     the channel is compared again at the next plan, so a change made
//     meanwhile is not lost.
//  3. A failed notification is retried, after a per-channel backoff that
//     doubles from a base up to a ceiling and resets on success.
//  4. Channels that are no longer wanted (gone from the state or from this
//     node) are forgotten.
//
// Planning is incremental: the caller marks the channels whose Want may have
// changed (Mark; Sync marks them all, as a periodic safety net), and
// PlanMarked compares only those, plus the channels whose notification
// finished or whose retry fell due. The cost of a plan is therefore that of
// the changes since the last one, not of the number of channels tracked.
package primary

import (
	"maps"
	"slices"
	"time"

	"github.com/exchangekit/exchange/internal/backoff"
)

// Want is what a channel should believe about its target's primary role.
type Want struct {
	Primary bool
	Epoch   uint64
}

// Notice is one PRIMARY notification to send.
type Notice struct {
	ChannelID string
	Want      Want
}

// entry is what the Tracker keeps per channel: 24 bytes, as one is kept for
// every idle channel (the told Want flattened, notBefore in unix
// nanoseconds).
type entry struct {
	toldEpoch   uint64
	notBefore   int64 // unix nanoseconds; 0: none
	failures    int32
	toldPrimary bool
	hasTold     bool
	inFlight    bool
}

func (e *entry) told() Want { return Want{Primary: e.toldPrimary, Epoch: e.toldEpoch} }

// heldBack reports whether e's retry is not due at now.
func (e *entry) heldBack(now time.Time) bool { return e.notBefore > now.UnixNano() }

// Tracker remembers, per channel, the last Want told successfully, the
// notification in flight and the retry backoff, and which channels are to be
// compared at the next plan. The zero value is not usable: use NewTracker. A
// Tracker is not safe for concurrent use; one goroutine owns it.
type Tracker struct {
	retry    backoff.Policy // no jitter: the n-th retry waits retry.Ceiling(n)
	m        map[string]*entry
	queue    []string            // marked channels, in marking order, from head
	head     int                 // queue[:head] is consumed
	queued   map[string]struct{} // the ids in queue[head:]
	waiting  map[string]struct{} // failed notifications awaiting their retry
	inFlight int
}

// keptQueue is the capacity up to which a drained queue of marks is kept for
// reuse.
const keptQueue = 64

// NewTracker returns an empty Tracker whose retries back off from base,
// doubling, up to ceiling. A ceiling below base is raised to base; a base of
// zero or less makes every retry wait ceiling.
func NewTracker(base, ceiling time.Duration) *Tracker {
	ceiling = max(base, ceiling)
	if base <= 0 {
		base = ceiling
	}
	return &Tracker{
		retry:   backoff.Policy{Base: base, Max: ceiling},
		m:       map[string]*entry{},
		queued:  map[string]struct{}{},
		waiting: map[string]struct{}{},
	}
}

// Mark records that what channel id should believe may have changed: the
// next PlanMarked compares it. Marking a channel twice before a plan compares
// it once. It costs O(1).
func (t *Tracker) Mark(id string) {
	if _, ok := t.queued[id]; ok {
		return
	}
	t.queued[id] = struct{}{}
	t.queue = append(t.queue, id)
}

// Sync is the full reconcile: ids are every channel that is wanted (in the
// order they should be compared); the others are forgotten, and ids are all
// marked. It costs O(len(ids) + channels tracked).
func (t *Tracker) Sync(ids []string) {
	wanted := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		wanted[id] = struct{}{}
	}
	for id, e := range t.m {
		if _, ok := wanted[id]; !ok && !e.inFlight {
			t.forget(id)
		}
	}
	for _, id := range ids {
		t.Mark(id)
	}
}

// PlanMarked compares the marked channels, and those whose retry is due,
// with what want says each should believe (ok false: no longer wanted, so
// forgotten), and returns the notifications to send now, at most limit of
// them (limit ≤ 0: no limit), in marking order. They are marked in flight
// until Done. Channels not compared because the limit was reached stay
// marked. next is the earliest time a channel held back by its backoff
// becomes due (zero if none), so the caller can plan a wake-up. Its cost is
// O(channels compared + retries waiting).
func (t *Tracker) PlanMarked(now time.Time, want func(id string) (w Want, ok bool), limit int) (notices []Notice, next time.Time) {
	for id := range t.waiting {
		if e := t.m[id]; e == nil || !e.heldBack(now) {
			delete(t.waiting, id)
			t.Mark(id)
		}
	}
	for t.head < len(t.queue) && (limit <= 0 || len(notices) < limit) {
		id := t.queue[t.head]
		t.queue[t.head] = ""
		t.head++
		delete(t.queued, id)
		w, ok := want(id)
		e := t.m[id]
		switch {
		case !ok:
			if e != nil && !e.inFlight {
				t.forget(id)
			}
			continue
		case e == nil:
			e = &entry{}
			t.m[id] = e
		}
		if e.inFlight || (e.hasTold && e.told() == w) {
			continue // in flight: Done marks it again
		}
		if e.heldBack(now) {
			t.waiting[id] = struct{}{}
			continue
		}
		e.inFlight = true
		t.inFlight++
		notices = append(notices, Notice{ChannelID: id, Want: w})
	}
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
		if cap(t.queue) > keptQueue {
			// Drained after a burst (a registration storm marks every
			// channel): give back the queue and its set, which a map
			// never does by itself, rather than keep them for all idle.
			t.queue, t.queued = nil, map[string]struct{}{}
		}
	} else if t.head > len(t.queue)/2 {
		t.queue = slices.Delete(t.queue, 0, t.head)
		t.head = 0
	}
	for id := range t.waiting {
		if nb := time.Unix(0, t.m[id].notBefore); next.IsZero() || nb.Before(next) {
			next = nb
		}
	}
	return notices, next
}

// Plan is Sync with want's channels, in id order, followed by PlanMarked
// reading want: a full reconcile.
func (t *Tracker) Plan(now time.Time, want map[string]Want, limit int) (notices []Notice, next time.Time) {
	t.Sync(slices.Sorted(maps.Keys(want)))
	return t.PlanMarked(now, func(id string) (Want, bool) {
		w, ok := want[id]
		return w, ok
	}, limit)
}

// Done records the outcome of a notification returned by a plan: on success
// the channel now believes w; on failure it is retried after its backoff.
// Either way the channel is compared again at the next plan.
func (t *Tracker) Done(now time.Time, id string, w Want, ok bool) {
	e := t.m[id]
	if e == nil || !e.inFlight {
		return
	}
	e.inFlight = false
	t.inFlight--
	if ok {
		e.toldPrimary, e.toldEpoch, e.hasTold = w.Primary, w.Epoch, true
		e.failures, e.notBefore = 0, 0
		t.Mark(id)
		return
	}
	e.notBefore = now.Add(t.retry.Ceiling(int(e.failures))).UnixNano()
	e.failures++
	t.waiting[id] = struct{}{}
}

func (t *Tracker) forget(id string) {
	delete(t.m, id)
	delete(t.waiting, id)
}

// Told returns what channel id was last told successfully.
func (t *Tracker) Told(id string) (Want, bool) {
	if e := t.m[id]; e != nil && e.hasTold {
		return e.told(), true
	}
	return Want{}, false
}

// InFlight returns how many notifications are in flight. It costs O(1).
func (t *Tracker) InFlight() int { return t.inFlight }

// Pending returns how many notifications are in flight or may be to come:
// in flight, awaiting a retry, or marked for comparison and not compared
// yet (held back by the concurrency limit, or by a plan to come). It costs
// O(1).
func (t *Tracker) Pending() int { return t.inFlight + len(t.waiting) + len(t.queue) - t.head }
