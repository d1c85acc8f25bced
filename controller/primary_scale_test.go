package controller

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller/internal/primary"
	"github.com/exchangekit/exchange/state"
)

// notifierRig is a controller that is never Run: its local channels are
// registered straight in a standalone cluster and all share one live channel
// (nothing is sent on it), so the primary notifier's planning can be driven
// wake by wake (planPrimaries) at any scale, without connections.
type notifierRig struct {
	c    *Controller
	tr   *primary.Tracker
	plan *primaryPlan
}

func newNotifierRig(tb testing.TB, targets, perTarget int) *notifierRig {
	tb.Helper()
	clu := standalone.New("node-1")
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.PrimaryConcurrency = targets*perTarget + 1 // no limit: a wake plans everything it looks at
	c, err := New(cfg, embedded.Listen(), clu)
	if err != nil {
		tb.Fatalf("New() = %v", err)
	}
	a, b := embedded.Pipe()
	ch := channel.New(a, command.NewMux(), channel.Config{})
	tb.Cleanup(func() {
		_ = ch.Close()
		_ = b.Close()
		_ = c.lis.Close()
		c.cancel()
		_ = clu.Close()
	})
	unsub := clu.Subscribe(c.onStoreEvents)
	tb.Cleanup(unsub)

	var ops []state.Op
	for t := range targets {
		for i := range perTarget {
			id := fmt.Sprintf("ch-%d-%d", t, i)
			lc := &local{id: id, targetID: fmt.Sprintf("t-%d", t), ch: ch}
			lc.registered.Store(true)
			c.local[id] = lc
			ops = append(ops, state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
				ID: id, TargetID: lc.targetID, NodeID: "node-1", Active: true, RegisteredAt: time.Unix(1, 0)}}})
		}
	}
	for chunk := range slices.Chunk(ops, 4096) {
		if err := state.Err(clu.Apply(tb.Context(), chunk...)); err != nil {
			tb.Fatalf("Apply(register) = %v", err)
		}
	}
	r := &notifierRig{c: c, tr: primary.NewTracker(primaryRetryBase, primaryRetryCeiling)}
	r.plan = newPrimaryPlan(c, r.tr)
	r.wake(tb, true) // the first wake is a full reconcile: everyone is told
	return r
}

// wake runs one notifier wake, reports every notice as delivered, and
// returns the notices.
func (r *notifierRig) wake(tb testing.TB, full bool) []primary.Notice {
	tb.Helper()
	now := time.Now()
	notices, _ := r.c.planPrimaries(r.plan, now, full)
	for _, n := range notices {
		r.tr.Done(now, n.ChannelID, n.Want, true)
	}
	return notices
}

// setPrimary moves target's primary to channel id (a new epoch).
func (r *notifierRig) setPrimary(tb testing.TB, target, id string) {
	tb.Helper()
	if err := state.Err(r.c.store.Apply(tb.Context(), state.Op{SetPrimary: &state.SetPrimary{TargetID: target, ChannelID: id}})); err != nil {
		tb.Fatalf("Apply(SetPrimary) = %v", err)
	}
}

// TestPrimaryWakeNotifiesOnlyTheChangedTarget: a primary change of one target
// plans notices for that target's channels and for no other channel.
func TestPrimaryWakeNotifiesOnlyTheChangedTarget(t *testing.T) {
	r := newNotifierRig(t, 50, 3)
	if n := r.wake(t, false); len(n) != 0 {
		t.Fatalf("quiet wake: %d notices %v, want none", len(n), n)
	}
	r.setPrimary(t, "t-7", "ch-7-2")
	got := r.wake(t, false)
	var epoch uint64
	r.c.store.View(func(s *state.State) { _, epoch = s.PrimaryOf("t-7") })
	want := []primary.Notice{
		{ChannelID: "ch-7-0", Want: primary.Want{Primary: false, Epoch: epoch}},
		{ChannelID: "ch-7-1", Want: primary.Want{Primary: false, Epoch: epoch}},
		{ChannelID: "ch-7-2", Want: primary.Want{Primary: true, Epoch: epoch}},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after SetPrimary(t-7): notices %v, want %v", got, want)
	}
	// The next wake (the notices' completions marked them again) and a full
	// reconcile find nothing left to say.
	if n := r.wake(t, false); len(n) != 0 {
		t.Fatalf("wake after delivery: notices %v, want none", n)
	}
	if n := r.wake(t, true); len(n) != 0 {
		t.Fatalf("full reconcile: notices %v, want none", n)
	}
}

// TestPrimaryWakeAfterRestoreLooksAtEverything: state.StateRestored (no ids)
// makes the next wake a full one.
func TestPrimaryWakeAfterRestoreLooksAtEverything(t *testing.T) {
	r := newNotifierRig(t, 4, 2)
	r.tr = primary.NewTracker(primaryRetryBase, primaryRetryCeiling) // forgets what was told
	r.plan = newPrimaryPlan(r.c, r.tr)
	if n := r.wake(t, false); len(n) != 0 {
		t.Fatalf("incremental wake with nothing recorded: notices %v, want none", n)
	}
	r.c.onStoreEvents([]state.Event{{Kind: state.StateRestored}})
	if n := r.wake(t, false); len(n) != 8 {
		t.Fatalf("wake after StateRestored: %d notices, want 8 (every local channel)", len(n))
	}
}

// BenchmarkPrimaryWake measures one notifier wake after one target's primary
// changed (the Apply included), with 1k and 50k local channels: its cost
// must not grow with the number of local channels.
func BenchmarkPrimaryWake(b *testing.B) {
	for _, n := range []int{1_000, 50_000} {
		b.Run(fmt.Sprintf("local=%d", n), func(b *testing.B) {
			r := newNotifierRig(b, n/2, 2)
			i := 1 // ch-0-0 is the primary already
			for b.Loop() {
				r.setPrimary(b, "t-0", fmt.Sprintf("ch-0-%d", i%2))
				if got := r.wake(b, false); len(got) != 2 {
					b.Fatalf("wake: %d notices, want 2", len(got))
				}
				i++
			}
		})
	}
}

// BenchmarkPrimaryFullReconcile is the periodic safety net, for scale: it
// looks at every local channel.
func BenchmarkPrimaryFullReconcile(b *testing.B) {
	for _, n := range []int{1_000, 50_000} {
		b.Run(fmt.Sprintf("local=%d", n), func(b *testing.B) {
			r := newNotifierRig(b, n/2, 2)
			for b.Loop() {
				r.wake(b, true)
			}
		})
	}
}
