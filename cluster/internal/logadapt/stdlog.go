package logadapt

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// StdLog returns a *log.Logger (the logger hashicorp/memberlist takes) that
// writes each line to l as one record, named name (the "logger" attribute).
// The level comes from the line's "[LEVEL] " prefix, as memberlist writes
// it ("[DEBUG]", "[INFO]", "[WARN]", "[ERR]" or "[ERROR]"; Info when absent),
// and the prefix is removed. Records below minLevel are dropped. A nil l
// discards everything.
func StdLog(l *slog.Logger, name string, minLevel slog.Level) *log.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	if name != "" {
		l = l.With("logger", name)
	}
	return log.New(stdWriter{l: l, min: minLevel}, "", 0)
}

// stdWriter logs each Write (one log.Logger line) as one record.
type stdWriter struct {
	l   *slog.Logger
	min slog.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	level, msg := stdLevel(msg)
	if level >= w.min && w.l.Enabled(context.Background(), level) {
		w.l.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// stdLevel splits a "[LEVEL] message" line into its slog level and message.
func stdLevel(line string) (slog.Level, string) {
	if !strings.HasPrefix(line, "[") {
		return slog.LevelInfo, line
	}
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return slog.LevelInfo, line
	}
	rest := strings.TrimLeft(line[end+1:], " ")
	switch strings.ToUpper(line[1:end]) {
	case "TRACE":
		return slog.LevelDebug - 4, rest
	case "DEBUG":
		return slog.LevelDebug, rest
	case "INFO":
		return slog.LevelInfo, rest
	case "WARN", "WARNING":
		return slog.LevelWarn, rest
	case "ERR", "ERROR":
		return slog.LevelError, rest
	default:
		return slog.LevelInfo, line
	}
}
