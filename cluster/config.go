package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/exchangekit/exchange/cluster/membership"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Config configures a Node. Start from DefaultConfig; the zero Config is not
// valid.
type Config struct {
	// NodeID is this node's stable identity: its raft server id, and the
	// NodeID recorded on the channels it holds. Empty means "the id stored in
	// DataDir", or on first start the host name (then stored). A DataDir
	// stays bound to the id it was first opened with (ErrNodeIDMismatch).
	NodeID string
	// DataDir holds the raft log, the snapshots and the node id. Created if
	// missing. Default "./exchange-data".
	DataDir string

	// RaftAddr is the bind address of the raft TCP transport. Default
	// ":7401". Port 0 picks a free port (tests); it then needs a host that
	// can be advertised, e.g. "127.0.0.1:0".
	RaftAddr string
	// RaftAdvertiseAddr is the address other nodes reach this node's raft
	// transport at. Empty: RaftAddr when its host is specific, else this
	// host's first private IPv4 address (first non-loopback address, else
	// 127.0.0.1 with a warning) with RaftAddr's port.
	RaftAdvertiseAddr string

	// HeartbeatTimeout is how long a follower waits without hearing from a
	// leader before it starts an election. A lone node starts (and restarts)
	// as a follower, so it is also the single-node start-up delay: Open takes
	// between 1 and 2 HeartbeatTimeouts plus two fsyncs. Default 150 ms.
	HeartbeatTimeout time.Duration
	// ElectionTimeout bounds a candidate's election. Default 500 ms. Must
	// not be below HeartbeatTimeout.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without hearing
	// from a quorum. Default 150 ms; must not exceed HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// MaxAppendEntries bounds how many pending Applies raft groups into one
	// disk write (and, later, one replication RPC). Default 256, max 1024.
	MaxAppendEntries int

	// SnapshotInterval is how often raft checks whether to snapshot;
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger one. Defaults 120 s and 8192.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	// TrailingLogs is how many log entries are kept after a snapshot (so a
	// slightly lagging follower catches up from the log). Default 10240.
	TrailingLogs uint64
	// RetainSnapshots is how many snapshots are kept on disk. Default 2.
	RetainSnapshots int

	// ApplyTimeout bounds one Apply when its ctx has no earlier deadline.
	// Default 10 s.
	ApplyTimeout time.Duration

	// Logger receives the node's logs; nil discards them. RaftLogLevel is
	// the minimum level of the raft library's own logs (default Warn: raft
	// logs every election and snapshot at Info).
	Logger       *slog.Logger
	RaftLogLevel slog.Level

	// Cluster makes the node one of several; its zero value is a single
	// node.
	Cluster ClusterConfig

	// WrapRaftTransport, for tests and fault injection only, wraps the raft
	// TCP transport before raft gets it (clustertest cuts raft's RPCs with
	// it). The Node keeps the unwrapped transport for its address and to
	// close its connections. The wrapper must forward every call it does not
	// fail, and close the wrapped transport (and whatever it started) when
	// raft closes it: raft.WithClose. Nil: raft uses the transport itself.
	WrapRaftTransport func(raft.Transport) raft.Transport
}

// DefaultConfig returns the production defaults: data in ./exchange-data,
// raft on :7401, timings tuned for fast failover (ARCHITECTURE §10).
func DefaultConfig() Config {
	return Config{
		DataDir:            "./exchange-data",
		RaftAddr:           ":7401",
		HeartbeatTimeout:   150 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		MaxAppendEntries:   256,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		RetainSnapshots:    2,
		ApplyTimeout:       10 * time.Second,
		RaftLogLevel:       slog.LevelWarn,
	}
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.DataDir == "" {
		return bad("DataDir is empty")
	}
	host, port, err := net.SplitHostPort(c.RaftAddr)
	if err != nil {
		return bad("RaftAddr %q: %v", c.RaftAddr, err)
	}
	if c.RaftAdvertiseAddr != "" {
		if _, err := resolveAdvertise(c.RaftAdvertiseAddr); err != nil {
			return bad("RaftAdvertiseAddr: %v", err)
		}
	} else if port == "0" && unspecifiedHost(host) {
		return bad("RaftAddr %q: port 0 needs a specific host or a RaftAdvertiseAddr", c.RaftAddr)
	}
	switch {
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return bad("HeartbeatTimeout %v is below 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("ElectionTimeout %v is below HeartbeatTimeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout < 5*time.Millisecond || c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout %v must be between 5ms and HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024:
		return bad("MaxAppendEntries %d must be between 1 and 1024", c.MaxAppendEntries)
	case c.SnapshotInterval < 5*time.Millisecond:
		return bad("SnapshotInterval %v is below 5ms", c.SnapshotInterval)
	case c.SnapshotThreshold < 1:
		return bad("SnapshotThreshold must be positive")
	case c.RetainSnapshots < 1:
		return bad("RetainSnapshots %d must be at least 1", c.RetainSnapshots)
	case c.ApplyTimeout <= 0:
		return bad("ApplyTimeout %v must be positive", c.ApplyTimeout)
	}
	return c.Cluster.validate()
}

func unspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// resolveAdvertise parses an advertise address: it must be a TCP address with
// a specific host and a non-zero port.
func resolveAdvertise(addr string) (*net.TCPAddr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("advertise address %q: %w", addr, err)
	}
	if ta.IP == nil || ta.IP.IsUnspecified() || ta.Port == 0 {
		return nil, fmt.Errorf("advertise address %q: needs a specific host and port", addr)
	}
	return ta, nil
}

// advertiseFor returns the address to advertise for the raft transport, or nil
// when the listener's own address will do (a specific bind host).
func (c Config) advertiseFor(log *slog.Logger) (*net.TCPAddr, error) {
	if c.RaftAdvertiseAddr != "" {
		return resolveAdvertise(c.RaftAdvertiseAddr)
	}
	host, port, err := net.SplitHostPort(c.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("raft address %q: %w", c.RaftAddr, err)
	}
	if !unspecifiedHost(host) {
		return nil, nil
	}
	ip := hostIP()
	if ip == nil {
		ip = net.IPv4(127, 0, 0, 1)
		log.Warn("cluster: no non-loopback address found; advertising raft on loopback (fine for a single node only)",
			"raftAddr", c.RaftAddr)
	}
	return resolveAdvertise(net.JoinHostPort(ip.String(), port))
}

// HostIP returns this host's first private IPv4 address (else its first
// non-loopback unicast address, else 127.0.0.1), as the address to
// advertise when a node binds to all interfaces.
func HostIP() string {
	if ip := hostIP(); ip != nil {
		return ip.String()
	}
	return "127.0.0.1"
}

// hostIP returns this host's first private IPv4 address, else its first
// non-loopback unicast address, else nil.
func hostIP() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var fallback net.IP
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil && n.IP.IsPrivate() {
			return n.IP
		}
		if fallback == nil {
			fallback = n.IP
		}
	}
	return fallback
}

// ClusterConfig is what a Node needs beyond raft to be one node of several:
// membership (gossip), node-to-node links, and how the cluster forms.
type ClusterConfig struct {
	// GossipAddr is the gossip bind address (memberlist, UDP and TCP),
	// e.g. ":7402". Empty: no gossip, a single node that never forms a
	// cluster (Join and BootstrapExpect > 1 are then invalid).
	GossipAddr string
	// GossipAdvertiseAddr is the ip:port others reach the gossip at; empty:
	// memberlist's choice.
	GossipAdvertiseAddr string
	// Join lists gossip addresses of existing members to join (retried
	// with backoff until one answers).
	Join []string
	// BootstrapExpect is how many nodes form the cluster: a node with no
	// raft state waits until it sees that many members, then every one of
	// them bootstraps the same configuration. 1 (the default) bootstraps a
	// lone node at once, unless Join is set: a joining node never
	// bootstraps, the leader adds it.
	BootstrapExpect int
	// GRPCAdvertiseAddr is where other nodes open links to this one: its
	// gRPC address. Required with Links.
	GRPCAdvertiseAddr string
	// Links carries node-to-node links. Nil: no forwarding (single node).
	Links LinkTransport
	// Token authenticates node-to-node links (every node needs the same)
	// and, hashed, encrypts the gossip. Required with GossipAddr.
	Token string
	// DeadNodeGrace is how long the leader waits, after it took office,
	// before removing the channels of a node no member has heard of (a
	// node that died while no leader was watching). Default 15 s.
	DeadNodeGrace time.Duration
	// GossipTimings overrides single knobs of the gossip's failure detection
	// and dissemination: every non-zero field replaces the one of
	// membership.DefaultConfig (200 ms probes, 100 ms probe timeout, 100 ms
	// gossip, RetransmitMult 4: a dead node is detected in about 1.1 s). The
	// zero value keeps those defaults. Shorter probes detect a crash sooner
	// and suspect a paused node (GC, CPU starvation) sooner too
	// (docs/benchmarks.md, "Cluster").
	GossipTimings membership.Timings

	// WrapGossipTransport, for tests and fault injection only, wraps the
	// gossip's network transport: membership.Config.WrapTransport. Nil:
	// memberlist's own.
	WrapGossipTransport func(memberlist.Transport) memberlist.Transport
}

func (c ClusterConfig) clustered() bool { return c.GossipAddr != "" }

func (c ClusterConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.BootstrapExpect < 0:
		return bad("BootstrapExpect %d must not be negative", c.BootstrapExpect)
	case !c.clustered() && (len(c.Join) > 0 || c.BootstrapExpect > 1):
		return bad("Join and BootstrapExpect > 1 need a GossipAddr")
	case c.clustered() && c.Token == "":
		return bad("a cluster needs a Token: it authenticates node-to-node links and encrypts the gossip")
	case c.clustered() && c.Links == nil:
		return bad("a cluster needs Links: commands and applies are forwarded between nodes")
	case c.Links != nil && c.GRPCAdvertiseAddr == "":
		return bad("Links need a GRPCAdvertiseAddr")
	}
	return nil
}
