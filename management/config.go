package management

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of Config.
const (
	DefaultAddr              = ":7480"
	DefaultBodyLimit         = 1 << 20
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 90 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultCommandTimeout    = 30 * time.Second
	DefaultMaxCommandTimeout = 60 * time.Second
	DefaultMaxSnapshotBytes  = 256 << 20
)

// Config configures a Server. The zero value of every field means its
// default; DefaultConfig spells them out.
type Config struct {
	// Addr is the address Listen binds, host:port. Default ":7480". With no
	// Tokens, any host other than a loopback one is replaced by 127.0.0.1.
	Addr string
	// Tokens are the accepted bearer tokens. Empty: no authentication, and the
	// server binds to loopback only.
	Tokens []string
	// BodyLimit bounds request bodies, in bytes; larger ones get 413.
	// Default 1 MiB.
	BodyLimit int64
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// http.Server timeouts. Defaults 5 s, 30 s, 90 s, 120 s. WriteTimeout must
	// exceed MaxCommandTimeout.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// ShutdownTimeout bounds the graceful shutdown of Serve: requests still
	// running after it are cut. Default 10 s.
	ShutdownTimeout time.Duration
	// CommandTimeout is the reply timeout of POST /exchange/targets/:id/commands
	// when the request gives no timeoutMs. Default 30 s.
	CommandTimeout time.Duration
	// MaxCommandTimeout is the largest timeoutMs accepted. Default 60 s.
	MaxCommandTimeout time.Duration
	// Logger receives start-up warnings, errors, and one debug line per
	// request. Default: discard.
	Logger *slog.Logger
	// Ready reports readiness for GET /readyz: nil means ready. Nil Ready
	// means always ready.
	Ready func() error
	// Snapshots serves GET and POST /exchange/cluster/snapshot (backup and
	// restore). Nil: those routes answer 501.
	Snapshots Snapshots
	// MaxSnapshotBytes bounds the body of POST /exchange/cluster/snapshot
	// (instead of BodyLimit); larger ones get 413. Default 256 MiB.
	MaxSnapshotBytes int64
	// Events feeds GET /exchange/events (server-sent events); the
	// controller's replicated state (state.Store) is one. Nil: that route
	// answers 501.
	Events EventSource
	// MaxEventStreams bounds the event streams open at once; more get 429.
	// Default 64.
	MaxEventStreams int
	// EventBuffer bounds the events queued for one stream; the events that
	// come while it is full are dropped, and the client is told how many
	// with a "dropped" event. Default 1024.
	EventBuffer int
	// EventKeepalive is how often an idle stream gets a comment line, so
	// that proxies and clients see it alive. Default 15 s.
	EventKeepalive time.Duration
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{
		Addr:              DefaultAddr,
		BodyLimit:         DefaultBodyLimit,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		ShutdownTimeout:   DefaultShutdownTimeout,
		CommandTimeout:    DefaultCommandTimeout,
		MaxCommandTimeout: DefaultMaxCommandTimeout,
		MaxSnapshotBytes:  DefaultMaxSnapshotBytes,
		MaxEventStreams:   DefaultMaxEventStreams,
		EventBuffer:       DefaultEventBuffer,
		EventKeepalive:    DefaultEventKeepalive,
	}
}

// Validate reports negative values, empty tokens, and a CommandTimeout or
// WriteTimeout that cannot fit the command timeouts (after defaults).
func (c Config) Validate() error {
	if c.BodyLimit < 0 || c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 ||
		c.IdleTimeout < 0 || c.ShutdownTimeout < 0 || c.CommandTimeout < 0 || c.MaxCommandTimeout < 0 || c.MaxSnapshotBytes < 0 ||
		c.MaxEventStreams < 0 || c.EventBuffer < 0 || c.EventKeepalive < 0 {
		return errors.New("management: config values must not be negative")
	}
	for i, t := range c.Tokens {
		if t == "" {
			return fmt.Errorf("management: token %d is empty", i)
		}
	}
	c = c.withDefaults()
	if c.CommandTimeout > c.MaxCommandTimeout {
		return fmt.Errorf("management: CommandTimeout %s exceeds MaxCommandTimeout %s", c.CommandTimeout, c.MaxCommandTimeout)
	}
	if c.WriteTimeout <= c.MaxCommandTimeout {
		return fmt.Errorf("management: WriteTimeout %s must exceed MaxCommandTimeout %s", c.WriteTimeout, c.MaxCommandTimeout)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.BodyLimit == 0 {
		c.BodyLimit = d.BodyLimit
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = d.CommandTimeout
	}
	if c.MaxCommandTimeout == 0 {
		c.MaxCommandTimeout = d.MaxCommandTimeout
	}
	if c.MaxSnapshotBytes == 0 {
		c.MaxSnapshotBytes = d.MaxSnapshotBytes
	}
	if c.MaxEventStreams == 0 {
		c.MaxEventStreams = d.MaxEventStreams
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = d.EventBuffer
	}
	if c.EventKeepalive == 0 {
		c.EventKeepalive = d.EventKeepalive
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
