package backoff_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/exchangekit/exchange/internal/backoff"
)

func TestCeiling(t *testing.T) {
	t.Parallel()
	def := backoff.Policy{Base: 500 * time.Millisecond, Max: 60 * time.Second}
	tests := []struct {
		name string
		p    backoff.Policy
		n    int
		want time.Duration
	}{
		{"first", def, 0, 500 * time.Millisecond},
		{"negative n counts as 0", def, -3, 500 * time.Millisecond},
		{"second", def, 1, time.Second},
		{"third", def, 2, 2 * time.Second},
		{"seventh", def, 6, 32 * time.Second},
		{"capped", def, 7, 60 * time.Second},
		{"capped far out", def, 62, 60 * time.Second},
		{"no overflow at 63", def, 63, 60 * time.Second},
		{"no overflow at 1000", def, 1000, 60 * time.Second},
		{"base above max", backoff.Policy{Base: 2 * time.Second, Max: time.Second}, 0, time.Second},
		{"zero base", backoff.Policy{Max: time.Second}, 5, 0},
		{"no cap", backoff.Policy{Base: time.Second}, 10, 1024 * time.Second},
		{"no cap saturates", backoff.Policy{Base: time.Second}, 200, math.MaxInt64},
		{"exact cap", backoff.Policy{Base: time.Second, Max: 4 * time.Second}, 2, 4 * time.Second},
		{"one below cap", backoff.Policy{Base: time.Second, Max: 4*time.Second - 1}, 2, 4*time.Second - 1},
	}
	for _, tt := range tests {
		if got := tt.p.Ceiling(tt.n); got != tt.want {
			t.Errorf("%s: %+v.Ceiling(%d) = %v, want %v", tt.name, tt.p, tt.n, got, tt.want)
		}
	}
}

func TestDelayFullJitter(t *testing.T) {
	t.Parallel()
	p := backoff.Policy{Base: 500 * time.Millisecond, Max: 60 * time.Second}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 12 {
		ceil := p.Ceiling(n)
		var lo, hi time.Duration = math.MaxInt64, 0
		const draws = 2000
		for range draws {
			d := p.Delay(n, r.Int64N)
			if d < 0 || d >= ceil {
				t.Fatalf("Delay(%d) = %v, want in [0, %v)", n, d, ceil)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter: the draws spread over the whole range, not just near
		// the ceiling (which "equal jitter" or no jitter would give).
		if lo > ceil/10 || hi < ceil*9/10 {
			t.Errorf("Delay(%d) over %d draws spans [%v, %v], want nearly all of [0, %v)", n, draws, lo, hi, ceil)
		}
	}
}

func TestDelaySeededIsDeterministic(t *testing.T) {
	t.Parallel()
	p := backoff.Policy{Base: 500 * time.Millisecond, Max: 60 * time.Second}
	a, b := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
	for n := range 10 {
		if da, db := p.Delay(n, a.Int64N), p.Delay(n, b.Int64N); da != db {
			t.Fatalf("Delay(%d) with equal seeds = %v and %v, want equal", n, da, db)
		}
	}
}

func TestDelayTable(t *testing.T) {
	t.Parallel()
	p := backoff.Policy{Base: 500 * time.Millisecond, Max: 60 * time.Second}
	top := func(m int64) int64 { return m - 1 } // the largest value allowed
	bottom := func(int64) int64 { return 0 }
	half := func(m int64) int64 { return m / 2 }
	tests := []struct {
		n    int
		r    func(int64) int64
		want time.Duration
	}{
		{0, top, 500*time.Millisecond - 1},
		{1, top, time.Second - 1},
		{3, top, 4*time.Second - 1},
		{20, top, 60*time.Second - 1},
		{0, bottom, 0},
		{20, bottom, 0},
		{2, half, time.Second},
	}
	for _, tt := range tests {
		if got := p.Delay(tt.n, tt.r); got != tt.want {
			t.Errorf("Delay(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
	called := false
	if got := (backoff.Policy{}).Delay(3, func(int64) int64 { called = true; return 0 }); got != 0 || called {
		t.Errorf("zero Policy: Delay = %v (rand called: %v), want 0 without calling rand", got, called)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    backoff.Policy
		good bool
	}{
		{backoff.Policy{Base: time.Second, Max: time.Minute}, true},
		{backoff.Policy{}, true},
		{backoff.Policy{Base: time.Second}, true},
		{backoff.Policy{Base: -1}, false},
		{backoff.Policy{Max: -1}, false},
		{backoff.Policy{Base: time.Minute, Max: time.Second}, false},
	}
	for _, tt := range tests {
		if err := tt.p.Validate(); (err == nil) != tt.good {
			t.Errorf("%+v.Validate() = %v, want valid=%v", tt.p, err, tt.good)
		}
	}
}

func TestEqualJitterTable(t *testing.T) {
	t.Parallel()
	s, m := time.Second, 5*time.Minute
	p := backoff.Policy{Base: s, Max: m}
	tests := []struct {
		p    backoff.Policy
		n    int
		u    float64
		want time.Duration
	}{
		{p, 0, 0, 500 * time.Millisecond},
		{p, 0, 0.5, 750 * time.Millisecond},
		{p, 0, 0.999999999, s - 1},
		{p, 1, 0, s},
		{p, 2, 1, 4 * s},
		{p, 4, 0, 8 * s},
		{p, 8, 1, 256 * s},
		{p, 9, 1, m}, // 512 s capped
		{p, 1000, 0, m / 2},
		{p, -2, 0, 500 * time.Millisecond},             // negative n counts as 0
		{p, 3, -1, 4 * s},                              // u clamped to 0
		{p, 3, 7, 8 * s},                               // u clamped to 1
		{backoff.Policy{Base: 3, Max: 100}, 0, 0.5, 1}, // odd ceiling: ⌊3/2⌋ + ⌊1·0.5⌋
		{backoff.Policy{Max: m}, 1 << 30, 1, 0},        // zero base
		{backoff.Policy{Base: s}, 10, 0, 512 * s},      // no cap
	}
	for _, tt := range tests {
		if got := tt.p.EqualJitter(tt.n, tt.u); got != tt.want {
			t.Errorf("%+v.EqualJitter(%d, %v) = %v, want %v", tt.p, tt.n, tt.u, got, tt.want)
		}
	}
}

func TestEqualJitterSpread(t *testing.T) {
	t.Parallel()
	p := backoff.Policy{Base: 500 * time.Millisecond, Max: 60 * time.Second}
	r := rand.New(rand.NewPCG(3, 4))
	for n := range 10 {
		ceil := p.Ceiling(n)
		for range 500 {
			if d := p.EqualJitter(n, r.Float64()); d < ceil/2 || d > ceil {
				t.Fatalf("EqualJitter(%d, rand) = %v, want in [%v, %v]", n, d, ceil/2, ceil)
			}
		}
	}
}
