package metrics

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/controller"
)

// Source is what the state gauges read at scrape time.
// *controller.Controller satisfies it. Both methods must be safe for
// concurrent use and should be quick: they run on every scrape.
type Source interface {
	Channels() []controller.ChannelInfo
	Targets() []controller.TargetInfo
}

// Counter is implemented by a Source that reports the registry's sizes
// without listing it; *controller.Controller does, from counters its state
// keeps, so a scrape then costs O(1) in the number of channels. The state
// gauges read Counts when the Source has it, and walk Channels and Targets
// otherwise.
type Counter interface {
	Counts() controller.Counts
}

// BatchCounter is implemented by a Source that also reports batches.
type BatchCounter interface {
	// BatchCounts returns the number of batches by status name (CREATED,
	// PENDING, IN_PROGRESS, SUCCEEDED, ERROR).
	BatchCounts() map[string]int
}

// BatchStatuses are the batch status names always reported by
// exchange_batches (at zero when there are none).
var BatchStatuses = []string{"CREATED", "PENDING", "IN_PROGRESS", "SUCCEEDED", "ERROR"}

// WithBatchCounts returns a Source reading channels and targets from src and
// batch counts from counts, so that exchange_batches is reported.
func WithBatchCounts(src Source, counts func() map[string]int) Source {
	return batchSource{Source: src, counts: counts}
}

type batchSource struct {
	Source
	counts func() map[string]int
}

func (s batchSource) BatchCounts() map[string]int { return s.counts() }

// CountBatches returns a batch counter for WithBatchCounts over a batch
// lister such as (*batch.Runner).ListBatches. It lists every batch at each
// scrape.
func CountBatches(list func(batch.Filter) []batch.Batch) func() map[string]int {
	return func() map[string]int {
		out := map[string]int{}
		for _, b := range list(batch.Filter{}) {
			out[b.Status.String()]++
		}
		return out
	}
}

// stateCollector reports the state read from a Source at scrape time.
type stateCollector struct {
	src       Source
	channels  *prometheus.Desc
	targets   *prometheus.Desc
	primaries *prometheus.Desc
	inFlight  *prometheus.Desc
	batches   *prometheus.Desc
}

func newStateCollector(src Source) *stateCollector {
	return &stateCollector{
		src: src,
		channels: prometheus.NewDesc("exchange_channels",
			"Registered channels in the cluster, by state (active, inactive).", []string{"state"}, nil),
		targets: prometheus.NewDesc("exchange_targets",
			"Targets with at least one registered channel.", nil, nil),
		primaries: prometheus.NewDesc("exchange_primaries",
			"Targets that have a primary channel.", nil, nil),
		inFlight: prometheus.NewDesc("exchange_channels_in_flight",
			"Commands awaiting a reply on the channels held by this node.", nil, nil),
		batches: prometheus.NewDesc("exchange_batches",
			"Batches, by status.", []string{"status"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.channels
	ch <- c.targets
	ch <- c.primaries
	ch <- c.inFlight
	if _, ok := c.src.(BatchCounter); ok {
		ch <- c.batches
	}
}

// counter returns src's Counter, looking through WithBatchCounts.
func counter(src Source) (Counter, bool) {
	if bs, ok := src.(batchSource); ok {
		src = bs.Source
	}
	cs, ok := src.(Counter)
	return cs, ok
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var active, inactive, inFlight, targets, primaries int
	if cs, ok := counter(c.src); ok {
		n := cs.Counts()
		active, inactive, inFlight = n.ActiveChannels, n.Channels-n.ActiveChannels, n.LocalInFlight
		targets, primaries = n.Targets, n.Primaries
	} else {
		active, inactive, inFlight, targets, primaries = c.walk()
	}
	ch <- prometheus.MustNewConstMetric(c.channels, prometheus.GaugeValue, float64(active), "active")
	ch <- prometheus.MustNewConstMetric(c.channels, prometheus.GaugeValue, float64(inactive), "inactive")
	ch <- prometheus.MustNewConstMetric(c.targets, prometheus.GaugeValue, float64(targets))
	ch <- prometheus.MustNewConstMetric(c.primaries, prometheus.GaugeValue, float64(primaries))
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(inFlight))
	c.collectBatches(ch)
}

// walk counts the state gauges from a Source without Counts: O(channels).
func (c *stateCollector) walk() (active, inactive, inFlight, targets, primaries int) {
	for _, info := range c.src.Channels() {
		if info.Active {
			active++
		} else {
			inactive++
		}
		if info.Local {
			inFlight += info.InFlight
		}
	}
	for _, t := range c.src.Targets() {
		if len(t.Channels) > 0 {
			targets++
		}
		if t.PrimaryID != "" {
			primaries++
		}
	}
	return active, inactive, inFlight, targets, primaries
}

func (c *stateCollector) collectBatches(ch chan<- prometheus.Metric) {
	bc, ok := c.src.(BatchCounter)
	if !ok {
		return
	}
	counts := bc.BatchCounts()
	for _, s := range BatchStatuses {
		ch <- prometheus.MustNewConstMetric(c.batches, prometheus.GaugeValue, float64(counts[s]), s)
	}
	for _, s := range slices.Sorted(maps.Keys(counts)) {
		if !slices.Contains(BatchStatuses, s) {
			ch <- prometheus.MustNewConstMetric(c.batches, prometheus.GaugeValue, float64(counts[s]), s)
		}
	}
}

var (
	_ Source  = (*controller.Controller)(nil)
	_ Counter = (*controller.Controller)(nil)
)
