// Package logadapt adapts a *slog.Logger to the loggers that Exchange's
// cluster libraries want: hclog.Logger for hashicorp/raft (and its network
// transport and snapshot store), and a *log.Logger for hashicorp/memberlist
// that maps its "[LEVEL] " line prefixes to slog levels (StdLog).
//
// The adapter is quiet by default: it drops records below its minimum level
// (Warn in the cluster's default configuration), because raft logs every
// election, snapshot and connection at Info.
package logadapt

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// HCLog returns an hclog.Logger that writes to l, named name (recorded as the
// "logger" attribute), dropping records below minLevel. A nil l discards
// everything.
func HCLog(l *slog.Logger, name string, minLevel slog.Level) hclog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	lv := new(atomic.Int64)
	lv.Store(int64(minLevel))
	h := &hcl{base: l, name: name, min: lv, demote: new(atomic.Pointer[func(string) bool])}
	h.l = h.build()
	return h
}

// hcl implements hclog.Logger over slog. Loggers derived with With and Named
// share the level of their parent, as hclog's own loggers do.
type hcl struct {
	base    *slog.Logger                           // the logger handed to HCLog
	name    string                                 // hclog name, "" for none
	implied []any                                  // args added by With
	min     *atomic.Int64                          // minimum slog.Level; shared with derived loggers
	demote  *atomic.Pointer[func(msg string) bool] // see Demote; shared with derived loggers
	l       *slog.Logger                           // base with name and implied args applied
}

var _ hclog.Logger = (*hcl)(nil)

func (h *hcl) build() *slog.Logger {
	l := h.base
	if h.name != "" {
		l = l.With("logger", h.name)
	}
	if len(h.implied) > 0 {
		l = l.With(h.implied...)
	}
	return l
}

func (h *hcl) derive(name string, implied []any) *hcl {
	d := &hcl{base: h.base, name: name, implied: implied, min: h.min, demote: h.demote}
	d.l = d.build()
	return d
}

// toSlog maps hclog levels to slog levels (Trace is below Debug).
func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel, DefaultLevel
		return slog.LevelInfo
	}
}

// toHCLog maps slog levels back to hclog levels.
func toHCLog(level slog.Level) hclog.Level {
	switch {
	case level < slog.LevelDebug:
		return hclog.Trace
	case level < slog.LevelInfo:
		return hclog.Debug
	case level < slog.LevelWarn:
		return hclog.Info
	case level < slog.LevelError:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hcl) enabled(level slog.Level) bool {
	return level >= slog.Level(h.min.Load()) && h.l.Enabled(context.Background(), level)
}

// Log implements hclog.Logger.
func (h *hcl) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	sl := toSlog(level)
	if sl == slog.LevelWarn {
		if fn := h.demote.Load(); fn != nil && (*fn)(msg) {
			sl = slog.LevelInfo
		}
	}
	if !h.enabled(sl) {
		return
	}
	h.l.Log(context.Background(), sl, msg, render(args)...)
}

// render formats the hclog.Format values (hclog.Fmt) among args, which slog
// would print as a raw slice.
func render(args []any) []any {
	var out []any
	for i, a := range args {
		f, ok := a.(hclog.Format)
		if !ok {
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = fmt.Sprint(f...)
		if len(f) > 0 {
			if format, ok := f[0].(string); ok {
				out[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	if out == nil {
		return args
	}
	return out
}

// Trace implements hclog.Logger.
func (h *hcl) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (h *hcl) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (h *hcl) Info(msg string, args ...any) { h.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (h *hcl) Warn(msg string, args ...any) { h.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (h *hcl) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

// IsTrace implements hclog.Logger.
func (h *hcl) IsTrace() bool { return h.enabled(toSlog(hclog.Trace)) }

// IsDebug implements hclog.Logger.
func (h *hcl) IsDebug() bool { return h.enabled(toSlog(hclog.Debug)) }

// IsInfo implements hclog.Logger.
func (h *hcl) IsInfo() bool { return h.enabled(toSlog(hclog.Info)) }

// IsWarn implements hclog.Logger.
func (h *hcl) IsWarn() bool { return h.enabled(toSlog(hclog.Warn)) }

// IsError implements hclog.Logger.
func (h *hcl) IsError() bool { return h.enabled(toSlog(hclog.Error)) }

// ImpliedArgs implements hclog.Logger.
func (h *hcl) ImpliedArgs() []any { return h.implied }

// With implements hclog.Logger.
func (h *hcl) With(args ...any) hclog.Logger {
	implied := append(append([]any(nil), h.implied...), args...)
	return h.derive(h.name, implied)
}

// Name implements hclog.Logger.
func (h *hcl) Name() string { return h.name }

// Named implements hclog.Logger: the new name is appended to the current one
// with a dot, as hclog does.
func (h *hcl) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.derive(name, h.implied)
}

// ResetNamed implements hclog.Logger.
func (h *hcl) ResetNamed(name string) hclog.Logger { return h.derive(name, h.implied) }

// SetLevel implements hclog.Logger; it changes the level of every logger
// derived from the same HCLog call.
func (h *hcl) SetLevel(level hclog.Level) {
	if level == hclog.Off {
		h.min.Store(int64(slog.LevelError + 100))
		return
	}
	h.min.Store(int64(toSlog(level)))
}

// GetLevel implements hclog.Logger.
func (h *hcl) GetLevel() hclog.Level { return toHCLog(slog.Level(h.min.Load())) }

// StandardLogger implements hclog.Logger. Lines are logged at opts.ForceLevel
// (Info when unset).
func (h *hcl) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger.
func (h *hcl) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return writer{h: h, level: level}
}

// writer logs each Write as one record, without its trailing newline.
type writer struct {
	h     *hcl
	level hclog.Level
}

func (w writer) Write(p []byte) (int, error) {
	msg := string(p)
	for len(msg) > 0 && (msg[len(msg)-1] == '\n' || msg[len(msg)-1] == '\r') {
		msg = msg[:len(msg)-1]
	}
	w.h.Log(w.level, msg)
	return len(p), nil
}

// Demote makes l, an hclog.Logger from HCLog, and every logger derived from
// it log a warning at Info instead when fn reports true for its message (a
// lone node's "starting election", say, which is no cause for alarm). fn is
// called from the libraries' goroutines and must not block; nil removes it.
// Loggers not from HCLog are left alone.
func Demote(l hclog.Logger, fn func(msg string) bool) {
	h, ok := l.(*hcl)
	if !ok {
		return
	}
	if fn == nil {
		h.demote.Store(nil)
		return
	}
	h.demote.Store(&fn)
}
