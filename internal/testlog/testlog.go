// Package testlog gives tests a logger that writes to t.Log until the test
// ends: libraries such as raft and memberlist log from goroutines that may
// outlive a test, and t.Log after the test ends panics.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a text logger at level writing to t.Log until t ends.
func New(t testing.TB, level slog.Level) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type writer struct {
	mu   sync.Mutex // protects done; held while logging
	t    testing.TB
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *writer) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
