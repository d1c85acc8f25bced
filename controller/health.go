package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// healthLoop health-checks every registered local channel every
// HealthInterval until ctx is done. Rounds never overlap: a round that
// outlasts the interval delays the next tick (ticks do not queue up). A round
// has no error path that could stop the loop: every failure is about one
// channel and ends with that channel evicted (or, for a busy answer, kept).
func (c *Controller) healthLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.healthRound(ctx)
		}
	}
}

// healthRound checks the registered local channels, HealthConcurrency at a
// time, and waits for all. Channels still in their handshake are not local
// yet, and channels not yet in the state are skipped, so a tick never evicts
// a channel that is still being set up (reference weakness 25).
func (c *Controller) healthRound(ctx context.Context) {
	start := time.Now()
	locals := c.locals()
	c.store.View(func(s *state.State) {
		for id := range locals {
			if ch, ok := s.Channels[id]; !ok || ch.NodeID != c.nodeID {
				delete(locals, id)
			}
		}
	})
	// A fixed set of workers takes the channels in turn: a goroutine per
	// check would start (and grow) a fresh stack for each.
	todo := make([]*local, 0, len(locals))
	for _, lc := range locals {
		todo = append(todo, lc)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(c.cfg.HealthConcurrency, len(todo)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(todo)) {
					return
				}
				c.checkHealth(ctx, todo[i])
			}
		})
	}
	wg.Wait()
	if next.Load() < int64(len(todo)) {
		return // stopped by ctx before every channel was taken: no sweep to report
	}
	if m := c.cfg.Metrics; m != nil {
		m.HealthSweep(time.Since(start))
	}
}

// healthCheckPayload is the payload of every HEALTH_CHECK,
// command.HealthCheckPayload{} encoded once (Send copies it into the frame).
var healthCheckPayload = func() []byte {
	b, err := command.Encode(command.HealthCheckPayload{})
	if err != nil {
		panic(err)
	}
	return b
}()

// healthyPayload is the usual answer to HEALTH_CHECK, as the connectors of
// this module encode it (command.HealthCheckReplyPayload{Healthy: true}).
var healthyPayload = []byte(`{"healthy":true}`)

// checkHealth sends one HEALTH_CHECK and evicts the channel unless it answers
// healthy in time. A busy answer (*channel.BusyError: the peer's handler
// limit, or this side's in-flight limit) is inconclusive, not unhealthy: the
// channel is kept and the next round checks again. Control commands have
// capacity of their own in the channel (channel.Config.MaxControl), so this
// only happens with a peer that does not reserve it, or with more control
// commands in flight than that capacity.
func (c *Controller) checkHealth(ctx context.Context, lc *local) {
	// The timeout on the channel's pooled timer, not a context per check.
	reply, err := lc.ch.SendTimeout(ctx, &command.Command{ID: command.NewID(), Type: command.TypeHealthCheck,
		Payload: healthCheckPayload}, c.cfg.HealthTimeout)
	if ctx.Err() != nil || lc.ch.Err() != nil {
		return // closing, or the channel died anyway (its watcher unregisters it)
	}
	var reason, detail string
	switch {
	case errors.Is(err, channel.ErrBusy):
		c.log.Debug("controller: health check answered busy; inconclusive, channel kept", "channel", lc.id,
			"target", lc.targetID, "err", err)
		return
	case errors.Is(err, context.DeadlineExceeded):
		reason, detail = "timeout", fmt.Sprintf("no reply within %s", c.cfg.HealthTimeout)
	case err != nil:
		reason, detail = "error", err.Error()
	case !reply.Succeeded():
		reason, detail = "error", fmt.Sprintf("reply status %s: %s", reply.Status, reply.Error)
	case bytes.Equal(reply.Payload, healthyPayload):
		// The usual answer, recognised without decoding it: decoding was a
		// tenth of a health check's CPU on the controller (docs/benchmarks.md,
		// "Idle CPU and reconnect storm").
		lc.lastHealthy.Store(time.Now().UnixNano())
		return
	default:
		p, derr := command.Decode[command.HealthCheckReplyPayload](reply.Payload)
		switch {
		case derr != nil:
			reason, detail = "error", derr.Error()
		case !p.Healthy:
			reason, detail = "unhealthy", p.Detail
		default:
			lc.lastHealthy.Store(time.Now().UnixNano())
			return
		}
	}
	c.log.Warn("controller: health check failed; evicting channel", "channel", lc.id, "target", lc.targetID,
		"reason", reason, "detail", detail)
	if m := c.cfg.Metrics; m != nil {
		m.HealthCheckFailed(reason)
	}
	c.evict(ctx, lc, &channel.CloseCause{Reason: "health check failed", Detail: reason + ": " + detail, Abnormal: true})
}

// evict says GOOD_BYE{reconnect:true} and closes the channel with cause; its
// watcher (serveConn) then logs why and unregisters it at once.
func (c *Controller) evict(ctx context.Context, lc *local, cause *channel.CloseCause) {
	gctx, cancel := context.WithTimeout(ctx, c.cfg.GoodByeTimeout)
	defer cancel()
	lc.intend(cause)
	if err := c.goodbye(gctx, lc); err != nil {
		c.log.Debug("controller: GOOD_BYE failed", "channel", lc.id, "err", err)
	}
	lc.closeWith(cause)
}

// goodbye sends GOOD_BYE{reconnect:true}. A channel that closes in answer
// (ErrClosed) has understood: that counts as success.
func (c *Controller) goodbye(ctx context.Context, lc *local) error {
	cmd := command.MustCommand(command.TypeGoodBye, command.GoodByePayload{TargetID: lc.targetID, Reconnect: true})
	_, err := lc.ch.Send(ctx, cmd)
	if err != nil && !errors.Is(err, channel.ErrClosed) {
		return fmt.Errorf("good bye to channel %s: %w", lc.id, err)
	}
	return nil
}
