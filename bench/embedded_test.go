package bench

import (
	"slices"
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
