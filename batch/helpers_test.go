package batch_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	// defaultTestTimeout bounds every wait. Inside a synctest bubble it is
	// fake time, so it also bounds how far a broken test lets the clock run.
	defaultTestTimeout = 10 * time.Second
	// longTestTimeout bounds waits that legitimately span fake hours
	// (retention) inside a synctest bubble.
	longTestTimeout = 72 * time.Hour
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger logs to t.Log until the test ends.
func testLogger(t testing.TB) *slog.Logger {
	g := &logGate{}
	t.Cleanup(func() {
		g.mu.Lock()
		g.done = true
		g.mu.Unlock()
	})
	return slog.New(&tbHandler{t: t, g: g})
}

// logGate stops logging once the test has ended (t.Log would panic).
type logGate struct {
	mu   sync.Mutex // protects done
	done bool
}

type tbHandler struct {
	t     testing.TB
	g     *logGate
	attrs []slog.Attr
}

func (h *tbHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *tbHandler) Handle(_ context.Context, r slog.Record) error {
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	if h.g.done {
		return nil
	}
	line := r.Level.String() + " " + r.Message
	for _, a := range h.attrs {
		line += " " + a.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	h.t.Log(line)
	return nil
}

func (h *tbHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *tbHandler) WithGroup(string) slog.Handler { return h }

// advance lets fake time pass inside a synctest bubble (the clock jumps as
// soon as every goroutine of the bubble is blocked).
func advance(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}
