package connector

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/backoff"
)

// Defaults of Config (ARCHITECTURE §6).
const (
	DefaultHelloTimeout     = 10 * time.Second
	DefaultBackoffBase      = 500 * time.Millisecond
	DefaultBackoffMax       = 10 * time.Second
	DefaultStableAfter      = 30 * time.Second
	DefaultDedupWindow      = 1024
	DefaultMissedHeartbeats = 3
)

// goodByeLinger bounds how long the connector waits, after answering a
// GOOD_BYE, for the controller to close the channel before closing it itself.
// Waiting lets the SUCCEEDED reply reach the controller.
const goodByeLinger = 2 * time.Second

// Config configures a Connector. The zero value of every field but TargetID
// means its default; DefaultConfig spells them out.
type Config struct {
	// ConnectorID identifies this connector to the controller. Default: a
	// generated id, stable for the Connector's life (across reconnections).
	// A new channel with the same ConnectorID and target takes over the old
	// one at the controller, which then tells the old one
	// GOOD_BYE{reconnect:false}: give each running instance its own id. It,
	// TargetID and Metadata must keep to the identity limits of package
	// command (command.CheckIdentity: ids of at most 128 bytes, …).
	ConnectorID string
	// TargetID is the target the connector asks to join. Required. The
	// controller may rewrite it; the Connector adopts the target of the HELLO
	// reply (see Connector.TargetID).
	TargetID string
	// Token is sent in HELLO for the controller's Authenticator.
	Token string
	// Metadata is sent in HELLO (labels, version, zone…).
	Metadata map[string]string

	// HelloTimeout bounds one connection attempt: the dial and the HELLO
	// handshake together. Default 10 s.
	HelloTimeout time.Duration
	// BackoffBase, BackoffMax and StableAfter shape the reconnect backoff:
	// after the n-th consecutive failure (n from 0) the connector waits a
	// duration drawn uniformly from [0, min(BackoffMax, BackoffBase·2^n)).
	// The failure count resets only once a connection has stayed up for
	// StableAfter. Defaults 500 ms, 10 s, 30 s: after an outage of any length
	// every connector tries again within BackoffMax of the controller's
	// return, a fleet of N at about N/BackoffMax a second (decision 0028).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	StableAfter time.Duration

	// Health answers HEALTH_CHECK when the Mux has no HEALTH_CHECK handler of
	// its own: it reports the connector's business health. It runs on a
	// handler goroutine with the command's deadline and must return when ctx
	// is done. Nil means always healthy.
	Health func(ctx context.Context) (healthy bool, detail string)
	// OnPrimary is called on every change of the primary role or its epoch,
	// including the drop to false when a channel closes. Calls are made in
	// order, one at a time, from a goroutine owned by the Connector, never
	// while it holds a lock; the callback may call the Connector's getters and
	// Send, but must not call Close (use Run's context instead).
	OnPrimary func(primary bool, epoch uint64)
	// OnState is called on every connection-state change, in order, from the
	// same goroutine and with the same rules as OnPrimary.
	OnState func(StateChange)

	// DedupWindow is how many recently completed command ids (and their
	// replies) are remembered for effectively-once handling; see the package
	// documentation. Default 1024; a negative value disables deduplication.
	DedupWindow int
	// MissedHeartbeats: when the HELLO reply announces a heartbeat (the
	// controller's health-check interval), a channel on which no command has
	// arrived for MissedHeartbeats heartbeats is taken for half-open, closed
	// and replaced. Default 3; a negative value disables the watchdog.
	MissedHeartbeats int

	// Channel configures each channel (in-flight bounds, default timeout…).
	// Its Coalesce is set per channel, on when the controller's HELLO reply
	// lists the "batch" capability.
	Channel channel.Config
	// Logger receives the connector's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults spelled out. TargetID is left empty: it
// must be set.
func DefaultConfig() Config {
	return Config{
		HelloTimeout:     DefaultHelloTimeout,
		BackoffBase:      DefaultBackoffBase,
		BackoffMax:       DefaultBackoffMax,
		StableAfter:      DefaultStableAfter,
		DedupWindow:      DefaultDedupWindow,
		MissedHeartbeats: DefaultMissedHeartbeats,
		Channel:          channel.DefaultConfig(),
	}
}

// Validate reports a missing TargetID, negative durations, a BackoffMax below
// BackoffBase (after defaults) and an invalid Channel config. The errors wrap
// ErrInvalidConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.TargetID == "":
		return fmt.Errorf("%w: TargetID is required", ErrInvalidConfig)
	case c.HelloTimeout < 0 || c.StableAfter < 0:
		return fmt.Errorf("%w: HelloTimeout and StableAfter must not be negative", ErrInvalidConfig)
	}
	// The controller refuses a HELLO over the identity limits: say so here,
	// before dialing.
	if err := command.CheckIdentity(c.ConnectorID, c.TargetID, c.Metadata); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := c.policy().Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := c.Channel.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

func (c Config) policy() backoff.Policy {
	return backoff.Policy{Base: c.BackoffBase, Max: c.BackoffMax}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HelloTimeout == 0 {
		c.HelloTimeout = d.HelloTimeout
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = d.BackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.StableAfter == 0 {
		c.StableAfter = d.StableAfter
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = d.DedupWindow
	}
	if c.MissedHeartbeats == 0 {
		c.MissedHeartbeats = d.MissedHeartbeats
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Channel.Logger == nil {
		c.Channel.Logger = c.Logger
	}
	return c
}
