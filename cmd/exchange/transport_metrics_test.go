package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/grpcchannel"
)

// The gRPC transport's limits before HELLO are metrics: here a stream that
// waits out its budget in the handshake queue is counted as a queue_timeout
// refusal, next to the place held and the connection open.
func TestTransportMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcchannel.NewServer(grpcchannel.WithLimits(grpcchannel.ServerLimits{
		MaxHandshakes: 1, MaxHandshakesPerSource: -1, HandshakeQueueWait: 100 * time.Millisecond}))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	}()
	d, err := grpcchannel.NewDialer(lis.Addr().String(), grpcchannel.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	defer c.Close()
	b, err := srv.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept() = %v", err)
	}
	defer b.Close()
	if _, err := d.Dial(ctx); !errors.Is(err, channel.ErrLimitExceeded) {
		t.Fatalf("Dial() over the limit = %v, want it refused after its wait in line", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(transportCollector{srv})
	want := `
# HELP exchange_grpc_connections Connections open on the gRPC port (counted by its listener).
# TYPE exchange_grpc_connections gauge
exchange_grpc_connections 1
# HELP exchange_grpc_handshakes_in_flight Connect streams holding a handshake place (not yet past HELLO).
# TYPE exchange_grpc_handshakes_in_flight gauge
exchange_grpc_handshakes_in_flight 1
# HELP exchange_grpc_handshakes_queued Connect streams waiting in line for a handshake place (--handshake-queue-wait).
# TYPE exchange_grpc_handshakes_queued gauge
exchange_grpc_handshakes_queued 0
# HELP exchange_grpc_handshake_queue_wait_seconds Time the Connect streams given a place by the handshake queue waited in line.
# TYPE exchange_grpc_handshake_queue_wait_seconds summary
exchange_grpc_handshake_queue_wait_seconds_sum 0
exchange_grpc_handshake_queue_wait_seconds_count 0
`
	names := []string{"exchange_grpc_connections", "exchange_grpc_handshakes_in_flight", "exchange_grpc_handshakes_queued", "exchange_grpc_handshake_queue_wait_seconds"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "exchange_grpc_handshake_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["queue_timeout"] != 1 || got["queue_full"] != 0 || got["limit"] != 0 {
		t.Errorf("exchange_grpc_handshake_refusals_total = %v, want queue_timeout 1", got)
	}
}
