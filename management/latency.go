package management

import (
	"fmt"
	"math"
	"net/http"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"

	"github.com/exchangekit/exchange/metrics"
)

// Latency is the body of GET /exchange/targets/:id/latency: the histogram of
// the durations of the commands sent to the target by this node (the
// metric exchange_target_command_duration_seconds), since it started. A
// target without sends, or past the metric's cap on targets (its sends count
// under target="_other"), has zero counts.
type Latency struct {
	TargetID   string  `json:"targetId"`
	Count      uint64  `json:"count"`
	SumSeconds float64 `json:"sumSeconds"`
	// Buckets hold the number of sends that took at most LeSeconds and
	// more than the previous bucket's bound (not cumulative); the last one,
	// LeSeconds null, those above every bound.
	Buckets []LatencyBucket `json:"buckets"`
}

// LatencyBucket is one bucket of a Latency.
type LatencyBucket struct {
	LeSeconds *float64 `json:"leSeconds"`
	Count     uint64   `json:"count"`
}

var errLatencyDisabled = &statusError{http.StatusNotImplemented, "per-target latency is not measured on this server (no " + metrics.TargetDurationName + " in its metrics)"}

func (s *Server) getLatency(c echo.Context) error {
	id := param(c, "id")
	mfs, err := s.gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return fmt.Errorf("management: gather metrics: %w", err)
	}
	var family *dto.MetricFamily
	for _, mf := range mfs {
		if mf.GetName() == metrics.TargetDurationName {
			family = mf
		}
	}
	if family == nil {
		return errLatencyDisabled
	}
	var own, any *dto.Histogram
	for _, m := range family.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		any = h
		for _, l := range m.GetLabel() {
			if l.GetName() == "target" && l.GetValue() == id {
				own = h
			}
		}
	}
	out := Latency{TargetID: id, Buckets: []LatencyBucket{}}
	src := own
	if src == nil {
		src = any // for the bounds only
	}
	if src == nil {
		return writeJSON(c, http.StatusOK, out)
	}
	var prev uint64
	for _, b := range src.GetBucket() {
		n := b.GetCumulativeCount()
		le := b.GetUpperBound()
		lb := LatencyBucket{}
		if !math.IsInf(le, +1) {
			lb.LeSeconds = &le
		}
		if own != nil {
			lb.Count = n - prev
		}
		prev = n
		out.Buckets = append(out.Buckets, lb)
	}
	if last := out.Buckets; len(last) == 0 || last[len(last)-1].LeSeconds != nil {
		lb := LatencyBucket{}
		if own != nil {
			lb.Count = own.GetSampleCount() - prev
		}
		out.Buckets = append(out.Buckets, lb)
	}
	if own != nil {
		out.Count, out.SumSeconds = own.GetSampleCount(), own.GetSampleSum()
	}
	return writeJSON(c, http.StatusOK, out)
}
