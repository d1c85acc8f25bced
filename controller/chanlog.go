package controller

import (
	"context"
	"log/slog"
)

// channelLogger returns the logger of a channel: base with the channel's and
// its target's ids on every record, as base.With("channel", channelID,
// "target", targetID) would give, but without asking base's handler for
// them (WithAttrs) until a record is handled. A text or JSON handler formats
// such attributes ahead into a handler of its own, about 0.2 KiB that every
// idle channel would keep for the few lines it ever logs; this handler holds
// the two ids only. With the discard handler there is nothing to add.
func channelLogger(base *slog.Logger, channelID, targetID string) *slog.Logger {
	h := base.Handler()
	if h == slog.DiscardHandler {
		return base
	}
	return slog.New(&channelHandler{h: h, channel: channelID, target: targetID})
}

// channelHandler adds a channel's ids to the records of h (channelLogger).
type channelHandler struct {
	h               slog.Handler
	channel, target string
}

func (h *channelHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.h.Enabled(ctx, level)
}

func (h *channelHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.with().Handle(ctx, r)
}

func (h *channelHandler) WithAttrs(attrs []slog.Attr) slog.Handler { return h.with().WithAttrs(attrs) }

func (h *channelHandler) WithGroup(name string) slog.Handler { return h.with().WithGroup(name) }

// with is h's handler with the ids added, as Logger.With adds them.
func (h *channelHandler) with() slog.Handler {
	return h.h.WithAttrs([]slog.Attr{slog.String("channel", h.channel), slog.String("target", h.target)})
}
