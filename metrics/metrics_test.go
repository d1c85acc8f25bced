package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/metrics"
)

func TestOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{nil, metrics.OutcomeOK},
		{fmt.Errorf("send: %w", context.DeadlineExceeded), metrics.OutcomeTimeout},
		{fmt.Errorf("send: %w", channel.ErrClosed), metrics.OutcomeClosed},
		{controller.ErrClosed, metrics.OutcomeClosed},
		{fmt.Errorf("send: %w", &controller.NoChannelError{TargetID: "t1"}), metrics.OutcomeNoChannel},
		{&channel.UnknownCommandError{Type: "X"}, metrics.OutcomeUnknownCommand},
		{fmt.Errorf("send: %w", &channel.RemoteError{Type: "X", Message: "boom"}), metrics.OutcomeRemoteError},
		{&channel.BusyError{RetryAfter: time.Second}, metrics.OutcomeBusy},
		{context.Canceled, metrics.OutcomeError},
		{errors.New("other"), metrics.OutcomeError},
	}
	for _, tt := range tests {
		if got := metrics.Outcome(tt.err); got != tt.want {
			t.Errorf("Outcome(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

type fakeSource struct {
	channels []controller.ChannelInfo
	targets  []controller.TargetInfo
}

func (s fakeSource) Channels() []controller.ChannelInfo { return s.channels }
func (s fakeSource) Targets() []controller.TargetInfo   { return s.targets }

func newFakeSource() fakeSource {
	c1 := controller.ChannelInfo{ID: "c1", TargetID: "t1", Active: true, Primary: true, Local: true, InFlight: 3}
	c2 := controller.ChannelInfo{ID: "c2", TargetID: "t1", Active: false, Local: true, InFlight: 1}
	c3 := controller.ChannelInfo{ID: "c3", TargetID: "t2", Active: true, Local: false, InFlight: 7} // remote: not counted
	return fakeSource{
		channels: []controller.ChannelInfo{c1, c2, c3},
		targets: []controller.TargetInfo{
			{ID: "t1", PrimaryID: "c1", Epoch: 2, Channels: []controller.ChannelInfo{c1, c2}},
			{ID: "t2", Channels: []controller.ChannelInfo{c3}},
		},
	}
}

func TestControllerCounters(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewController(reg, nil)

	m.Sent("ECHO", 2*time.Millisecond, nil)
	m.Sent("ECHO", 3*time.Millisecond, nil)
	m.Sent("ECHO", time.Second, context.DeadlineExceeded)
	m.Sent("PING", time.Millisecond, &channel.BusyError{})
	m.Handled("STATUS", time.Millisecond, command.StatusSucceeded)
	m.Handled("STATUS", time.Millisecond, command.StatusError)
	m.HelloRejected("unauthenticated")
	m.HealthCheckFailed("timeout")
	m.HealthCheckFailed("timeout")
	m.OnEvent(controller.Event{Kind: controller.EventPrimaryElected, TargetID: "t1"})
	m.OnEvent(controller.Event{Kind: controller.EventPrimaryEvicted, TargetID: "t1"})
	m.OnEvent(controller.Event{Kind: controller.EventPrimaryElected, TargetID: "t2"})

	want := `
# HELP exchange_commands_total Commands sent by this controller node, by type and outcome (ok, timeout, closed, no_channel, unknown_command, remote_error, busy, error).
# TYPE exchange_commands_total counter
exchange_commands_total{outcome="busy",type="PING"} 1
exchange_commands_total{outcome="ok",type="ECHO"} 2
exchange_commands_total{outcome="timeout",type="ECHO"} 1
# HELP exchange_commands_handled_total Commands from connectors handled by this controller node, by type and reply status.
# TYPE exchange_commands_handled_total counter
exchange_commands_handled_total{status="ERROR",type="STATUS"} 1
exchange_commands_handled_total{status="SUCCEEDED",type="STATUS"} 1
# HELP exchange_hello_rejections_total HELLO handshakes refused by this controller node, by reason (unauthenticated, protocol, timeout, rate_limited, limit).
# TYPE exchange_hello_rejections_total counter
exchange_hello_rejections_total{reason="limit"} 0
exchange_hello_rejections_total{reason="protocol"} 0
exchange_hello_rejections_total{reason="rate_limited"} 0
exchange_hello_rejections_total{reason="timeout"} 0
exchange_hello_rejections_total{reason="unauthenticated"} 1
# HELP exchange_health_check_failures_total Health checks of local channels that failed, by reason (unhealthy, timeout, error).
# TYPE exchange_health_check_failures_total counter
exchange_health_check_failures_total{reason="error"} 0
exchange_health_check_failures_total{reason="timeout"} 2
exchange_health_check_failures_total{reason="unhealthy"} 0
# HELP exchange_elections_total Primary channel elections seen by this controller node.
# TYPE exchange_elections_total counter
exchange_elections_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"exchange_commands_total", "exchange_commands_handled_total", "exchange_hello_rejections_total",
		"exchange_health_check_failures_total", "exchange_elections_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(reg, "exchange_command_duration_seconds"); got != 2 {
		t.Errorf("duration histogram series = %d, want 2 (ECHO, PING)", got)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint() = %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestDurationHistogramBuckets(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.NewController(reg, nil)
	m.Sent("ECHO", 150*time.Microsecond, nil) // first bucket above 100 µs
	m.Sent("ECHO", 45*time.Second, nil)       // below the 60 s bucket
	m.Sent("ECHO", 2*time.Minute, nil)        // +Inf only

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "exchange_command_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		bs := h.GetBucket()
		if first, last := bs[0].GetUpperBound(), bs[len(bs)-1].GetUpperBound(); first != 0.0001 || last != 60 {
			t.Errorf("buckets = [%v … %v], want [0.0001 … 60]", first, last)
		}
		if got := bs[0].GetCumulativeCount(); got != 0 {
			t.Errorf("bucket le=0.0001 = %d, want 0", got)
		}
		if got := bs[1].GetCumulativeCount(); got != 1 {
			t.Errorf("bucket le=0.00025 = %d, want 1", got)
		}
		if got := bs[len(bs)-1].GetCumulativeCount(); got != 2 {
			t.Errorf("bucket le=60 = %d, want 2", got)
		}
		if got := h.GetSampleCount(); got != 3 {
			t.Errorf("sample count = %d, want 3", got)
		}
		return
	}
	t.Fatal("exchange_command_duration_seconds not gathered")
}

const stateWant = `
# HELP exchange_channels Registered channels in the cluster, by state (active, inactive).
# TYPE exchange_channels gauge
exchange_channels{state="active"} 2
exchange_channels{state="inactive"} 1
# HELP exchange_channels_in_flight Commands awaiting a reply on the channels held by this node.
# TYPE exchange_channels_in_flight gauge
exchange_channels_in_flight 4
# HELP exchange_primaries Targets that have a primary channel.
# TYPE exchange_primaries gauge
exchange_primaries 1
# HELP exchange_targets Targets with at least one registered channel.
# TYPE exchange_targets gauge
exchange_targets 2
`

func TestStateCollector(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	metrics.NewController(reg, newFakeSource())
	names := []string{"exchange_channels", "exchange_channels_in_flight", "exchange_primaries", "exchange_targets", "exchange_batches"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(stateWant), names...); err != nil {
		t.Error(err)
	}
}

func TestStateCollectorWithBatches(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	counts := map[string]int{"PENDING": 2, "SUCCEEDED": 5, "WEIRD": 1}
	metrics.NewController(reg, metrics.WithBatchCounts(newFakeSource(), func() map[string]int { return counts }))
	want := stateWant + `
# HELP exchange_batches Batches, by status.
# TYPE exchange_batches gauge
exchange_batches{status="CREATED"} 0
exchange_batches{status="ERROR"} 0
exchange_batches{status="IN_PROGRESS"} 0
exchange_batches{status="PENDING"} 2
exchange_batches{status="SUCCEEDED"} 5
exchange_batches{status="WEIRD"} 1
`
	names := []string{"exchange_channels", "exchange_channels_in_flight", "exchange_primaries", "exchange_targets", "exchange_batches"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestStateCollectorReadsAtScrapeTime(t *testing.T) {
	t.Parallel()
	src := &mutableSource{}
	reg := prometheus.NewRegistry()
	metrics.NewController(reg, src)
	if got := testutil.ToFloat64(gaugeOf(t, reg, "exchange_targets")); got != 0 {
		t.Fatalf("exchange_targets = %v, want 0", got)
	}
	src.fakeSource = newFakeSource()
	if got := testutil.ToFloat64(gaugeOf(t, reg, "exchange_targets")); got != 2 {
		t.Fatalf("exchange_targets after change = %v, want 2", got)
	}
}

type mutableSource struct{ fakeSource }

// gaugeOf returns a collector that gathers only the named family of reg.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Errorf("Gather() = %v", err)
			return
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				desc := prometheus.NewDesc(name, "copy", nil, nil)
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, mf.GetMetric()[0].GetGauge().GetValue())
			}
		}
	})
}

type collectorFunc func(ch chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

func TestNilRegistererCountsWithoutRegistering(t *testing.T) {
	t.Parallel()
	m := metrics.NewController(nil, newFakeSource())
	m.Sent("ECHO", time.Millisecond, nil) // must not panic
	c := metrics.NewConnector(nil)
	c.Connected()
}

func TestConnector(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewConnector(reg)

	m.Connected()
	m.Primary(true, 3)
	m.Handled("ECHO", time.Millisecond, command.StatusSucceeded)
	m.Handled("ECHO", time.Millisecond, command.StatusSucceeded)
	m.Handled("ECHO", time.Millisecond, command.StatusError)
	m.Sent("REPORT", time.Millisecond, fmt.Errorf("x: %w", channel.ErrClosed))
	m.Disconnected()
	m.Connected()
	m.Disconnected()
	m.Connected()

	want := `
# HELP exchange_connector_connected 1 while the connector has a channel to a controller, else 0.
# TYPE exchange_connector_connected gauge
exchange_connector_connected 1
# HELP exchange_connector_reconnects_total Channels established after the first one (reconnections).
# TYPE exchange_connector_reconnects_total counter
exchange_connector_reconnects_total 2
# HELP exchange_connector_primary 1 while the connector is the primary of its target, else 0.
# TYPE exchange_connector_primary gauge
exchange_connector_primary 0
# HELP exchange_connector_primary_epoch Epoch of the last PRIMARY message received.
# TYPE exchange_connector_primary_epoch gauge
exchange_connector_primary_epoch 3
# HELP exchange_connector_commands_handled_total Commands from the controller handled by the connector, by type and reply status.
# TYPE exchange_connector_commands_handled_total counter
exchange_connector_commands_handled_total{status="ERROR",type="ECHO"} 1
exchange_connector_commands_handled_total{status="SUCCEEDED",type="ECHO"} 2
# HELP exchange_connector_commands_total Commands sent by the connector to its controller, by type and outcome.
# TYPE exchange_connector_commands_total counter
exchange_connector_commands_total{outcome="closed",type="REPORT"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"exchange_connector_connected", "exchange_connector_reconnects_total", "exchange_connector_primary",
		"exchange_connector_primary_epoch", "exchange_connector_commands_handled_total",
		"exchange_connector_commands_total"); err != nil {
		t.Error(err)
	}

	m.Primary(true, 4)
	if got := testutil.ToFloat64(primaryGauge(t, reg)); got != 1 {
		t.Errorf("exchange_connector_primary = %v, want 1", got)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint() = %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func primaryGauge(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	return gaugeOf(t, reg, "exchange_connector_primary")
}

func TestCountBatches(t *testing.T) {
	t.Parallel()
	list := func(f batch.Filter) []batch.Batch {
		if f != (batch.Filter{}) {
			t.Errorf("CountBatches listed with filter %+v, want none", f)
		}
		return []batch.Batch{{Status: batch.StatusPending}, {Status: batch.StatusPending}, {Status: batch.StatusError}}
	}
	got := metrics.CountBatches(list)()
	if got["PENDING"] != 2 || got["ERROR"] != 1 || len(got) != 2 {
		t.Errorf("CountBatches() = %v, want PENDING 2, ERROR 1", got)
	}
}

// TestBatchStatusesMatchBatchPackage keeps BatchStatuses in step with the
// statuses of package batch.
func TestBatchStatusesMatchBatchPackage(t *testing.T) {
	t.Parallel()
	var want []string
	for s := batch.StatusCreated; s <= batch.StatusError; s++ {
		want = append(want, s.String())
	}
	if !slices.Equal(metrics.BatchStatuses, want) {
		t.Errorf("BatchStatuses = %v, want %v", metrics.BatchStatuses, want)
	}
}
