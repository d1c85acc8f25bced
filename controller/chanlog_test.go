package controller

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
)

// A channel's logger writes what base.With("channel", …, "target", …) writes,
// through every way of using a logger, and keeps base's level.
func TestChannelLoggerMatchesWith(t *testing.T) {
	for _, json := range []bool{false, true} {
		var want, got bytes.Buffer
		newBase := func(w *bytes.Buffer) *slog.Logger {
			opts := &slog.HandlerOptions{Level: slog.LevelWarn}
			if json {
				return slog.New(slog.NewJSONHandler(w, opts))
			}
			return slog.New(slog.NewTextHandler(w, opts))
		}
		use := func(l *slog.Logger) {
			l.Info("not enabled", "k", 1)
			l.Warn("plain", "k", 1)
			l.With("a", "b").Error("with attrs", "k", 2)
			l.WithGroup("g").Warn("in a group", "k", 3)
			l.WithGroup("g").With("a", "b").WithGroup("h").Warn("nested", "k", 4)
			l.LogAttrs(context.Background(), slog.LevelError, "attrs", slog.Int("k", 5))
		}
		use(newBase(&want).With("channel", "c1", "target", "t1"))
		l := channelLogger(newBase(&got), "c1", "t1")
		if l.Enabled(context.Background(), slog.LevelInfo) || !l.Enabled(context.Background(), slog.LevelWarn) {
			t.Errorf("json %v: the channel logger does not keep the base level", json)
		}
		use(l)
		// Each line starts with its own time: compare what follows it.
		if w, g := stripTimes(want.String()), stripTimes(got.String()); w != g {
			t.Errorf("json %v: channel logger wrote\n%s\nwant (as With)\n%s", json, g, w)
		}
		if bytes.Count(got.Bytes(), []byte("c1")) != 5 {
			t.Errorf("json %v: want the channel id on each of 5 lines:\n%s", json, got.String())
		}
	}
}

// stripTimes removes the time field from text or JSON log lines.
func stripTimes(s string) string {
	var out bytes.Buffer
	for _, line := range bytes.Split([]byte(s), []byte("\n")) {
		if i := bytes.Index(line, []byte("level")); i >= 0 {
			line = line[i:]
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.String()
}

func TestChannelLoggerDiscard(t *testing.T) {
	base := slog.New(slog.DiscardHandler)
	if l := channelLogger(base, "c1", "t1"); l != base {
		t.Error("a discarding logger gets a handler of its own; want it as it is")
	}
}
