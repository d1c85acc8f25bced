package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// TargetDurationName is the histogram of command durations per target.
const TargetDurationName = "exchange_target_command_duration_seconds"

// OtherTarget is the target label of the targets beyond the cap of
// TargetLatency: their sends are counted together.
const OtherTarget = "_other"

// DefaultMaxTargetSeries is the cap of NewTargetLatency when given 0.
const DefaultMaxTargetSeries = 100

// TargetLatency is exchange_target_command_duration_seconds{target}: how
// long sends to each target took, from the call to the reply (or the
// error), whatever the outcome, for the sends that reached a channel. Its
// cardinality is bounded: the first maxTargets targets seen get a series of
// their own, every later one shares target="_other". Safe for concurrent use;
// Observe never blocks for long.
type TargetLatency struct {
	vec *prometheus.HistogramVec
	max int

	mu   sync.RWMutex // protects seen
	seen map[string]prometheus.Observer
	rest prometheus.Observer
}

// NewTargetLatency creates the histogram (buckets DurationBuckets) and
// registers it on reg (nil: not registered). maxTargets 0 means
// DefaultMaxTargetSeries.
func NewTargetLatency(reg prometheus.Registerer, maxTargets int) *TargetLatency {
	if maxTargets <= 0 {
		maxTargets = DefaultMaxTargetSeries
	}
	l := &TargetLatency{
		vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    TargetDurationName,
			Help:    "Duration of the commands sent to each target, from the send to the reply or the error (the first targets seen; the others under target=\"_other\").",
			Buckets: DurationBuckets,
		}, []string{"target"}),
		max:  maxTargets,
		seen: map[string]prometheus.Observer{},
	}
	l.rest = l.vec.WithLabelValues(OtherTarget)
	if reg != nil {
		reg.MustRegister(l.vec)
	}
	return l
}

// Observe records one send to target that took d.
func (l *TargetLatency) Observe(target string, d time.Duration) {
	l.observer(target).Observe(d.Seconds())
}

func (l *TargetLatency) observer(target string) prometheus.Observer {
	l.mu.RLock()
	o, ok := l.seen[target]
	l.mu.RUnlock()
	if ok {
		return o
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if o, ok := l.seen[target]; ok {
		return o
	}
	if len(l.seen) >= l.max {
		return l.rest
	}
	o = l.vec.WithLabelValues(target)
	l.seen[target] = o
	return o
}

// TimedController is a controller whose sends (Send, SendPrimary, SendVia)
// are observed per target by Latency; its other methods are the
// controller's. Give it, rather than the controller, to the batch runner
// and the management API.
type TimedController struct {
	*controller.Controller
	Latency *TargetLatency
}

// SendVia is the controller's SendVia, timed when it chose a channel.
func (t TimedController) SendVia(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, controller.Route, error) {
	start := time.Now()
	reply, rt, err := t.Controller.SendVia(ctx, targetID, cmd, primaryOnly)
	if rt.ChannelID != "" {
		t.Latency.Observe(targetID, time.Since(start))
	}
	return reply, rt, err
}

// Send is the controller's Send, timed.
func (t TimedController) Send(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	reply, _, err := t.SendVia(ctx, targetID, cmd, false)
	return reply, err
}

// SendPrimary is the controller's SendPrimary, timed.
func (t TimedController) SendPrimary(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	reply, _, err := t.SendVia(ctx, targetID, cmd, true)
	return reply, err
}
