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
//     the next Plan compares again, so a change made meanwhile is not lost.
//  3. A failed notification is retried, after a per-channel backoff that
//     doubles from a base up to a ceiling and resets on success.
//  4. Channels that are no longer wanted (gone from the state or from this
//     node) are forgotten.
package primary

import (
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

type entry struct {
	told      Want
	hasTold   bool
	inFlight  bool
	failures  int
	notBefore time.Time
}

// Tracker remembers, per channel, the last Want told successfully, the
// notification in flight and the retry backoff. The zero value is not usable:
// use NewTracker. A Tracker is not safe for concurrent use; one goroutine owns
// it.
type Tracker struct {
	retry backoff.Policy // no jitter: the n-th retry waits retry.Ceiling(n)
	m     map[string]*entry
}

// NewTracker returns an empty Tracker whose retries back off from base,
// doubling, up to ceiling. A ceiling below base is raised to base; a base of
// zero or less makes every retry wait ceiling.
func NewTracker(base, ceiling time.Duration) *Tracker {
	ceiling = max(base, ceiling)
	if base <= 0 {
		base = ceiling
	}
	return &Tracker{retry: backoff.Policy{Base: base, Max: ceiling}, m: map[string]*entry{}}
}

// Plan compares want (channel id → what it should believe) with what each
// channel was told, and returns the notifications to send now, in channel id
// order, at most limit of them (limit ≤ 0: no limit). They are marked in
// flight until Done. Channels absent from want are forgotten. next is the
// earliest time a channel held back by its backoff becomes due (zero if none),
// so the caller can plan a wake-up.
func (t *Tracker) Plan(now time.Time, want map[string]Want, limit int) (notices []Notice, next time.Time) {
	for id, e := range t.m {
		if _, ok := want[id]; !ok && !e.inFlight {
			delete(t.m, id)
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w := want[id]
		e := t.m[id]
		if e == nil {
			e = &entry{}
			t.m[id] = e
		}
		if e.inFlight || (e.hasTold && e.told == w) {
			continue
		}
		if e.notBefore.After(now) {
			if next.IsZero() || e.notBefore.Before(next) {
				next = e.notBefore
			}
			continue
		}
		if limit > 0 && len(notices) >= limit {
			continue
		}
		e.inFlight = true
		notices = append(notices, Notice{ChannelID: id, Want: w})
	}
	return notices, next
}

// Done records the outcome of a notification returned by Plan: on success the
// channel now believes w; on failure it is retried after its backoff.
func (t *Tracker) Done(now time.Time, id string, w Want, ok bool) {
	e := t.m[id]
	if e == nil {
		return
	}
	e.inFlight = false
	if ok {
		e.told, e.hasTold = w, true
		e.failures, e.notBefore = 0, time.Time{}
		return
	}
	e.notBefore = now.Add(t.retry.Ceiling(e.failures))
	e.failures++
}

// Told returns what channel id was last told successfully.
func (t *Tracker) Told(id string) (Want, bool) {
	if e := t.m[id]; e != nil && e.hasTold {
		return e.told, true
	}
	return Want{}, false
}

// InFlight returns how many notifications are in flight.
func (t *Tracker) InFlight() int {
	n := 0
	for _, e := range t.m {
		if e.inFlight {
			n++
		}
	}
	return n
}
