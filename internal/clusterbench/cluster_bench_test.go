package clusterbench

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/cluster/membership"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/cputime"
	"github.com/exchangekit/exchange/state"
)

// payload is the ~100-byte body echoed (the same as bench/compare_test.go).
var payload = []byte(`{"op":"set","key":"device/42/config","value":"brightness=80;mode=auto;interval=30s;x=1"}`)

// inFlight is the number of concurrent senders in the pipelined variant.
const inFlight = 64

// target is the target every benchmark's connectors join.
const target = "t"

// setupTimeout bounds every wait of a benchmark's set-up and of one
// failover: a benchmark that cannot make progress fails instead of hanging.
const setupTimeout = 30 * time.Second

var discard = slog.New(slog.DiscardHandler)

// startController runs a controller on m's node and gRPC server until
// stop is called (or the benchmark ends).
func startController(b testing.TB, m *clustertest.Member) (ctrl *controller.Controller, stop func()) {
	b.Helper()
	cfg := controller.DefaultConfig()
	cfg.Logger = discard
	ctrl, err := controller.New(cfg, m.Server(), m.Node())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = ctrl.Run(context.Background()) }()
	var once sync.Once
	stop = func() { once.Do(func() { _ = ctrl.Close(); <-done }) }
	b.Cleanup(stop)
	return ctrl, stop
}

// startConnector runs a connector of target, answering ECHO, connected to
// m's gRPC address, until stop is called (or the benchmark ends).
func startConnector(b testing.TB, m *clustertest.Member, id string) (stop func()) {
	b.Helper()
	mux := command.NewMux()
	mux.RegisterFunc("ECHO", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: c.Payload}, nil
	})
	return startConnectorMux(b, m, id, mux)
}

// startConnectorMux is startConnector answering with mux.
func startConnectorMux(b testing.TB, m *clustertest.Member, id string, mux *command.Mux) (stop func()) {
	b.Helper()
	d, err := grpcchannel.NewDialer(m.GRPCAddr(), grpcchannel.WithInsecure())
	if err != nil {
		b.Fatal(err)
	}
	cfg := connector.DefaultConfig()
	cfg.TargetID, cfg.ConnectorID = target, id
	cfg.Logger = discard
	cfg.Channel.MaxHandlers = 4 * inFlight
	conn, err := connector.New(cfg, mux, d)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = conn.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() { _ = conn.Close(); cancel(); <-done; _ = d.Close() })
	}
	b.Cleanup(stop)
	wctx, wcancel := context.WithTimeout(ctx, setupTimeout)
	defer wcancel()
	if err := conn.WaitConnected(wctx); err != nil {
		b.Fatal(err)
	}
	return stop
}

// waitFor polls cond every 5 ms until it holds; it fails the benchmark after
// setupTimeout.
func waitFor(b testing.TB, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(setupTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// channelsOn returns target's channels in the state of m's node.
func channelsOn(m *clustertest.Member) []*state.Channel {
	var out []*state.Channel
	m.Node().View(func(s *state.State) { out = s.TargetChannels(target) })
	return out
}

// primaryOn returns target's primary in the state of m's node: its node
// and epoch ("" when none).
func primaryOn(m *clustertest.Member) (node string, epoch uint64) {
	m.Node().View(func(s *state.State) {
		p := s.Primaries[target]
		if p == nil || p.ChannelID == "" {
			return
		}
		if c := s.Channels[p.ChannelID]; c != nil {
			node, epoch = c.NodeID, p.Epoch
		}
	})
	return node, epoch
}

func echo(ctx context.Context, ctrl *controller.Controller) error {
	r, err := ctrl.Send(ctx, target, &command.Command{Type: "ECHO", Payload: payload})
	if err != nil {
		return err
	}
	if len(r.Payload) != len(payload) {
		return fmt.Errorf("echo: got %d bytes", len(r.Payload))
	}
	return nil
}

// BenchmarkForward measures controller.Send of a 100-byte ECHO to a target
// whose one connector (gRPC, loopback) is on node A of a 3-node harness:
// sent through A's controller (local) and through B's (forwarded over B's
// link to A, one hop). Sequential is one at a time; InFlight64 is 64
// goroutines sending at once. Compare Local and Forwarded within one run.
//
//	go test -run '^$' -bench Forward -benchmem -benchtime 2s -count 3 ./internal/clusterbench/
func BenchmarkForward(b *testing.B) {
	h := clustertest.NewHarness(b, 3, nil)
	a := h.Leader()
	other := h.Followers()[0]
	ctrlA, _ := startController(b, a)
	ctrlB, _ := startController(b, other)
	startConnector(b, a, "conn-a")
	waitFor(b, "the channel in B's state", func() bool { return len(channelsOn(other)) == 1 })
	var lastErr error
	b.Cleanup(func() {
		if b.Failed() {
			b.Logf("last forwarded send: %v", lastErr)
		}
	})
	waitFor(b, "a forwarded send", func() bool { lastErr = echo(b.Context(), ctrlB); return lastErr == nil })

	for _, c := range []struct {
		name string
		ctrl *controller.Controller
	}{{"Local", ctrlA}, {"Forwarded", ctrlB}} {
		b.Run(c.name+"/Sequential", func(b *testing.B) {
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if err := echo(ctx, c.ctrl); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
		b.Run(fmt.Sprintf("%s/InFlight%d", c.name, inFlight), func(b *testing.B) {
			ctx := b.Context()
			b.ReportAllocs()
			var next atomic.Int64
			var failed atomic.Pointer[error]
			var wg sync.WaitGroup
			n := int64(b.N)
			b.ResetTimer()
			for range inFlight {
				wg.Go(func() {
					for next.Add(1) <= n {
						if err := echo(ctx, c.ctrl); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// forwardSlice is how many requests each slice of BenchmarkForwardInterleaved
// sends, 64 at a time.
const forwardSlice = 4096

// BenchmarkForwardInterleaved is BenchmarkForward's InFlight64 with the two
// contenders interleaved: each iteration sends forwardSlice requests, 64 in
// flight, through the local controller, then as many through the
// forwarding one, so that both see the same neighbours on a shared machine.
// It reports local-req/s and forwarded-req/s over the whole run, and the
// ratio forwarded/local per iteration (ratio-p50, ratio-min, ratio-max) and
// over the whole run (ratio). It also reports the process's CPU time per
// request of each (cpu-µs/req) and their ratio (cpu-ratio): on a machine
// whose other tenants take CPU, the wall-clock ratio measures waits for a
// processor as much as work. ns/op is per slice pair.
//
//	go test -run '^$' -bench ForwardInterleaved -benchtime 20x -count 3 ./internal/clusterbench/
func BenchmarkForwardInterleaved(b *testing.B) {
	h := clustertest.NewHarness(b, 3, nil)
	a := h.Leader()
	other := h.Followers()[0]
	ctrlA, _ := startController(b, a)
	ctrlB, _ := startController(b, other)
	startConnector(b, a, "conn-a")
	waitFor(b, "the channel in B's state", func() bool { return len(channelsOn(other)) == 1 })
	waitFor(b, "a forwarded send", func() bool { return echo(b.Context(), ctrlB) == nil })

	ctx := b.Context()
	slice := func(ctrl *controller.Controller) (wall, cpu time.Duration) {
		var next atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		start, cpu0 := time.Now(), cputime.Self()
		for range inFlight {
			wg.Go(func() {
				for next.Add(1) <= forwardSlice {
					if err := echo(ctx, ctrl); err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
				}
			})
		}
		wg.Wait()
		wall, cpu = time.Since(start), cputime.Self()-cpu0
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		return wall, cpu
	}
	var local, forwarded, localCPU, forwardedCPU time.Duration
	var ratios []float64
	for b.Loop() {
		l, lc := slice(ctrlA)
		f, fc := slice(ctrlB)
		local, forwarded = local+l, forwarded+f
		localCPU, forwardedCPU = localCPU+lc, forwardedCPU+fc
		ratios = append(ratios, l.Seconds()/f.Seconds())
	}
	n := float64(b.N * forwardSlice)
	b.ReportMetric(n/local.Seconds(), "local-req/s")
	b.ReportMetric(n/forwarded.Seconds(), "forwarded-req/s")
	b.ReportMetric(local.Seconds()/forwarded.Seconds(), "ratio")
	// The process's CPU time per request (every node's share, background
	// work included): what the throughput would be on a machine with no
	// neighbours, and the ratio it predicts.
	b.ReportMetric(float64(localCPU.Microseconds())/n, "local-cpu-µs/req")
	b.ReportMetric(float64(forwardedCPU.Microseconds())/n, "forwarded-cpu-µs/req")
	if forwardedCPU > 0 {
		b.ReportMetric(localCPU.Seconds()/forwardedCPU.Seconds(), "cpu-ratio")
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[(len(ratios)-1)/2], "ratio-p50")
	b.ReportMetric(ratios[0], "ratio-min")
	b.ReportMetric(ratios[len(ratios)-1], "ratio-max")
}

// raftLibraryDefaults sets hashicorp/raft's own DefaultConfig timings (1 s
// heartbeat and election timeouts, 500 ms leader lease), for comparison
// with cluster.DefaultConfig's 150 ms / 500 ms / 150 ms.
func raftLibraryDefaults(c *cluster.Config) {
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
}

// samples collects one duration per iteration and reports p50 and max.
type samples []time.Duration

func (s samples) report(b *testing.B, name string) {
	if len(s) == 0 {
		return
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(sorted[(len(sorted)-1)/2]), name+"-p50-ms")
	b.ReportMetric(ms(sorted[len(sorted)-1]), name+"-max-ms")
}

// BenchmarkLeaderFailover measures, per iteration, a fresh 3-node harness
// whose raft leader is stopped as a crash would stop it (Harness.Stop: no
// leave): the time from the stop until both survivors are ready and agree on
// a new leader (polled every 5 ms). ns/op is the mean; failover-p50-ms and
// failover-max-ms the median and the worst. Set-up is not timed.
//
//	go test -run '^$' -bench LeaderFailover -benchtime 10x ./internal/clusterbench/
func BenchmarkLeaderFailover(b *testing.B) {
	for _, c := range []struct {
		name      string
		configure func(*cluster.Config)
	}{{"default", nil}, {"raft-defaults", raftLibraryDefaults}} {
		b.Run(c.name, func(b *testing.B) {
			var s samples
			for b.Loop() {
				b.StopTimer()
				h := clustertest.NewHarnessConfig(b, 3, nil, c.configure)
				old := h.Leader()
				b.StartTimer()
				start := time.Now()
				h.Stop(old)
				waitFor(b, "a new leader", func() bool { return agreedLeader(h, old.ID) })
				s = append(s, time.Since(start))
				b.StopTimer()
				h.Close()
				b.StartTimer()
			}
			s.report(b, "failover")
		})
	}
}

// agreedLeader reports whether every running node of h is ready and they
// agree on one leader other than old.
func agreedLeader(h *clustertest.Harness, old string) bool {
	leader := ""
	for _, m := range h.Nodes() {
		n := m.Node()
		if n == nil {
			continue
		}
		id := n.LeaderID()
		if n.Ready() != nil || id == "" || id == old || (leader != "" && id != leader) {
			return false
		}
		leader = id
	}
	return leader != ""
}

// BenchmarkNodeLoss measures, per iteration, a fresh 3-node harness with a
// controller on every node and one target with two connectors: the first
// (the primary) on node B, the second on node C. B is a follower, or the
// raft leader (leader/…: a raft election as well). B crashes: its
// node is closed first (no leave, no unregister can get out), then its gRPC
// server. Measured from the crash until the state of both survivors shows
// the primary on C with a higher epoch (state-ms) and then until a
// SendPrimary through the third node A's controller, forwarded to C, succeeds
// (recovered-ms; ns/op is its mean: only the failover is timed, set-up and
// tear-down are not). "default" is membership.DefaultConfig (200 ms
// probes, about 1.1 s to declare a node dead); "tuned" sets
// ClusterConfig.GossipTimings to 100 ms probes, 50 ms probe timeout and
// SuspicionMult 3.
//
//	go test -run '^$' -bench NodeLoss -benchtime 10x ./internal/clusterbench/
func BenchmarkNodeLoss(b *testing.B) {
	for _, c := range []struct {
		name      string
		configure func(*cluster.Config)
		leader    bool
	}{
		{"follower/default", nil, false},
		{"follower/tuned", tunedGossip, false},
		{"leader/default", nil, true},
		{"leader/tuned", tunedGossip, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var detected, recovered samples
			for b.Loop() {
				d, r := nodeLoss(b, c.configure, c.leader)
				detected, recovered = append(detected, d), append(recovered, r)
			}
			detected.report(b, "state")
			recovered.report(b, "recovered")
		})
	}
}

// tunedGossip halves the default probe interval and timeout and shortens
// the suspicion: dead detection in about 0.1 s·(1 + 3) plus one probe.
func tunedGossip(c *cluster.Config) {
	c.Cluster.GossipTimings = membership.Timings{ProbeInterval: 100 * time.Millisecond,
		ProbeTimeout: 50 * time.Millisecond, SuspicionMult: 3}
}

// nodeLoss runs one node-loss failover and returns how long the survivors'
// state took to move the primary, and how long until a send succeeded. Only
// the failover runs with b's timer on.
func nodeLoss(b *testing.B, configure func(*cluster.Config), leader bool) (detected, recovered time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	h := clustertest.NewHarnessConfig(b, 3, nil, configure)
	defer h.Close()
	l := h.Leader()
	fs := h.Followers()
	a, nb, nc := l, fs[0], fs[1] // B, the node lost, is a follower
	if leader {
		a, nb = fs[0], l // B is the raft leader: an election too
	}
	ctrlA, stopA := startController(b, a)
	defer stopA()
	_, stopB := startController(b, nb)
	defer stopB()
	_, stopC := startController(b, nc)
	defer stopC()

	stopConnB := startConnector(b, nb, "conn-b")
	defer stopConnB()
	waitFor(b, "the primary on B", func() bool { p, _ := primaryOn(a); return p == nb.ID })
	stopConnC := startConnector(b, nc, "conn-c")
	defer stopConnC()
	var epoch uint64
	waitFor(b, "both channels everywhere", func() bool {
		for _, m := range []*clustertest.Member{a, nb, nc} {
			p, e := primaryOn(m)
			if len(channelsOn(m)) != 2 || p != nb.ID {
				return false
			}
			epoch = e
		}
		return true
	})

	survivors := []*clustertest.Member{a, nc}
	b.StartTimer()
	defer b.StopTimer() // before the deferred tear-down
	start := time.Now()
	_ = nb.Node().Close() // the crash: raft and gossip go silent first
	h.Stop(nb)            // then its connections drop
	waitFor(b, "the primary on C", func() bool {
		for _, m := range survivors {
			if p, e := primaryOn(m); p != nc.ID || e <= epoch {
				return false
			}
		}
		return true
	})
	detected = time.Since(start)
	waitFor(b, "a send to C", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := ctrlA.SendPrimary(ctx, target, &command.Command{Type: "ECHO", Payload: payload})
		return err == nil
	})
	return detected, time.Since(start)
}
