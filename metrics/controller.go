package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// DurationBuckets are the buckets, in seconds, of the command duration
// histograms: 100 µs to 60 s (the default reply timeout), about three per
// decade.
var DurationBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10, 30, 60,
}

// SweepBuckets are the buckets, in seconds, of exchange_health_sweep_seconds:
// a round checks every local channel, HealthConcurrency at a time, so it
// takes from milliseconds to minutes.
var SweepBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Reasons reported by HelloRejected and HealthCheckFailed; their series exist
// (at zero) from the start.
var (
	helloReasons  = []string{"unauthenticated", "protocol", "timeout", "rate_limited", "limit"}
	healthReasons = []string{"unhealthy", "timeout", "error"}
)

// Controller holds a controller's metrics. It implements controller.Metrics
// and channel.Observer; its methods are safe for concurrent use and never
// block. Create it with NewController.
type Controller struct {
	sent      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	handled   *prometheus.CounterVec
	hello     *prometheus.CounterVec
	health    *prometheus.CounterVec
	elections prometheus.Counter
	moved     prometheus.Counter
	isolated  prometheus.Counter
	sweep     prometheus.Histogram
	pending   prometheus.Gauge
}

var (
	_ controller.Metrics = (*Controller)(nil)
	_ channel.Observer   = (*Controller)(nil)
)

// NewController creates the controller metrics and registers them, with a
// collector reading src at scrape time, on reg. A nil reg registers nothing
// (the metrics still count); a nil src reports no state gauges. It panics if
// the metrics are already registered on reg, like prometheus.MustRegister.
func NewController(reg prometheus.Registerer, src Source) *Controller {
	m := &Controller{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_commands_total",
			Help: "Commands sent by this controller node, by type and outcome (ok, timeout, closed, no_channel, unknown_command, remote_error, busy, error).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "exchange_command_duration_seconds",
			Help:    "Time from sending a command to its reply or error, by type.",
			Buckets: DurationBuckets,
		}, []string{"type"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_commands_handled_total",
			Help: "Commands from connectors handled by this controller node, by type and reply status.",
		}, []string{"type", "status"}),
		hello: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_hello_rejections_total",
			Help: "HELLO handshakes refused by this controller node, by reason (unauthenticated, protocol, timeout, rate_limited, limit).",
		}, []string{"reason"}),
		health: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_health_check_failures_total",
			Help: "Health checks of local channels that failed, by reason (unhealthy, timeout, error).",
		}, []string{"reason"}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exchange_elections_total",
			Help: "Primary channel elections seen by this controller node.",
		}),
		moved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exchange_rebalanced_channels_total",
			Help: "Channels of this node asked to reconnect elsewhere by rebalancing after a node joined.",
		}),
		isolated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exchange_isolations_total",
			Help: "Times this node was cut off from the cluster's leader and sent its connectors away.",
		}),
		sweep: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exchange_health_sweep_seconds",
			Help:    "Duration of a health round: every local channel of this node checked once.",
			Buckets: SweepBuckets,
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exchange_primary_notices_pending",
			Help: "PRIMARY notifications of this node not delivered yet: in flight, awaiting a retry, or queued.",
		}),
	}
	for _, r := range helloReasons {
		m.hello.WithLabelValues(r)
	}
	for _, r := range healthReasons {
		m.health.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.sent, m.duration, m.handled, m.hello, m.health, m.elections, m.moved, m.isolated, m.sweep, m.pending)
	if src != nil {
		reg.MustRegister(newStateCollector(src))
	}
	return m
}

// Sent counts a command sent by the controller and observes its duration. It
// implements channel.Observer.
func (m *Controller) Sent(t command.Type, d time.Duration, err error) {
	m.sent.WithLabelValues(string(t), Outcome(err)).Inc()
	m.duration.WithLabelValues(string(t)).Observe(d.Seconds())
}

// Handled counts a connector's command handled by the controller. It
// implements channel.Observer.
func (m *Controller) Handled(t command.Type, _ time.Duration, status command.Status) {
	m.handled.WithLabelValues(string(t), status.String()).Inc()
}

// HelloRejected counts a refused HELLO; reason is "unauthenticated",
// "protocol", "timeout", "rate_limited" or "limit" (a target at its channel limit).
func (m *Controller) HelloRejected(reason string) {
	m.hello.WithLabelValues(reason).Inc()
}

// HealthCheckFailed counts a failed health check; reason is "unhealthy",
// "timeout" or "error".
func (m *Controller) HealthCheckFailed(reason string) {
	m.health.WithLabelValues(reason).Inc()
}

// HealthSweep observes the duration of one health round.
func (m *Controller) HealthSweep(d time.Duration) { m.sweep.Observe(d.Seconds()) }

// PrimaryNoticesPending sets the number of PRIMARY notifications pending.
func (m *Controller) PrimaryNoticesPending(n int) { m.pending.Set(float64(n)) }

// OnEvent feeds a controller event to the metrics: every
// EventPrimaryElected counts one election. It can be called from the
// controller's event listener and never blocks.
func (m *Controller) OnEvent(ev controller.Event) {
	switch ev.Kind {
	case controller.EventPrimaryElected:
		m.elections.Inc()
	case controller.EventChannelMoved:
		m.moved.Inc()
	case controller.EventIsolated:
		m.isolated.Inc()
	}
}
