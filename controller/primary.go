package controller

import (
	"context"
	"errors"
	"fmt"
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

// notifyPrimaries is the primary notifier. On every wake it first retires
// the local channels the state no longer has (retireUnregistered). The state
// decides primaries (Elect runs inside every Apply, on every node alike);
// this loop makes each local channel believe what the state says. It wakes
// on store events, on finished notifications, on a channel's retry becoming
// due, and every ReconcileInterval as a safety net; each time it compares
// every local channel's (primary, epoch) in the state with what the channel
// was last told successfully, and sends PRIMARY where they differ
// (internal/primary).
//
// Notifications run on their own goroutines, at most one per channel and
// HealthConcurrency in all, so a stalled connector never delays the others
// (reference weakness 17). A failed one is retried with backoff (weakness
// 14). No ordering is kept between channels: the epoch lets receivers fence a
// stale primary.
func (c *Controller) notifyPrimaries(ctx context.Context) {
	tr := primary.NewTracker(primaryRetryBase, primaryRetryCeiling)
	results := make(chan primaryResult)
	var wg sync.WaitGroup
	defer wg.Wait()

	timer := time.NewTimer(0) // reconcile at once
	defer timer.Stop()
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
		c.retireUnregistered()

		now := time.Now()
		var (
			notices []primary.Notice
			next    time.Time
		)
		if limit := c.cfg.HealthConcurrency - tr.InFlight(); limit > 0 {
			notices, next = tr.Plan(now, c.wantPrimaries(), limit)
		} // else: a finishing notification wakes the loop again
		for _, n := range notices {
			wg.Go(func() {
				err := c.tellPrimary(ctx, n)
				select {
				case results <- primaryResult{notice: n, err: err}:
				case <-ctx.Done():
				}
			})
		}
		wait := c.cfg.ReconcileInterval
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(now), time.Millisecond))
		}
		timer.Reset(wait)
	}
}

func (c *Controller) primaryDone(tr *primary.Tracker, r primaryResult) {
	switch {
	case r.err == nil:
	case errors.Is(r.err, channel.ErrClosed): // the channel died: nothing to retry
		c.log.Debug("controller: PRIMARY notification to a closed channel", "channel", r.notice.ChannelID, "err", r.err)
	default:
		c.log.Warn("controller: PRIMARY notification failed; will retry", "channel", r.notice.ChannelID,
			"primary", r.notice.Want.Primary, "epoch", r.notice.Want.Epoch, "err", r.err)
	}
	tr.Done(time.Now(), r.notice.ChannelID, r.notice.Want, r.err == nil)
}

// wantPrimaries computes, for every live local channel registered in the
// state, what it should believe.
func (c *Controller) wantPrimaries() map[string]primary.Want {
	locals := c.locals()
	want := make(map[string]primary.Want, len(locals))
	c.store.View(func(s *state.State) {
		for id := range locals {
			ch, ok := s.Channels[id]
			if !ok || ch.NodeID != c.nodeID {
				continue
			}
			pid, epoch := s.PrimaryOf(ch.TargetID)
			want[id] = primary.Want{Primary: pid == id, Epoch: epoch}
		}
	})
	for id := range want {
		if locals[id].ch.Err() != nil {
			delete(want, id) // dead: being unregistered
		}
	}
	return want
}

// tellPrimary sends one PRIMARY notification, bounded by HealthTimeout.
func (c *Controller) tellPrimary(ctx context.Context, n primary.Notice) error {
	lc := c.localChannel(n.ChannelID)
	if lc == nil {
		return fmt.Errorf("tell channel %s: %w", n.ChannelID, channel.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HealthTimeout)
	defer cancel()
	cmd := command.MustCommand(command.TypePrimary, command.PrimaryPayload{Primary: n.Want.Primary, Epoch: n.Want.Epoch})
	reply, err := lc.ch.Send(ctx, cmd)
	if err != nil {
		return fmt.Errorf("tell channel %s primary=%t epoch=%d: %w", n.ChannelID, n.Want.Primary, n.Want.Epoch, err)
	}
	if !reply.Succeeded() {
		return fmt.Errorf("tell channel %s primary=%t epoch=%d: reply %s: %s", n.ChannelID, n.Want.Primary,
			n.Want.Epoch, reply.Status, reply.Error)
	}
	c.log.Debug("controller: channel told its primary role", "channel", n.ChannelID, "target", lc.targetID,
		"primary", n.Want.Primary, "epoch", n.Want.Epoch)
	return nil
}
