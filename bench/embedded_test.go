package bench

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exchangekit/exchange/bench/results"
)

// BenchmarkEmbeddedSideBySide measures only the embedded pairs of
// TestCompare (the embedded twin against raw Go channels, one at a time and
// 64 in flight), side by side in alternating slices as measureGroup does:
// one iteration is one round of 700 ms per contender and concurrency. Run it
// with -benchtime 3x (three rounds); it reports the median of the rounds'
// ratios (ours over raw, higher is better) and logs every round.
func BenchmarkEmbeddedSideBySide(b *testing.B) {
	embRT, chanRT := exchangeEmbedded(b), rawGoChan(b)
	ctx := b.Context()
	concs := []int{1, inFlight}
	ratios := make([][]float64, len(concs))
	for b.Loop() {
		for i, c := range concs {
			vs, err := measureGroup(ctx, []probe{{key(kEmbedded, c), c, single(embRT)}, {key(kGoChan, c), c, single(chanRT)}}, 700*time.Millisecond)
			if err != nil {
				b.Fatal(err)
			}
			ratios[i] = append(ratios[i], vs[0]/vs[1])
			b.Logf("%d in flight: ours %.0f req/s, raw %.0f req/s, ratio %.3f (load %s)", c, vs[0], vs[1], vs[0]/vs[1], loadAverage())
		}
	}
	for i, c := range concs {
		rs := slices.Clone(ratios[i])
		slices.Sort(rs)
		b.ReportMetric(results.Median(ratios[i]), "ratio"+key("", c)[1:])
		b.ReportMetric(rs[0], "min"+key("", c)[1:])
	}
}

// BenchmarkEmbeddedStress is the stress that found decision 0043's lost
// round trip: the embedded twin (fast path on) and raw Go channels take
// turns in slices of 100 ms, one at a time and 64 in flight, as
// BenchmarkEmbeddedSideBySide's rounds do, but every round trip is bounded
// by 10 s and a stuck one fails at once with a goroutine dump on stderr.
// One iteration is one round (14 slices per concurrency); run it with
// -benchtime Nx and -count to repeat.
func BenchmarkEmbeddedStress(b *testing.B) {
	embRT, chanRT := exchangeEmbedded(b), rawGoChan(b)
	for b.Loop() {
		for _, c := range []int{1, inFlight} {
			for s := range 7 {
				for j := range 2 {
					rt := embRT
					if (j+s)%2 == 1 {
						rt = chanRT
					}
					stressSlice(b, rt, c, sliceLen, fmt.Sprintf("%d in flight, slice %d", c, s))
				}
			}
		}
	}
}

// BenchmarkEmbeddedLingerStress aims at the lost round trip's window: a
// burst at 64 in flight (which grows the write queues), then round trips
// one at a time for longer than a parked writer lingers (1 s), so that the
// writers' lingers end while replies are written inline one after the
// other. One iteration is one burst and its sequel.
func BenchmarkEmbeddedLingerStress(b *testing.B) {
	embRT := exchangeEmbedded(b)
	for b.Loop() {
		stressSlice(b, embRT, inFlight, 50*time.Millisecond, "burst")
		stressSlice(b, embRT, 1, 1200*time.Millisecond, "one at a time after the burst")
	}
}

// stressSlice runs rt for d at conc in flight, every round trip bounded by
// 10 s; on a failure it dumps the goroutines on stderr and fails b.
func stressSlice(b *testing.B, rt roundTrip, conc int, d time.Duration, what string) {
	b.Helper()
	if err := stressRun(b, rt, conc, d); err != nil {
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		b.Fatalf("%s: %v", what, err)
	}
}

func stressRun(b *testing.B, rt roundTrip, conc int, d time.Duration) error {
	deadline := time.Now().Add(d)
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for once := true; (once || time.Now().Before(deadline)) && first.Load() == nil; once = false {
				ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
				err := rt(ctx)
				cancel()
				if err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return *err
	}
	return nil
}
