package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// transportCollector reports the gRPC transport's limits before HELLO
// (grpcchannel.Server.Stats: counters the server keeps, read at scrape time)
// and its handshake queue (docs/operations.md, "Limits before HELLO";
// decision 0044).
type transportCollector struct{ srv *grpcchannel.Server }

var (
	descConnections = prometheus.NewDesc("exchange_grpc_connections",
		"Connections open on the gRPC port (counted by its listener).", nil, nil)
	descHandshakes = prometheus.NewDesc("exchange_grpc_handshakes_in_flight",
		"Connect streams holding a handshake place (not yet past HELLO).", nil, nil)
	descQueued = prometheus.NewDesc("exchange_grpc_handshakes_queued",
		"Connect streams waiting in line for a handshake place (--handshake-queue-wait).", nil, nil)
	descRefusedConns = prometheus.NewDesc("exchange_grpc_connections_refused_total",
		"Connections refused by --max-connections or --max-connections-per-source.", nil, nil)
	descRefusedHandshakes = prometheus.NewDesc("exchange_grpc_handshake_refusals_total",
		"Connect streams refused with RESOURCE_EXHAUSTED before HELLO, by reason: limit (--max-handshakes or its per-source limit, no queue), queue_full (the line would not serve it within --handshake-queue-wait, or --max-queued-handshakes), queue_timeout (waited --handshake-queue-wait in line).", []string{"reason"}, nil)
	descSilent = prometheus.NewDesc("exchange_grpc_silent_streams_total",
		"Connect streams ended by --handshake-timeout without a HELLO.", nil, nil)
	descQueueWait = prometheus.NewDesc("exchange_grpc_handshake_queue_wait_seconds",
		"Time the Connect streams given a place by the handshake queue waited in line.", nil, nil)
)

func (transportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descHandshakes, descQueued, descRefusedConns, descRefusedHandshakes, descSilent, descQueueWait} {
		ch <- d
	}
}

func (c transportCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(st.Connections))
	ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.GaugeValue, float64(st.Handshakes))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(descRefusedConns, prometheus.CounterValue, float64(st.RefusedConnections))
	// The counters are read one by one while refusals go on: the
	// difference may be a refusal or two short, never negative.
	var limit uint64
	if q := st.QueueFull + st.QueueTimeouts; st.RefusedHandshakes > q {
		limit = st.RefusedHandshakes - q
	}
	ch <- prometheus.MustNewConstMetric(descRefusedHandshakes, prometheus.CounterValue, float64(limit), "limit")
	ch <- prometheus.MustNewConstMetric(descRefusedHandshakes, prometheus.CounterValue, float64(st.QueueFull), "queue_full")
	ch <- prometheus.MustNewConstMetric(descRefusedHandshakes, prometheus.CounterValue, float64(st.QueueTimeouts), "queue_timeout")
	ch <- prometheus.MustNewConstMetric(descSilent, prometheus.CounterValue, float64(st.SilentStreams))
	ch <- prometheus.MustNewConstSummary(descQueueWait, st.QueueServed, st.QueueWait.Seconds(), nil)
}
