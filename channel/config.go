package channel

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/exchangekit/exchange/command"
)

// Default limits and timings. See Config.
const (
	DefaultMaxInFlight   = 1024
	DefaultMaxHandlers   = 1024
	DefaultTimeout       = 60 * time.Second
	DefaultRetryAfter    = 100 * time.Millisecond
	DefaultMaxFrameBytes = 4 << 20
	DefaultSendQueue     = 256
	DefaultMaxControl    = 16
)

// Config tunes a Channel. The zero value of every field means its default.
type Config struct {
	// MaxInFlight bounds the commands this side may have awaiting replies.
	// Beyond it Send fails at once with a *BusyError. Default 1024.
	MaxInFlight int
	// MaxHandlers bounds the peer's commands handled at once. Beyond it a
	// command is answered at once with a busy reply carrying RetryAfter, which
	// the peer's Send returns as a *BusyError. Default 1024.
	MaxHandlers int
	// MaxControl is the capacity reserved for control commands, the
	// built-in HELLO, GOOD_BYE, HEALTH_CHECK and PRIMARY (IsControl): it
	// bounds both the control commands this side may have awaiting replies
	// and the peer's control commands handled at once, apart from
	// MaxInFlight and MaxHandlers, which bound application commands only. So
	// a channel full of slow application commands still answers a health
	// check. Beyond it, control commands get the same *BusyError as
	// application commands beyond theirs. Default 16.
	MaxControl int
	// DefaultTimeout applies to Send when its context has no deadline.
	// Default 60 s, the reference's reply timeout.
	DefaultTimeout time.Duration
	// RetryAfter is the hint carried by busy errors. Default 100 ms.
	RetryAfter time.Duration
	// SendQueue bounds the frames queued for the writer; beyond it Send,
	// Notify and replies wait for room. The queue grows on demand and is
	// released when it drains: nothing is allocated up front. Default 256.
	SendQueue int
	// Coalesce lets the writer send the frames already queued behind the one
	// it is writing (up to 64 of them, about 64 KiB) in one transport message,
	// when the Conn is a BatchSender; a lone frame still goes out by itself
	// through Conn.Send. No frame waits for others on a timer: before writing
	// a lone frame the writer yields once (runtime.Gosched), so goroutines
	// that are already runnable may queue theirs, as gRPC's own writer does
	// before a small flush. It cuts the
	// per-message costs of a transport when many commands are in flight. Set
	// it only when the peer announced the "batch" capability in HELLO
	// (command.CapabilityBatch); the connector and the controller do that
	// themselves. Default off.
	Coalesce bool
	// Logger receives debug and warning logs. Default: discard.
	Logger *slog.Logger
	// Observer, if set, is told about every command sent and handled; it is
	// how metrics are collected without this package importing a metrics
	// library. Its methods must be fast and must not block.
	Observer Observer
	// InFlightTotal, if set, is kept equal to the sum of InFlight over every
	// Channel made with this Config: each adds to it as its count changes,
	// and a closed Channel's count is back to zero once Close has returned
	// (its calls failed, its handlers ended). A holder of many channels reads
	// their total from it instead of walking them (a metrics scrape at
	// 100,000 channels).
	InFlightTotal *atomic.Int64
}

// Observer receives channel events for metrics. Implementations must be safe
// for concurrent use, fast, and must not block.
type Observer interface {
	// Sent is called when a Send completes: the command, how long it took and
	// the error it returned (nil when a reply arrived).
	Sent(t command.Type, d time.Duration, err error)
	// Handled is called when a handler for a peer's command returns.
	Handled(t command.Type, d time.Duration, status command.Status)
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{
		MaxInFlight:    DefaultMaxInFlight,
		MaxHandlers:    DefaultMaxHandlers,
		MaxControl:     DefaultMaxControl,
		DefaultTimeout: DefaultTimeout,
		RetryAfter:     DefaultRetryAfter,
		SendQueue:      DefaultSendQueue,
	}
}

// Validate reports negative values, naming the first offending field. New
// itself treats them as zero (the default); Validate lets a caller that builds
// a Config from flags or files reject them early.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxInFlight", int64(c.MaxInFlight)},
		{"MaxHandlers", int64(c.MaxHandlers)},
		{"MaxControl", int64(c.MaxControl)},
		{"DefaultTimeout", int64(c.DefaultTimeout)},
		{"RetryAfter", int64(c.RetryAfter)},
		{"SendQueue", int64(c.SendQueue)},
	} {
		if f.v < 0 {
			return fmt.Errorf("channel: config: %s must not be negative (got %d)", f.name, f.v)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.MaxHandlers <= 0 {
		c.MaxHandlers = d.MaxHandlers
	}
	if c.MaxControl <= 0 {
		c.MaxControl = d.MaxControl
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = d.DefaultTimeout
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = d.RetryAfter
	}
	if c.SendQueue <= 0 {
		c.SendQueue = d.SendQueue
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
