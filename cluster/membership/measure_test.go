package membership_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster/membership"
)

// The benchmarks below measure, on real memberlist over loopback, how long a
// join takes to reach every node and how long the others take to declare a
// stopped node dead, for the presets a Config can start from. They are
// measurements, not assertions; docs/benchmarks.md records their figures:
//
//	go test -run '^$' -bench 'Join|DeadDetection' -benchtime 10x ./cluster/membership/

// benchProfiles are the configurations compared.
var benchProfiles = []struct {
	name string
	cfg  func() membership.Config
}{
	{"default", membership.DefaultConfig},
	{"lan-probe200", func() membership.Config { // the default with LAN's 200 ms gossip
		c := membership.DefaultConfig()
		c.Timings.GossipInterval = 200 * time.Millisecond
		return c
	}},
	{"lan", func() membership.Config {
		c := membership.DefaultConfig()
		c.Profile, c.Timings = membership.ProfileLAN, membership.Timings{}
		return c
	}},
	{"local", func() membership.Config {
		c := membership.DefaultConfig()
		c.Profile, c.Timings = membership.ProfileLocal, membership.Timings{}
		return c
	}},
	{"local-rt4", func() membership.Config {
		c := membership.DefaultConfig()
		c.Profile, c.Timings = membership.ProfileLocal, membership.Timings{RetransmitMult: 4}
		return c
	}},
}

// benchCluster starts size nodes one after the other, each joining node-1,
// and returns them with, for each join after the first, how long it took
// from the joiner's Start to every node seeing it alive.
func benchCluster(b *testing.B, base func() membership.Config, size int) ([]node, []time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
	defer cancel()
	var nodes []node
	var joins []time.Duration
	for i := range size {
		cfg := base()
		cfg.NodeID = fmt.Sprintf("node-%d", i+1)
		cfg.BindAddr = "127.0.0.1:0"
		cfg.Logger = slog.New(slog.DiscardHandler)
		if i > 0 {
			cfg.Join = []string{nodes[0].LocalNode().Addr}
		}
		began := time.Now()
		m, err := membership.Start(ctx, cfg)
		if err != nil {
			b.Fatalf("Start() = %v", err)
		}
		nodes = append(nodes, node{Membership: m, watcher: watch(m)})
		for _, nd := range nodes {
			if err := nd.wait(ctx, stateIs(cfg.NodeID, membership.StateAlive)); err != nil {
				b.Fatalf("%s did not see %s alive: %v", nd.LocalNode().Meta.NodeID, cfg.NodeID, err)
			}
		}
		if i > 0 {
			joins = append(joins, time.Since(began))
		}
	}
	return nodes, joins
}

func closeAll(nodes []node) {
	for _, nd := range nodes {
		_ = nd.Close()
	}
}

// reportDurations reports the median, 90th percentile and maximum of ds in
// milliseconds, and logs them all.
func reportDurations(b *testing.B, prefix string, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(s[len(s)/2]), prefix+"-p50-ms")
	b.ReportMetric(ms(s[(len(s)*9)/10]), prefix+"-p90-ms")
	b.ReportMetric(ms(s[len(s)-1]), prefix+"-max-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("%s (%d samples, ms): %v", prefix, len(s), s)
}

// BenchmarkJoin forms a cluster per iteration and reports how long each join
// took to reach every node.
func BenchmarkJoin(b *testing.B) {
	for _, p := range benchProfiles {
		for _, size := range []int{3, 5} {
			b.Run(fmt.Sprintf("profile=%s/nodes=%d", p.name, size), func(b *testing.B) {
				var all []time.Duration
				for b.Loop() {
					nodes, joins := benchCluster(b, p.cfg, size)
					all = append(all, joins...)
					b.StopTimer()
					closeAll(nodes)
					b.StartTimer()
				}
				reportDurations(b, "join", all)
			})
		}
	}
}

// BenchmarkDeadDetection forms a cluster per iteration, stops one node
// without Leave, and reports how long until every other node saw it dead.
func BenchmarkDeadDetection(b *testing.B) {
	for _, p := range benchProfiles {
		for _, size := range []int{3, 5} {
			b.Run(fmt.Sprintf("profile=%s/nodes=%d", p.name, size), func(b *testing.B) {
				var all []time.Duration
				for b.Loop() {
					nodes, _ := benchCluster(b, p.cfg, size)
					victim := nodes[size-1]
					id := victim.LocalNode().Meta.NodeID
					stopped := time.Now()
					_ = victim.Close()
					ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
					for _, nd := range nodes[:size-1] {
						if err := nd.wait(ctx, stateIs(id, membership.StateDead)); err != nil {
							b.Fatalf("%s did not see %s dead: %v", nd.LocalNode().Meta.NodeID, id, err)
						}
					}
					all = append(all, time.Since(stopped))
					cancel()
					closeAll(nodes)
				}
				reportDurations(b, "dead", all)
			})
		}
	}
}
