package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller/internal/primary"
	"github.com/exchangekit/exchange/state"
)

// Retry backoff of a failed PRIMARY notification, per channel.
const (
	primaryRetryBase    = 50 * time.Millisecond
	primaryRetryCeiling = 5 * time.Second
)

// primaryResult is the outcome of one PRIMARY notification.
type primaryResult struct {
	notice primary.Notice
	err    error
}

// notifyPrimaries is the primary notifier. The state decides primaries
// (Elect runs inside every Apply, on every node alike); this loop makes each
// local channel believe what the state says. It wakes on store events, on
// finished notifications, on a channel's retry becoming due, and every
// ReconcileInterval for a full reconcile, the safety net.
//
// A wake costs what changed since the last one, not the number of local
// channels: the store subscription records the targets whose primary changed
// and this node's channels registered or unregistered (primaryDirty), and the
// notifier first retires those of the latter the state no longer has
// (retireUnregistered), then compares only those channels, and the local
// channels of those targets, with what they were last told (internal/primary),
// and sends PRIMARY where they differ. The full reconcile (also after a
// restored snapshot) looks at every local channel.
//
// Notifications run on their own goroutines, at most one per channel and
// PrimaryConcurrency in all, so a stalled connector never delays the others
// (reference weakness 17). A failed one is retried with backoff (weakness
// 14). No ordering is kept between channels: the epoch lets receivers fence a
// stale primary.
func (c *Controller) notifyPrimaries(ctx context.Context) {
	tr := primary.NewTracker(primaryRetryBase, primaryRetryCeiling)
	plan := newPrimaryPlan(c, tr)
	results := make(chan primaryResult)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.reportPending(0)

	timer := time.NewTimer(0) // reconcile at once
	defer timer.Stop()
	var nextFull time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.primaryKick:
		case <-timer.C:
		case r := <-results:
			c.primaryDone(tr, r)
		}
	drain: // settle every finished notification before planning again
		for {
			select {
			case r := <-results:
				c.primaryDone(tr, r)
			default:
				break drain
			}
		}

		now := time.Now()
		full := !now.Before(nextFull)
		if full {
			nextFull = now.Add(c.cfg.ReconcileInterval)
		}
		notices, next := c.planPrimaries(plan, now, full)
		for _, n := range notices {
			wg.Go(func() {
				// Its stack out of the 8 KiB spans of the Connect handlers:
				// PrimaryConcurrency of these come and go during a
				// registration storm (see presize).
				presize()
				err := c.tellPrimary(ctx, n)
				select {
				case results <- primaryResult{notice: n, err: err}:
				case <-ctx.Done():
				}
			})
		}
		c.reportPending(tr.Pending())
		wait := nextFull.Sub(now)
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(now), time.Millisecond))
		}
		timer.Reset(max(wait, time.Millisecond))
	}
}

// planPrimaries is one wake of the notifier without its I/O: it takes what
// changed since the last wake, retires the local channels the state no longer
// has, marks the channels to compare (every local channel when full), and
// plans the notifications to send now, within PrimaryConcurrency.
func (c *Controller) planPrimaries(p *primaryPlan, now time.Time, full bool) ([]primary.Notice, time.Time) {
	targets, channels, all := c.dirty.take()
	full = full || all
	c.retireUnregistered(channels, full)
	tr := p.tr
	if full {
		// Sorted outside c.mu: at 100k channels a sort holds the lock long
		// enough to keep registrations (addLocal) waiting.
		c.mu.Lock()
		ids := slices.Collect(maps.Keys(c.local))
		c.mu.Unlock()
		slices.Sort(ids)
		tr.Sync(ids)
	} else {
		if len(targets) > 0 {
			p.targets = targets
			c.store.View(p.markTargets)
			p.targets = nil
		}
		for _, id := range channels {
			tr.Mark(id)
		}
	}
	limit := c.cfg.PrimaryConcurrency - tr.InFlight()
	if limit <= 0 {
		return nil, time.Time{} // a finishing notification wakes the loop again
	}
	// Lock order: c.mu, then the store (as Run's Subscribe); the store's
	// subscription never takes c.mu.
	c.mu.Lock()
	defer c.mu.Unlock()
	p.now, p.limit = now, limit
	c.store.View(p.planMarked)
	notices, next := p.notices, p.next
	p.notices, p.next, p.s = nil, time.Time{}, nil
	return notices, next
}

// primaryPlan is what planPrimaries works with beyond the Controller: the
// notifier's Tracker, and the callbacks it hands the store, bound once per
// notifier run (a closure made at every wake escapes to the heap, with what
// it captures: a few allocations per wake, and a registration storm wakes the
// notifier every few registrations).
type primaryPlan struct {
	c  *Controller
	tr *primary.Tracker

	markTargets, planMarked func(*state.State)
	want                    func(id string) (primary.Want, bool)

	// One wake's arguments and results, set around the store's View.
	targets []string
	now     time.Time
	limit   int
	s       *state.State
	notices []primary.Notice
	next    time.Time
}

func newPrimaryPlan(c *Controller, tr *primary.Tracker) *primaryPlan {
	p := &primaryPlan{c: c, tr: tr}
	p.markTargets = func(s *state.State) {
		for _, t := range p.targets {
			for _, ch := range s.TargetChannels(t) {
				if ch.NodeID == p.c.nodeID {
					p.tr.Mark(ch.ID)
				}
			}
		}
	}
	p.planMarked = func(s *state.State) {
		p.s = s
		p.notices, p.next = p.tr.PlanMarked(p.now, p.want, p.limit)
	}
	p.want = func(id string) (primary.Want, bool) { return p.c.wantPrimary(p.s, id) }
	return p
}

// wantPrimary says what local channel id should believe; ok is false if it is
// not a live local channel registered in s for this node. c.mu must be held.
func (c *Controller) wantPrimary(s *state.State, id string) (w primary.Want, ok bool) {
	ch, ok := s.Channels[id]
	if !ok || ch.NodeID != c.nodeID {
		return primary.Want{}, false
	}
	lc := c.local[id]
	if lc == nil || lc.ch.Err() != nil { // dead: being unregistered
		return primary.Want{}, false
	}
	pid, epoch := s.PrimaryOf(ch.TargetID)
	return primary.Want{Primary: pid == id, Epoch: epoch}, true
}

// reportPending reports the pending notices, if metrics are configured.
func (c *Controller) reportPending(n int) {
	if m := c.cfg.Metrics; m != nil {
		m.PrimaryNoticesPending(n)
	}
}

func (c *Controller) primaryDone(tr *primary.Tracker, r primaryResult) {
	switch {
	case r.err == nil:
	case errors.Is(r.err, channel.ErrClosed): // the channel died: nothing to retry
		c.log.Debug("controller: PRIMARY notification to a closed channel", "channel", r.notice.ChannelID, "err", r.err)
	default:
		// A connector that keeps failing is retried with backoff: one line
		// per primaryFailLogInterval, saying how many were not logged.
		if ok, skipped := c.primaryFailLog.Allow(time.Now()); ok {
			var target, connector string
			if lc := c.localChannel(r.notice.ChannelID); lc != nil {
				target, connector = lc.targetID, lc.connectorID
			}
			c.log.Warn("controller: PRIMARY notification failed; will retry", "channel", r.notice.ChannelID,
				"target", target, "connector", connector, "primary", r.notice.Want.Primary,
				"epoch", r.notice.Want.Epoch, "err", r.err, "not_logged_since_last", skipped)
		}
	}
	tr.Done(time.Now(), r.notice.ChannelID, r.notice.Want, r.err == nil)
}

// primaryDirty is what the primary notifier must look at again, recorded by
// the store subscription (under the store's lock, so in O(events)) and taken
// by the notifier on its next wake.
type primaryDirty struct {
	mu       sync.Mutex
	all      bool                // a snapshot replaced the state: look at everything
	targets  map[string]struct{} // targets whose primary (or epoch) changed
	channels map[string]struct{} // this node's channels registered or unregistered
	taken    [2][]string         // what take returned last: targets, channels
}

// record notes what evs change for node's channels; it reports whether the
// notifier has anything new to look at.
func (d *primaryDirty) record(node string, evs []state.Event) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	for _, ev := range evs {
		switch ev.Kind {
		case state.PrimaryElected, state.PrimaryEvicted:
			d.targets = addKey(d.targets, ev.TargetID)
		case state.ChannelRegistered, state.ChannelUnregistered:
			// A newcomer must be told; a channel gone must be retired
			// and forgotten. The target's other channels learn of it
			// only if its primary changed, which has its own event.
			if ev.NodeID != node {
				continue
			}
			d.channels = addKey(d.channels, ev.ChannelID)
		case state.StateRestored:
			d.all = true
		default:
			continue
		}
		changed = true
	}
	return changed
}

// markChannel notes that local channel id must be looked at again.
func (d *primaryDirty) markChannel(id string) {
	d.mu.Lock()
	d.channels = addKey(d.channels, id)
	d.mu.Unlock()
}

// take returns, sorted, what was recorded, and clears it. The slices are
// valid until the next take: they are reused, as the maps are (cleared, not
// dropped). A registration storm wakes the notifier every few registrations,
// and new maps and slices at every wake were a tenth of a registration's
// allocations. What a burst grew past dirtyKeep is let go.
func (d *primaryDirty) take() (targets, channels []string, all bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.taken[0] = appendSorted(d.taken[0][:0], d.targets)
	d.taken[1] = appendSorted(d.taken[1][:0], d.channels)
	all = d.all
	d.targets, d.channels, d.all = clearKeys(d.targets), clearKeys(d.channels), false
	return d.taken[0], d.taken[1], all
}

// dirtyKeep bounds what the notifier's dirty sets and their slices keep
// between wakes.
const dirtyKeep = 1024

func appendSorted(dst []string, m map[string]struct{}) []string {
	if cap(dst) > dirtyKeep {
		dst = nil
	}
	for k := range m {
		dst = append(dst, k)
	}
	slices.Sort(dst)
	return dst
}

func clearKeys(m map[string]struct{}) map[string]struct{} {
	if len(m) > dirtyKeep {
		return nil
	}
	clear(m)
	return m
}

func addKey(m map[string]struct{}, k string) map[string]struct{} {
	if m == nil {
		m = map[string]struct{}{}
	}
	m[k] = struct{}{}
	return m
}

// tellPrimary sends one PRIMARY notification, bounded by HealthTimeout.
func (c *Controller) tellPrimary(ctx context.Context, n primary.Notice) error {
	lc := c.localChannel(n.ChannelID)
	if lc == nil {
		return fmt.Errorf("tell channel %s: %w", n.ChannelID, channel.ErrClosed)
	}
	cmd := command.MustCommand(command.TypePrimary, command.PrimaryPayload{Primary: n.Want.Primary, Epoch: n.Want.Epoch})
	// The deadline on the channel's pooled timer, not a context per notice
	// (its timer and done channel were garbage a registration storm left
	// between the channels' long-lived records).
	reply, err := lc.ch.SendTimeout(ctx, cmd, c.cfg.HealthTimeout)
	if err != nil {
		return fmt.Errorf("tell channel %s primary=%t epoch=%d: %w", n.ChannelID, n.Want.Primary, n.Want.Epoch, err)
	}
	if !reply.Succeeded() {
		return fmt.Errorf("tell channel %s primary=%t epoch=%d: reply %s: %s", n.ChannelID, n.Want.Primary,
			n.Want.Epoch, reply.Status, reply.Error)
	}
	// Only a line that is logged makes its arguments (boxed, they are
	// garbage left between the channels' records in a registration storm).
	if n.Want.Primary {
		if c.log.Enabled(ctx, slog.LevelInfo) {
			c.log.Info("controller: primary elected; its connector was told", "target", lc.targetID,
				"channel", n.ChannelID, "connector", lc.connectorID, "epoch", n.Want.Epoch)
		}
	} else if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.Debug("controller: channel told it is not the primary", "target", lc.targetID,
			"channel", n.ChannelID, "connector", lc.connectorID, "epoch", n.Want.Epoch)
	}
	return nil
}
