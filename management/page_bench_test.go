package management

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/cluster/standalone"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// BenchmarkFirstPage is the first page of GET /exchange/targets and of GET
// /exchange/channels (the default limit) from a real controller whose
// registry holds 1k, 10k and 100k channels, two per target (a fleet's
// usual shape), through the whole handler chain but without a network. A
// page must cost the same at every size: only its own targets are read.
func BenchmarkFirstPage(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		ctrl := pageController(b, n)
		s, err := New(Config{Logger: slog.New(slog.DiscardHandler)}, ctrl, nil, testRegistry())
		if err != nil {
			b.Fatal(err)
		}
		h := s.Handler()
		for _, path := range []string{"/exchange/targets", "/exchange/channels"} {
			b.Run(fmt.Sprintf("%s/channels=%dk", path[len("/exchange/"):], n/1000), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Fatalf("GET %s = %d %s", path, rec.Code, rec.Body)
					}
				}
			})
		}
	}
}

// pageController returns a controller (not running) whose registry holds n
// channels, two per target, registered by another node.
func pageController(b testing.TB, n int) *controller.Controller {
	b.Helper()
	st := standalone.New("node-a")
	b.Cleanup(func() { _ = st.Close() })
	ops := make([]state.Op, 0, min(n, 1000))
	flush := func() {
		if _, err := st.Apply(b.Context(), ops...); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range n {
		ops = append(ops, state.Op{Register: &state.RegisterChannel{Channel: state.Channel{
			ID:           fmt.Sprintf("ch-%07d", i),
			TargetID:     fmt.Sprintf("target-%06d", i/2),
			ConnectorID:  fmt.Sprintf("conn-%07d", i),
			NodeID:       "node-b",
			Active:       true,
			RegisteredAt: time.Unix(int64(i), 0),
			Metadata:     map[string]string{"version": "1.2.3"},
		}}})
		if len(ops) == cap(ops) {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
	ctrl, err := controller.New(controller.Config{NodeID: "node-a", Logger: slog.New(slog.DiscardHandler)},
		embedded.Listen(), st)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ctrl.Close() })
	return ctrl
}
