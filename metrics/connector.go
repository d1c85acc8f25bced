package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// Connector holds a connector's metrics. It implements channel.Observer (give
// it as the connector's channel Observer) and has hooks for the connection
// state (Connected, Disconnected) and the primary role (Primary). Its methods
// are safe for concurrent use and never block. Create it with NewConnector.
type Connector struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	primary    prometheus.Gauge
	epoch      prometheus.Gauge
	handled    *prometheus.CounterVec
	sent       *prometheus.CounterVec
	duration   *prometheus.HistogramVec

	everConnected atomic.Bool
}

var _ channel.Observer = (*Connector)(nil)

// NewConnector creates the connector metrics and registers them on reg (nil:
// not registered). It panics if they are already registered on reg.
func NewConnector(reg prometheus.Registerer) *Connector {
	m := &Connector{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exchange_connector_connected",
			Help: "1 while the connector has a channel to a controller, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exchange_connector_reconnects_total",
			Help: "Channels established after the first one (reconnections).",
		}),
		primary: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exchange_connector_primary",
			Help: "1 while the connector is the primary of its target, else 0.",
		}),
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exchange_connector_primary_epoch",
			Help: "Epoch of the last PRIMARY message received.",
		}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_connector_commands_handled_total",
			Help: "Commands from the controller handled by the connector, by type and reply status.",
		}, []string{"type", "status"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_connector_commands_total",
			Help: "Commands sent by the connector to its controller, by type and outcome.",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "exchange_connector_command_duration_seconds",
			Help:    "Time from sending a command to the controller to its reply or error, by type.",
			Buckets: DurationBuckets,
		}, []string{"type"}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.primary, m.epoch, m.handled, m.sent, m.duration)
	}
	return m
}

// Connected records that a channel is established (after the HELLO). Every
// call after the first counts one reconnection.
func (m *Connector) Connected() {
	if m.everConnected.Swap(true) {
		m.reconnects.Inc()
	}
	m.connected.Set(1)
}

// Disconnected records that the channel is gone. The connector is no longer
// primary either (it drops the role when its channel closes).
func (m *Connector) Disconnected() {
	m.connected.Set(0)
	m.primary.Set(0)
}

// Primary records a PRIMARY message: whether the connector is primary, and the
// epoch. It has the signature of the connector's OnPrimary callback.
func (m *Connector) Primary(primary bool, epoch uint64) {
	if primary {
		m.primary.Set(1)
	} else {
		m.primary.Set(0)
	}
	m.epoch.Set(float64(epoch))
}

// Sent counts a command sent to the controller. It implements
// channel.Observer.
func (m *Connector) Sent(t command.Type, d time.Duration, err error) {
	m.sent.WithLabelValues(string(t), Outcome(err)).Inc()
	m.duration.WithLabelValues(string(t)).Observe(d.Seconds())
}

// Handled counts a command handled by the connector. It implements
// channel.Observer.
func (m *Connector) Handled(t command.Type, _ time.Duration, status command.Status) {
	m.handled.WithLabelValues(string(t), status.String()).Inc()
}
