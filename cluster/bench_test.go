package cluster_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/cluster"
	"github.com/exchangekit/exchange/state"
)

// benchConfig is the production configuration (DefaultConfig timings, fsync
// on every log write) on a temporary directory on the real disk.
func benchConfig(b *testing.B) cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.NodeID = "node-1"
	cfg.DataDir = b.TempDir()
	cfg.RaftAddr = "127.0.0.1:0"
	return cfg
}

// BenchmarkApply measures Apply of one op per call, sequentially and from
// 256 goroutines (raft groups pending entries into one disk write), and
// reports ops/s and how many entries each fsync carried.
//
//	go test -run '^$' -bench Apply -benchtime 2000x ./cluster/
func BenchmarkApply(b *testing.B) {
	b.Run("sequential", func(b *testing.B) {
		n := open(b, benchConfig(b))
		ctx := b.Context() // each Apply is bounded by Config.ApplyTimeout; the run by -benchtime
		before := n.Stats()
		for i := 0; b.Loop(); i++ {
			if err := state.Err(n.Apply(ctx, register(fmt.Sprintf("c-%d", i), "t"))); err != nil {
				b.Fatal(err)
			}
		}
		report(b, before, n.Stats())
	})
	b.Run("concurrent256", func(b *testing.B) {
		n := open(b, benchConfig(b))
		ctx := b.Context() // each Apply is bounded by Config.ApplyTimeout; the run by -benchtime
		var next atomic.Int64
		b.SetParallelism((256 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		before := n.Stats()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1)
				if err := state.Err(n.Apply(ctx, register(fmt.Sprintf("c-%d", i), fmt.Sprintf("t-%d", i%256)))); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		report(b, before, n.Stats())
	})
}

func report(b *testing.B, before, after cluster.Stats) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	if w := after.LogWrites - before.LogWrites; w > 0 {
		b.ReportMetric(float64(after.LogEntries-before.LogEntries)/float64(w), "entries/fsync")
	}
}

// BenchmarkOpen measures single-node start-up: Open of a fresh directory
// (bootstrap, election, barrier) and of an existing one, with the default
// HeartbeatTimeout and with raft's own default (1 s).
//
//	go test -run '^$' -bench Open -benchtime 10x ./cluster/
func BenchmarkOpen(b *testing.B) {
	for _, hb := range []time.Duration{20 * time.Millisecond, 150 * time.Millisecond, time.Second} {
		cfgFor := func(b *testing.B, dir string) cluster.Config {
			cfg := benchConfig(b)
			cfg.DataDir = dir
			cfg.HeartbeatTimeout = hb
			cfg.LeaderLeaseTimeout = hb
			cfg.ElectionTimeout = max(hb, cfg.ElectionTimeout)
			return cfg
		}
		b.Run(fmt.Sprintf("fresh/heartbeat=%v", hb), func(b *testing.B) {
			for b.Loop() {
				n, err := cluster.Open(testCtx(b), cfgFor(b, b.TempDir()))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := n.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/open")
		})
		b.Run(fmt.Sprintf("reopen/heartbeat=%v", hb), func(b *testing.B) {
			dir := b.TempDir()
			n, err := cluster.Open(testCtx(b), cfgFor(b, dir))
			if err != nil {
				b.Fatal(err)
			}
			if err := n.Close(); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				n, err := cluster.Open(testCtx(b), cfgFor(b, dir))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := n.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/open")
		})
	}
}
