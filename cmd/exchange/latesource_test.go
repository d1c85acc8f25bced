package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/metrics"
)

// walkingSource counts the registry walks a scrape makes.
type walkingSource struct{ walks int }

func (w *walkingSource) Channels() []controller.ChannelInfo { w.walks++; return nil }
func (w *walkingSource) Targets() []controller.TargetInfo   { w.walks++; return nil }

type fixedCounts controller.Counts

func (f fixedCounts) Counts() controller.Counts { return controller.Counts(f) }

// The controller command's /metrics reads the controller's counters through
// lateSource, never walking the registry (at 10,000 channels the walk made a
// scrape take 44 ms, and it grows with N).
func TestLateSourceScrapesCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &lateSource{}
	metrics.NewController(reg, src)
	walker := &walkingSource{}
	src.set(metrics.WithBatchCounts(walker, func() map[string]int { return nil }),
		fixedCounts{Channels: 7, ActiveChannels: 5, Targets: 3, Primaries: 2})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue()
		}
	}
	if walker.walks != 0 {
		t.Errorf("the scrape walked the registry %d times", walker.walks)
	}
	for k, want := range map[string]float64{"exchange_channels/active": 5, "exchange_channels/inactive": 2, "exchange_targets": 3, "exchange_primaries": 2} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if (&lateSource{}).Counts() != (controller.Counts{}) {
		t.Error("Counts before set is not zero")
	}
}
