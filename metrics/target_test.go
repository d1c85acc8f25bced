package metrics_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/metrics"
)

// counts returns the sample count of every series of the per-target
// histogram, by target.
func targetCounts(t *testing.T, reg *prometheus.Registry) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != metrics.TargetDurationName {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	return out
}

// The first targets get a series each; the others share "_other", so a
// fleet of a million targets makes maxTargets+1 series, not a million.
func TestTargetLatencyCardinalityIsBounded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := metrics.NewTargetLatency(reg, 2)
	for _, target := range []string{"t1", "t2", "t1", "t3", "t4", "t2", "t3"} {
		l.Observe(target, 3*time.Millisecond)
	}
	got := targetCounts(t, reg)
	want := map[string]uint64{"t1": 2, "t2": 2, metrics.OtherTarget: 3}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("target %s: %d samples, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// A send that reached no channel (the target has none) is not a latency.
func TestTimedControllerSkipsSendsWithoutAChannel(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	tc := metrics.TimedController{Controller: registryController(t, 0), Latency: metrics.NewTargetLatency(reg, 0)}
	_, err := tc.Send(t.Context(), "nobody", &command.Command{ID: "c1", Type: "ECHO"})
	if !errors.Is(err, controller.ErrNoChannel) {
		t.Fatalf("Send() = %v, want ErrNoChannel", err)
	}
	if got := targetCounts(t, reg); got["nobody"] != 0 {
		t.Errorf("a send without a channel was timed: %v", got)
	}
}
