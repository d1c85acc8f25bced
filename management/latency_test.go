package management

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exchangekit/exchange/metrics"
)

func TestTargetLatency(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := metrics.NewTargetLatency(reg, 0)
	for _, d := range []time.Duration{200 * time.Microsecond, 300 * time.Microsecond, 40 * time.Millisecond, 2 * time.Minute} {
		l.Observe("t1", d)
	}
	s, err := New(Config{Logger: testLogger(t)}, newFakeExchange(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ts := serveHTTP(t, s)

	resp, body := do(t, ts, http.MethodGet, "/exchange/targets/t1/latency", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET latency: %d %s", resp.StatusCode, body)
	}
	var got Latency
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.TargetID != "t1" || got.Count != 4 || got.SumSeconds < 120 {
		t.Errorf("got %+v, want 4 sends of t1 summing over 120 s", got)
	}
	if n := len(got.Buckets); n != len(metrics.DurationBuckets)+1 {
		t.Fatalf("%d buckets, want %d", n, len(metrics.DurationBuckets)+1)
	}
	counts := map[float64]uint64{}
	var total uint64
	for _, b := range got.Buckets[:len(got.Buckets)-1] {
		counts[*b.LeSeconds] = b.Count
		total += b.Count
	}
	last := got.Buckets[len(got.Buckets)-1]
	if last.LeSeconds != nil || last.Count != 1 {
		t.Errorf("last bucket %+v, want the one send above 60 s", last)
	}
	if counts[0.00025] != 1 || counts[0.0005] != 1 || counts[0.05] != 1 || total != 3 {
		t.Errorf("bucket counts %v, want one in 0.25 ms, 0.5 ms and 50 ms", counts)
	}

	// A target without sends: the bounds, all counts zero.
	_, body = do(t, ts, http.MethodGet, "/exchange/targets/quiet/latency", "", nil)
	var quiet Latency
	if err := json.Unmarshal(body, &quiet); err != nil {
		t.Fatal(err)
	}
	if quiet.Count != 0 || len(quiet.Buckets) != len(got.Buckets) {
		t.Errorf("quiet target: %+v", quiet)
	}
	for _, b := range quiet.Buckets {
		if b.Count != 0 {
			t.Errorf("quiet target bucket %+v", b)
		}
	}
}

func TestTargetLatencyNotMeasuredIs501(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), nil))
	resp, body := do(t, ts, http.MethodGet, "/exchange/targets/t1/latency", "", nil)
	if resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("GET latency without the metric: %d %s, want 501", resp.StatusCode, body)
	}
}
