package cluster_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

// levels is a slog.Handler recording the level of each message.
type levels struct {
	mu   sync.Mutex
	msgs map[string][]slog.Level
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *levels) WithGroup(string) slog.Handler            { return l }

func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs[r.Message] = append(l.msgs[r.Message], r.Level)
	l.mu.Unlock()
	return nil
}

func (l *levels) of(msg string) []slog.Level {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]slog.Level(nil), l.msgs[msg]...)
}

// A lone node elects itself on every start: raft's "starting election"
// warning is logged at Info then, not Warn.
func TestLoneNodeElectionIsNotAWarning(t *testing.T) {
	rec := &levels{msgs: map[string][]slog.Level{}}
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(rec)
	n := open(t, cfg)
	closeNode(t, n)

	got := rec.of("heartbeat timeout reached, starting election")
	if len(got) == 0 {
		t.Fatal("raft never logged its election (did the message change?)")
	}
	for _, lv := range got {
		if lv != slog.LevelInfo {
			t.Errorf("election logged at %s, want INFO", lv)
		}
	}
}
