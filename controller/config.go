package controller

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// Defaults of Config. See ARCHITECTURE §6 and the reference's §5.3.
const (
	DefaultHelloTimeout      = 10 * time.Second
	DefaultHealthInterval    = 30 * time.Second
	DefaultHealthTimeout     = 10 * time.Second
	DefaultHealthConcurrency = 64
	// DefaultPrimaryConcurrency bounds the PRIMARY notices in flight: a
	// notice is a small command awaiting a small reply, so many travel at
	// once (pipelined over each connection by gRPC's writer) and a mass start
	// of 100,000 connectors learns its primaries as fast as it registers.
	DefaultPrimaryConcurrency = 1024
	DefaultGoodByeTimeout     = 5 * time.Second
	DefaultShutdownTimeout    = 10 * time.Second
	DefaultReconcileInterval  = time.Minute
	DefaultFailedHelloRate    = 1.0 // per second and source
	DefaultFailedHelloBurst   = 10
	DefaultIsolationTimeout   = 10 * time.Second
	DefaultRebalanceDelay     = 10 * time.Second
	// DefaultMaxChannels bounds the channels one node holds: ARCHITECTURE's
	// target of 100,000 connectors per node.
	DefaultMaxChannels = 100_000
	// DefaultMaxChannelsPerTarget bounds the channels of one target across
	// the cluster: a target is a handful of redundant connectors, not a
	// fleet; a runaway reconnect loop (anonymous connectors take nothing
	// over) must not grow the registry without end.
	DefaultMaxChannelsPerTarget = 1_000
)

// Config configures a Controller. The zero value of every field means its
// default; DefaultConfig spells them out.
type Config struct {
	// NodeID names this node in the replicated state. It must be stable
	// across restarts of the same node: on start the controller removes the
	// channels the state still records for it (they died with the previous
	// process). Default: the host name plus a short random suffix, which
	// suits a single node with an in-memory store only.
	NodeID string
	// HelloTimeout bounds the handshake: a connection that has not completed
	// its HELLO in time is closed. Default 10 s. Over gRPC the transport
	// closes a stream that has sent nothing at all sooner (grpcchannel's
	// ServerLimits.HandshakeTimeout, 5 s by default).
	HelloTimeout time.Duration
	// HealthInterval is the period of the health loop (HEALTH_CHECK to every
	// local channel). It is also announced to connectors in the HELLO reply.
	// Default 30 s.
	HealthInterval time.Duration
	// HealthTimeout bounds each HEALTH_CHECK (and each PRIMARY notification).
	// Default 10 s.
	HealthTimeout time.Duration
	// HealthConcurrency bounds the HEALTH_CHECKs in flight in one round and
	// the GOOD_BYEs sent at once by Close. Default 64.
	HealthConcurrency int
	// PrimaryConcurrency bounds the PRIMARY notifications in flight, each
	// bounded by HealthTimeout. Default 1,024.
	PrimaryConcurrency int
	// GoodByeTimeout bounds each GOOD_BYE sent before closing a channel (on
	// eviction and on Close). Default 5 s.
	GoodByeTimeout time.Duration
	// IsolationTimeout is how long this node may go without hearing from the
	// cluster's leader before it sends its connectors away (GOOD_BYE with
	// reconnect, new connections refused retryably) so that they move to
	// the healthy side of a partition. Default 10 s; negative never does.
	IsolationTimeout time.Duration
	// MaxChannels bounds the live channels this node holds; beyond it a new
	// connection is refused before its HELLO, retryably (the connector
	// tries its next endpoint). Default 100,000; negative: no bound.
	MaxChannels int
	// MaxChannelsPerTarget bounds the channels one target has in the
	// cluster; beyond it a HELLO is refused (ERROR, code 429). Channels of
	// the same connector id, which a new one takes over, do not count.
	// Default 1,000; negative: no bound.
	MaxChannelsPerTarget int
	// RebalanceDelay is how long the membership must stay grown after a node
	// joins before this node moves its excess channels there (debounce);
	// see the package documentation of rebalancing. Default 10 s; negative
	// never rebalances.
	RebalanceDelay time.Duration
	// ShutdownTimeout bounds Close as a whole, however many channels it has
	// to say GOOD_BYE to and however many connectors ignore it: the
	// GOOD_BYEs (still HealthConcurrency at a time, each bounded by
	// GoodByeTimeout) share one deadline, three quarters of ShutdownTimeout
	// after Close starts; channels not yet told by then are closed without a
	// GOOD_BYE. The final unregistration gets what remains of
	// ShutdownTimeout (at least a quarter of it). Default 10 s.
	ShutdownTimeout time.Duration
	// ReconcileInterval is how often the primary notifier re-checks every
	// local channel against the state even when nothing changed: a safety net
	// under the event-driven path, which alone tells every channel what it
	// must know (failed notices are retried with backoff). Default 1 min
	// (decision 0038).
	ReconcileInterval time.Duration
	// FailedHelloRate and FailedHelloBurst limit the failed HELLOs (refused
	// as unauthenticated or as breaking the protocol) per source: the
	// client's IP address, or its /64 for IPv6 (channel.PeerInfo.Source).
	// Each failure takes a token from the source's bucket, which holds
	// FailedHelloBurst tokens and refills at FailedHelloRate per second.
	// While it is empty, every new connection from that source is refused at
	// once, before its HELLO is read and without running the Authenticator,
	// with an error wrapping channel.ErrLimitExceeded (RESOURCE_EXHAUSTED
	// over gRPC, which connectors retry with backoff); such refusals are
	// counted as "rate_limited" and logged once per 10 s. Successful HELLOs
	// take nothing. Defaults 1 per second and 10; a negative
	// FailedHelloBurst turns the limit off.
	FailedHelloRate  float64
	FailedHelloBurst int
	// Channel configures every channel. Its Observer is replaced by Metrics
	// when Metrics is set; its Logger defaults to Logger; its Coalesce is set
	// per channel, on when the connector's HELLO lists the "batch"
	// capability.
	Channel channel.Config
	// Authenticator decides on every HELLO. Nil accepts every HELLO: the
	// application should warn about that, in its own terms (exchange
	// controller names the flags that would set one); New logs it at Debug
	// only, so that an operator does not see the warning twice.
	Authenticator Authenticator
	// Handler answers the commands connectors send to the controller. Nil
	// answers every such command UNKNOWN.
	Handler command.Handler
	// OnEvent, if set, is called with every registry and primary change of
	// the replicated state (on every node, whichever node caused it), in
	// order, from one goroutine. It must not block for long and must not call
	// Close.
	OnEvent func(Event)
	// ClusterInfo, if set, describes the cluster for Cluster (the raft-backed
	// store knows its members and leader). Nil: this node alone, leading.
	ClusterInfo func() ClusterInfo
	// Metrics, if set, receives the controller's measurements.
	Metrics Metrics
	// Logger receives the controller's logs. Default slog.Default().
	Logger *slog.Logger
}

// Metrics receives the controller's measurements; package metrics implements
// it. Every method must be safe for concurrent use, fast and non-blocking.
type Metrics interface {
	// Observer is passed to every channel as its Config.Observer.
	channel.Observer
	// HelloRejected counts a refused handshake. reason is "unauthenticated",
	// "protocol", "timeout", "limit" (MaxChannelsPerTarget) or "rate_limited" (too many failed HELLOs from
	// the source: refused before reading the HELLO).
	HelloRejected(reason string)
	// HealthCheckFailed counts a channel evicted by the health loop. reason is
	// "unhealthy", "timeout" or "error".
	HealthCheckFailed(reason string)
	// HealthSweep observes how long one round of the health loop took:
	// every registered local channel checked, HealthConcurrency at a time.
	HealthSweep(d time.Duration)
	// PrimaryNoticesPending reports how many PRIMARY notifications are
	// pending: in flight, awaiting a retry, or for channels marked for a
	// comparison the notifier has not made yet (held back by
	// PrimaryConcurrency). It is called after every wake of the notifier.
	PrimaryNoticesPending(n int)
}

// DefaultConfig returns the defaults spelled out (NodeID is still empty: New
// generates one).
func DefaultConfig() Config {
	return Config{
		HelloTimeout:         DefaultHelloTimeout,
		HealthInterval:       DefaultHealthInterval,
		HealthTimeout:        DefaultHealthTimeout,
		HealthConcurrency:    DefaultHealthConcurrency,
		PrimaryConcurrency:   DefaultPrimaryConcurrency,
		GoodByeTimeout:       DefaultGoodByeTimeout,
		ShutdownTimeout:      DefaultShutdownTimeout,
		ReconcileInterval:    DefaultReconcileInterval,
		IsolationTimeout:     DefaultIsolationTimeout,
		RebalanceDelay:       DefaultRebalanceDelay,
		MaxChannels:          DefaultMaxChannels,
		MaxChannelsPerTarget: DefaultMaxChannelsPerTarget,
		FailedHelloRate:      DefaultFailedHelloRate,
		FailedHelloBurst:     DefaultFailedHelloBurst,
	}
}

// Validate reports negative durations and bounds (FailedHelloBurst may be
// negative: no limit).
func (c Config) Validate() error {
	if c.HelloTimeout < 0 || c.HealthInterval < 0 || c.HealthTimeout < 0 || c.HealthConcurrency < 0 ||
		c.PrimaryConcurrency < 0 ||
		c.GoodByeTimeout < 0 || c.ShutdownTimeout < 0 || c.ReconcileInterval < 0 || c.FailedHelloRate < 0 {
		return errors.New("controller: config values must not be negative")
	}
	if err := c.Channel.Validate(); err != nil {
		return err
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = d.HelloTimeout
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = d.HealthInterval
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = d.HealthTimeout
	}
	if c.HealthConcurrency == 0 {
		c.HealthConcurrency = d.HealthConcurrency
	}
	if c.PrimaryConcurrency == 0 {
		c.PrimaryConcurrency = d.PrimaryConcurrency
	}
	if c.GoodByeTimeout == 0 {
		c.GoodByeTimeout = d.GoodByeTimeout
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = d.MaxChannels
	}
	if c.MaxChannelsPerTarget == 0 {
		c.MaxChannelsPerTarget = d.MaxChannelsPerTarget
	}
	if c.RebalanceDelay == 0 {
		c.RebalanceDelay = d.RebalanceDelay
	}
	if c.IsolationTimeout == 0 {
		c.IsolationTimeout = d.IsolationTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = d.ReconcileInterval
	}
	if c.FailedHelloRate == 0 {
		c.FailedHelloRate = d.FailedHelloRate
	}
	if c.FailedHelloBurst == 0 {
		c.FailedHelloBurst = d.FailedHelloBurst
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics != nil {
		c.Channel.Observer = c.Metrics
	}
	if c.Channel.Logger == nil {
		c.Channel.Logger = c.Logger
	}
	return c
}

// defaultNodeID returns the host name with a short random suffix.
func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "exchange"
	}
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return host + "-" + hex.EncodeToString(b[:])
}
