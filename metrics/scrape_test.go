package metrics_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/metrics"
	"github.com/exchangekit/exchange/state"
)

// walkOnly hides a Source's Counts, so the state gauges walk the registry as
// before counters existed.
type walkOnly struct{ metrics.Source }

// registryController returns a controller (never Run) whose standalone
// cluster holds n channels registered by other nodes: every third inactive,
// three per target, and a primary for the targets that have an active one.
func registryController(tb testing.TB, n int) *controller.Controller {
	tb.Helper()
	clu := standalone.New("node-0")
	tb.Cleanup(func() { _ = clu.Close() })
	lis := embedded.Listen()
	tb.Cleanup(func() { _ = lis.Close() })
	cfg := controller.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctrl, err := controller.New(cfg, lis, clu)
	if err != nil {
		tb.Fatalf("controller.New() = %v", err)
	}
	ops := make([]state.Op, 0, n)
	for i := range n {
		ops = append(ops, state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
			ID: fmt.Sprintf("ch-%07d", i), TargetID: fmt.Sprintf("t-%06d", i/3), NodeID: fmt.Sprint("node-", 1+i%2),
			Active: i%3 != 0, RegisteredAt: time.Unix(1, 0)}}})
	}
	for chunk := range slices.Chunk(ops, 4096) {
		if err := state.Err(clu.Apply(tb.Context(), chunk...)); err != nil {
			tb.Fatalf("Apply(register) = %v", err)
		}
	}
	return ctrl
}

var stateGauges = []string{"exchange_channels", "exchange_channels_in_flight", "exchange_primaries", "exchange_targets"}

// TestStateGaugesFromCountsMatchAWalk: the gauges a controller reports from
// its counters are those a walk of its registry reports.
func TestStateGaugesFromCountsMatchAWalk(t *testing.T) {
	t.Parallel()
	ctrl := registryController(t, 1000)
	counted, walked := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	metrics.NewController(counted, ctrl)
	metrics.NewController(walked, walkOnly{ctrl})
	var want strings.Builder
	mfs, err := walked.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	for _, mf := range mfs {
		if slices.Contains(stateGauges, mf.GetName()) {
			want.WriteString(fmt.Sprintf("# HELP %s %s\n# TYPE %s gauge\n", mf.GetName(), mf.GetHelp(), mf.GetName()))
			for _, m := range mf.GetMetric() {
				labels := ""
				for _, l := range m.GetLabel() {
					labels = fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
				}
				want.WriteString(fmt.Sprintf("%s%s %v\n", mf.GetName(), labels, m.GetGauge().GetValue()))
			}
		}
	}
	if err := testutil.GatherAndCompare(counted, strings.NewReader(want.String()), stateGauges...); err != nil {
		t.Error(err)
	}
	if got := ctrl.Counts(); got.Channels != 1000 || got.ActiveChannels != 666 || got.Targets != 334 || got.Primaries != 333 {
		t.Errorf("Counts() = %+v, want 1000 channels, 666 active, 334 targets, 333 primaries", got)
	}
}

// BenchmarkScrape gathers the state gauges of a controller whose registry
// holds 100k channels: from its counters (counts) and, for comparison, by a
// walk of the registry (walk), as before.
func BenchmarkScrape(b *testing.B) {
	ctrl := registryController(b, 100_000)
	for _, bc := range []struct {
		name string
		src  metrics.Source
	}{{"counts", ctrl}, {"walk", walkOnly{ctrl}}} {
		b.Run("channels=100000/"+bc.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			metrics.NewController(reg, bc.src)
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSweepAndPendingNotices: the health round histogram and the pending
// PRIMARY notices gauge report what the controller tells them.
func TestSweepAndPendingNotices(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewController(reg, nil)
	m.HealthSweep(30 * time.Millisecond)
	m.HealthSweep(2 * time.Second)
	m.PrimaryNoticesPending(7)
	m.PrimaryNoticesPending(3)
	if got := testutil.ToFloat64(gaugeOf(t, reg, "exchange_primary_notices_pending")); got != 3 {
		t.Errorf("exchange_primary_notices_pending = %v, want 3", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "exchange_health_sweep_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 2 || h.GetSampleSum() != 2.03 {
			t.Errorf("exchange_health_sweep_seconds: count %d, sum %v; want 2, 2.03", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Error("exchange_health_sweep_seconds not gathered")
}
