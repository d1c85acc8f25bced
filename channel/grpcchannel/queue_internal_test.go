package grpcchannel

import (
	"testing"
	"time"
)

// The meter counts over a sliding 2 s window, forgets what is older, and
// the line admits while its length fits the budget at the measured rate (at
// least the floor: the node's places per budget).
func TestRateMeterAndAdmission(t *testing.T) {
	base := time.Unix(1000, 0)
	m := rateMeter{base: base}
	if r := m.rate(base); r != 0 {
		t.Fatalf("rate() of a new meter = %v, want 0", r)
	}
	for i := range 400 { // 400 events over the first second
		m.add(base.Add(time.Duration(i) * 2500 * time.Microsecond))
	}
	if r := m.rate(base.Add(time.Second)); r != 200 {
		t.Fatalf("rate() after 400 events in 1 s = %v, want 200 (over the 2 s window)", r)
	}
	if r := m.rate(base.Add(2450 * time.Millisecond)); r != 100 { // the window: the current 100 ms tick and the 19 before
		t.Fatalf("rate() 2.45 s on = %v, want 100 (the first half-second gone)", r)
	}
	if r := m.rate(base.Add(10 * time.Second)); r != 0 {
		t.Fatalf("rate() 10 s on = %v, want 0", r)
	}
	m.add(base.Add(10 * time.Second))
	if r := m.rate(base.Add(10 * time.Second)); r != 0.5 {
		t.Fatalf("rate() after one event = %v, want 0.5", r)
	}

	q := newWaitQueue(4*time.Second, 0, 8) // floor: 2 places a second
	q.meter.base = base
	now := base
	for q.admits(now) {
		q.push(&inLine{})
	}
	if q.n != 8 {
		t.Fatalf("admitted %d at the floor (8 places per 4 s), want 8", q.n)
	}
	for i := range 200 { // 100 places a second freed over 2 s
		q.meter.add(base.Add(time.Duration(i) * 10 * time.Millisecond))
	}
	now = base.Add(1999 * time.Millisecond)
	for q.admits(now) {
		q.push(&inLine{})
	}
	if q.n != 400 {
		t.Fatalf("admitted %d at 100 a second within 4 s, want 400", q.n)
	}
	q.max = 300
	if q.admits(now) {
		t.Fatal("admits() over the cap")
	}
}

// A place freed goes to the first stream in line whose client is still
// there: one whose context has ended is passed over, out of the line and its
// source's count, without a place.
func TestFreedPassesOverStreamsGone(t *testing.T) {
	g := newGauge("handshakes", 1, 3)
	g.q = newWaitQueue(time.Second, 0, 1)
	if _, err := g.enter("a", nil); err != nil {
		t.Fatalf("enter() for the place = %v", err)
	}
	gone := make(chan struct{})
	close(gone)
	dead := &inLine{gone: gone, ready: make(chan struct{})}
	live := &inLine{gone: make(chan struct{}), ready: make(chan struct{})}
	g.q.max, g.q.floor = 0, 100 // room in line for both
	for _, w := range []*inLine{dead, live} {
		if got, err := g.enter("a", func() *inLine { return w }); got != w || err != nil {
			t.Fatalf("enter() = %v, %v, want it in line", got, err)
		}
	}
	if g.per["a"] != 3 || g.q.n != 2 || g.total != 1 {
		t.Fatalf("per %d, queued %d, total %d; want 3, 2, 1", g.per["a"], g.q.n, g.total)
	}
	g.mu.Lock()
	w := g.freed()
	g.mu.Unlock()
	if w != live || !live.granted || dead.granted || dead.queued {
		t.Fatalf("freed() = %p (live %p, dead %p): want the live one granted and the dead one out", w, live, dead)
	}
	// The place changes hands: total unchanged; a's count loses the dead
	// stream (and, as release does, the freed place's holder).
	if g.q.n != 0 || g.total != 1 || g.per["a"] != 2 {
		t.Fatalf("per %d, queued %d, total %d; want 2, 0, 1", g.per["a"], g.q.n, g.total)
	}
}
